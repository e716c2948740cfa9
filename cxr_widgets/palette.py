"""The colour of finding N, the same in images, tables and the widget."""

from __future__ import annotations

# Okabe-Ito-like qualitative colours, readable on a grayscale radiograph.
FINDING_COLORS: tuple[str, ...] = (
    "#E69F00",
    "#56B4E9",
    "#009E73",
    "#F0E442",
    "#D55E00",
    "#CC79A7",
    "#0072B2",
    "#FF6F91",
    "#9BE564",
    "#B07CFF",
)

UNGROUNDED_COLOR = "#9E9E9E"


def finding_color(index: int) -> str:
    """Hex colour of the finding at zero-based ``index``."""
    return FINDING_COLORS[index % len(FINDING_COLORS)]


#: Text drawn on a colour: black where the colour is light, else white (perceived
#: brightness, ITU-R BT.601 weights). The one contrast rule of images and the widget.
DARK_TEXT, LIGHT_TEXT = "#000000", "#FFFFFF"
_BRIGHTNESS_THRESHOLD = 140


def text_color(fill: str | tuple[int, int, int]) -> str:
    """The label text colour (hex) that reads best on ``fill`` (hex or RGB)."""
    r, g, b = hex_to_rgb(fill) if isinstance(fill, str) else fill
    return DARK_TEXT if 0.299 * r + 0.587 * g + 0.114 * b > _BRIGHTNESS_THRESHOLD else LIGHT_TEXT


def palette_for_frontend() -> dict[str, object]:
    """What a front end needs to colour findings as Python does (no rule restated in JS)."""
    return {
        "findings": list(FINDING_COLORS),
        "labels": [text_color(color) for color in FINDING_COLORS],
        "ungrounded": UNGROUNDED_COLOR,
        "ungrounded_label": text_color(UNGROUNDED_COLOR),
    }


def hex_to_rgb(color: str) -> tuple[int, int, int]:
    """``"#RRGGBB"`` as an RGB tuple."""
    value = color.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)
