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


def hex_to_rgb(color: str) -> tuple[int, int, int]:
    """``"#RRGGBB"`` as an RGB tuple."""
    value = color.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)
