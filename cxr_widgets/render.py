"""Findings drawn on the frontal image: Pillow for files, matplotlib for notebooks.

Colours come from :meth:`Report.color`, so finding N has the same colour in
the picture, the HTML table and the widget. Every picture says which box
frame it uses (center crop, as the official notebooks, or full image, as the
model documentation's table) and carries "DEMO" for canned findings.
"""

from __future__ import annotations

import io
import textwrap
import warnings
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageDraw, ImageFont

from .errors import ImageError
from .palette import hex_to_rgb, text_color
from .report import (
    FRAME_CAPTIONS,
    FRAMES,
    Frame,
    Report,
    center_square,
    same_shape,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes

#: Background of the caption of a picture drawn in the ``full`` frame (a warning).
WARNING_RGB = (255, 193, 7)
#: Caption of a ``full``-frame picture: it says the boxes may be misplaced.
FULL_FRAME_CAPTION = "boxes: full image (documentation formula; may be misplaced, see docs)"
#: Darkening applied outside the central square with ``show_crop``.
CROP_DIM_ALPHA = 120
#: Opacity of the findings that are not highlighted.
FADED_ALPHA = 90


#: PIL modes drawn as they are; others (16-bit, float) go through prepare_image.
_DRAWABLE_MODES = ("1", "L", "LA", "P", "RGB", "RGBA")


def _check_frame(frame: str) -> None:
    if frame not in FRAMES:
        raise ValueError(f"frame must be one of {FRAMES}, got {frame!r}")


def to_pil(image: Any) -> Image.Image:
    """A PIL image from a PIL image, a PreparedImage or any source prepare_image reads."""
    if image is None:
        raise ImageError(
            "no image to draw the findings on: pass the frontal image the report was "
            "made for (a report holds no image)."
        )
    if isinstance(image, Image.Image) and image.mode in _DRAWABLE_MODES:
        return image
    inner = getattr(image, "image", None)
    if isinstance(inner, Image.Image):  # a PreparedImage
        return inner
    from .images import prepare_image

    return prepare_image(image, full_resolution=True).image


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1 or no FreeType
        return ImageFont.load_default()


def line_width(width: int, height: int) -> int:
    """Box line width in pixels for an image of this size."""
    return max(2, round(min(width, height) / 200))


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _label_position(
    box: tuple[float, float, float, float],
    size: tuple[int, int],
    image_size: tuple[int, int],
    taken: list[tuple[int, int, int, int]],
) -> tuple[int, int, int, int]:
    """Where a label goes: above the box's top-left corner, else inside; never on another label."""
    w, h = size
    x = round(box[0])
    y = round(box[1]) - h if box[1] - h >= 0 else round(box[1])
    x = min(max(0, x), max(0, image_size[0] - w))
    rect = (x, y, x + w, y + h)
    for _ in range(50):
        if not any(_overlaps(rect, other) for other in taken):
            break
        x = rect[2] + 2
        if x + w > image_size[0]:  # wrap below the crowded row
            x, y = max(0, round(box[0])), rect[3] + 2
        rect = (x, y, x + w, y + h)
    return rect


def _draw_findings(
    canvas: Image.Image,
    report: Report,
    indices: list[int],
    frame: Frame,
    width: int,
    alpha: int,
    taken: list[tuple[int, int, int, int]],
) -> Image.Image:
    """Draw the boxes and number labels of ``indices`` on an RGBA canvas."""
    layer = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    w, h = canvas.size
    font = _font(max(11, round(min(w, h) / 34)))
    half = width // 2
    for index in indices:
        finding = report.findings[index]
        rgb = hex_to_rgb(report.color(index))
        for box in finding.boxes:
            x0, y0, x1, y1 = (round(v) for v in box.to_pixels(w, h, frame))
            # Pillow draws a rectangle's outline inwards; shift it so the
            # line is centred on the box edge, with a thin dark halo for contrast.
            draw.rectangle(
                (x0 - half - 1, y0 - half - 1, x1 + half + 1, y1 + half + 1),
                outline=(0, 0, 0, min(alpha, 170)),
                width=width + 2,
            )
            draw.rectangle(
                (x0 - half, y0 - half, x1 + half, y1 + half),
                outline=(*rgb, alpha),
                width=width,
            )
        if not finding.boxes:
            continue
        label = str(index + 1)
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        pad = max(2, (bottom - top) // 4)
        size = (right - left + 2 * pad, bottom - top + 2 * pad)
        first = finding.boxes[0].to_pixels(w, h, frame)
        anchor = (first[0] - half, first[1] - half, first[2], first[3])
        rect = _label_position(anchor, size, (w, h), taken)
        taken.append(rect)
        draw.rectangle(rect, fill=(*rgb, alpha), outline=(0, 0, 0, min(alpha, 170)))
        draw.text(
            (rect[0] + pad - left, rect[1] + pad - top),
            label,
            font=font,
            fill=(*hex_to_rgb(text_color(rgb)), alpha),
        )
    return Image.alpha_composite(canvas, layer)


def _dim_outside_square(canvas: Image.Image) -> Image.Image:
    w, h = canvas.size
    ox, oy, side = center_square(w, h)
    if side == w and side == h:
        return canvas
    layer = Image.new("RGBA", canvas.size, (0, 0, 0, CROP_DIM_ALPHA))
    draw = ImageDraw.Draw(layer)
    draw.rectangle((ox, oy, ox + side - 1, oy + side - 1), fill=(0, 0, 0, 0))
    edge = max(1, line_width(w, h) // 2)
    draw.rectangle((ox, oy, ox + side - 1, oy + side - 1), outline=(255, 255, 255, 150), width=edge)
    return Image.alpha_composite(canvas, layer)


def _caption(canvas: Image.Image, report: Report, frame: Frame) -> Image.Image:
    """The frame used (bottom left) and a DEMO mark (top left) when the findings are canned."""
    w, h = canvas.size
    layer = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    font = _font(max(10, round(min(w, h) / 55)))
    pad = max(2, round(min(w, h) / 200))
    warn = frame == "full"
    text = FULL_FRAME_CAPTION if warn else FRAME_CAPTIONS[frame]
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    y = h - (bottom - top) - 3 * pad
    background = (*WARNING_RGB, 255) if warn else (0, 0, 0, 170)
    ink = (0, 0, 0, 255) if warn else (255, 255, 255, 255)
    draw.rectangle((0, y, right - left + 2 * pad, h), fill=background)
    draw.text((pad - left, y + pad - top), text, font=font, fill=ink)
    stamp = _demo_stamp(report)
    if stamp:
        big = _font(max(12, round(min(w, h) / 30)))
        left, top, right, bottom = draw.textbbox((0, 0), stamp, font=big)
        draw.rectangle(
            (0, 0, right - left + 4 * pad, bottom - top + 4 * pad),
            fill=(255, 193, 7, 255),
        )
        draw.text((2 * pad - left, 2 * pad - top), stamp, font=big, fill=(0, 0, 0, 255))
    return Image.alpha_composite(canvas, layer)


def _demo_notice(report: Report) -> str:
    from .local.demo_findings import demo_notice

    return demo_notice(report)


def _demo_stamp(report: Report) -> str:
    from .local.demo_findings import demo_stamp

    return demo_stamp(report)


def _legend_panel(report: Report, height: int, image_width: int) -> Image.Image:
    """A white panel listing the numbered findings in their colours."""
    scale = max(11, round(min(height, image_width) / 48))
    font = _font(scale)
    width = max(260, round(image_width * 0.55))
    chars = max(20, int(width / (scale * 0.55)) - 4)
    panel = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(panel)
    y = scale
    for index, finding in enumerate(report.findings):
        rgb = hex_to_rgb(report.color(index))
        draw.rectangle((scale // 2, y, scale // 2 + scale, y + scale), fill=rgb, outline=(0, 0, 0))
        suffix = "" if finding.grounded else " (no box)"
        lines = textwrap.wrap(f"{index + 1}. {finding.text}{suffix}", chars) or [f"{index + 1}."]
        for line in lines:
            draw.text((2 * scale, y), line, font=font, fill=(20, 20, 20))
            y += round(scale * 1.3)
        y += scale // 2
    if report.demo:
        for line in textwrap.wrap(_demo_notice(report), chars):
            draw.text((scale // 2, y), line, font=font, fill=(160, 90, 0))
            y += round(scale * 1.3)
    draw.text(
        (scale // 2, max(y, height - round(scale * 1.5))),
        "For research only, not for clinical use.",
        font=font,
        fill=(110, 110, 110),
    )
    return panel


def _warn_on_aspect(report: Report, size: tuple[int, int]) -> None:
    if not same_shape(report.image_size, size):
        rw, rh = report.image_size  # type: ignore[misc]
        w, h = size
        warnings.warn(
            f"the image drawn is {w} x {h} but the report's frontal image was {rw} x {rh} "
            "(a different shape): the boxes may be misplaced. Draw on the study's frontal image.",
            stacklevel=3,
        )


def fit_within(image: Image.Image, max_side: int) -> Image.Image:
    """``image`` shrunk (Lanczos) so that its longest side is at most ``max_side``; the
    image itself when it already fits. A caller drawing several reports on one image
    shrinks it once and passes the result to :func:`render_findings`."""
    if max(image.size) <= max_side:
        return image
    factor = max_side / max(image.size)
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    return image.resize(size, Image.Resampling.LANCZOS)


def render_findings(
    image: Any,
    report: Report,
    *,
    frame: Frame = "center_crop",
    show_crop: bool = False,
    max_side: int | None = None,
    highlight: int | None = None,
    legend: bool = False,
) -> Image.Image:
    """The image (RGB) with each finding's boxes in its colour and numbered.

    ``image`` is a PIL image, a PreparedImage, or any source prepare_image
    reads (read at full resolution). Boxes are normalised, so a downscaled
    copy of the study's frontal image works. ``frame`` picks the box
    convention, ``show_crop`` darkens what lies outside the central square
    the model grounds in, ``max_side`` shrinks the picture first,
    ``highlight`` (zero-based finding index) fades the other findings and
    ``legend`` adds a panel listing the findings on the right.
    """
    _check_frame(frame)
    base = to_pil(image)
    _warn_on_aspect(report, base.size)
    if highlight is not None and not 0 <= highlight < len(report.findings):
        raise IndexError(
            f"highlight={highlight} but the report has {len(report.findings)} findings"
        )
    if max_side is not None:
        base = fit_within(base, max_side)
    canvas = base.convert("RGBA") if base.mode != "RGBA" else base.copy()
    if show_crop:
        canvas = _dim_outside_square(canvas)
    width = line_width(*canvas.size)
    taken: list[tuple[int, int, int, int]] = []
    everyone = list(range(len(report.findings)))
    if highlight is None:
        canvas = _draw_findings(canvas, report, everyone, frame, width, 255, taken)
    else:
        others = [i for i in everyone if i != highlight]
        canvas = _draw_findings(canvas, report, others, frame, width, FADED_ALPHA, taken)
        canvas = _draw_findings(canvas, report, [highlight], frame, round(width * 1.5), 255, taken)
    canvas = _caption(canvas, report, frame)
    result = canvas.convert("RGB")
    if legend:
        panel = _legend_panel(report, result.height, result.width)
        joined = Image.new("RGB", (result.width + panel.width, result.height), (255, 255, 255))
        joined.paste(result, (0, 0))
        joined.paste(panel, (result.width, 0))
        result = joined
    return result


def annotated_png(image: Any, report: Report, **options: Any) -> bytes:
    """:func:`render_findings` as PNG bytes, for exports."""
    buffer = io.BytesIO()
    render_findings(image, report, **options).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def plot_findings(
    report: Report,
    image: Any,
    *,
    ax: Axes | None = None,
    frame: Frame = "center_crop",
    show_crop: bool = False,
    legend: bool = True,
) -> Axes:
    """Draw the image and the findings' boxes on a matplotlib axis; return the axis.

    ``image`` is the frontal image the report was made for. Colours and numbers match
    :func:`render_findings` and the report's HTML table.
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch, Rectangle

    _check_frame(frame)
    base = to_pil(image)
    _warn_on_aspect(report, base.size)
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 7 * base.height / max(base.width, 1)))
    w, h = base.size
    if base.mode in ("1", "L", "LA"):
        ax.imshow(base.convert("L"), cmap="gray", vmin=0, vmax=255, extent=(0, w, h, 0))
    else:
        ax.imshow(base.convert("RGB"), extent=(0, w, h, 0))
    if show_crop:
        ox, oy, side = center_square(w, h)
        if (side, side) != (w, h):
            import numpy as np

            mask = np.zeros((h, w, 4), dtype=float)
            mask[..., 3] = CROP_DIM_ALPHA / 255
            mask[oy : oy + side, ox : ox + side, 3] = 0.0
            ax.imshow(mask, extent=(0, w, h, 0))
            xs = [ox, ox + side, ox + side, ox, ox]
            ys = [oy, oy, oy + side, oy + side, oy]
            ax.add_line(Line2D(xs, ys, color="white", alpha=0.6, linewidth=1))
    handles = []
    for index, finding in enumerate(report.findings):
        color = report.color(index)
        for number, box in enumerate(finding.boxes, start=1):
            x0, y0, x1, y1 = box.to_pixels(w, h, frame)
            ax.add_patch(
                Rectangle(
                    (x0, y0),
                    x1 - x0,
                    y1 - y0,
                    fill=False,
                    edgecolor=color,
                    linewidth=2.0,
                    gid=f"finding-{index + 1}-box-{number}",
                )
            )
            if number == 1:
                ax.text(
                    x0,
                    y0,
                    str(index + 1),
                    color=text_color(color),
                    fontsize=9,
                    fontweight="bold",
                    va="bottom",
                    ha="left",
                    bbox={"facecolor": color, "edgecolor": "black", "pad": 1.5, "linewidth": 0.5},
                )
        text = textwrap.shorten(finding.text, 70, placeholder="...")
        suffix = "" if finding.grounded else " (no box)"
        handles.append(
            Patch(facecolor=color, edgecolor="black", label=f"{index + 1}. {text}{suffix}")
        )
    warn = frame == "full"
    caption = (FULL_FRAME_CAPTION if warn else FRAME_CAPTIONS[frame]) + (
        f"  ·  {_demo_notice(report)}" if report.demo else ""
    )
    ax.text(
        0.01,
        0.01,
        caption,
        transform=ax.transAxes,
        fontsize=8,
        color="black" if warn else "white",
        va="bottom",
        ha="left",
        bbox={
            "facecolor": tuple(v / 255 for v in WARNING_RGB) if warn else "black",
            "alpha": 0.9 if warn else 0.6,
            "pad": 2,
            "linewidth": 0,
        },
        gid="frame-warning" if warn else "frame-caption",
    )
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_axis_off()
    if legend and handles:
        ax.legend(
            handles=handles,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            fontsize=8,
            frameon=False,
        )
    return ax
