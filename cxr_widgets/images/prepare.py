"""Any image source -> the 8-bit grayscale PNG that is sent to the model.

:func:`prepare_image` takes what :func:`~cxr_widgets.images.load_pixels` takes
(or its :class:`PixelData`, so an image already decoded for viewing is not
decoded again) and returns a :class:`PreparedImage`: the pixels as they will be
sent, the lossless PNG without metadata, and a record of every step taken.

Choices, and why:

* DICOM: modality LUT (rescale slope/intercept), then the file's VOI LUT or
  first window center/width; without either, a 0.5-99.5 percentile window.
  MONOCHROME1 is inverted so that bone is bright, as the model expects.
* 16-bit PNGs, 16-bit PIL images and integer arrays: linear min-max over the values
  actually present (not the container's 0-65535), because such files are
  usually already display-ready renderings that use only part of the range
  (for example 12 bits in a 16-bit PNG); min-max keeps all of their contrast
  and clips nothing.
* Alpha is flattened on black: transparent padding then looks like the air
  around the body.
* Size: see :data:`DEFAULT_SHORTEST_SIDE`; shapes the model cannot use
  (longer than :data:`MAX_ASPECT_RATIO` to 1) are refused.
"""

from __future__ import annotations

import base64 as _b64
import io
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from ..errors import ImageError
from ..study import describe_source
from .dicom import voi_to_uint8
from .load import load_pixels
from .pixels import PixelData
from .raster import minmax_to_uint8
from .source import MAX_PIXELS, guard

#: The vision encoder sees 518 x 518 pixels; images are never reduced below this.
MODEL_INPUT_SIDE = 518

#: Default shortest side of a prepared image, in pixels.
#:
#: Chosen from measurement (bench/bench_prepare.py) so that a full
#: three-image study fits the 1.5 MB request budget
#: (contract.DEFAULT_REQUEST_BUDGET) after base64 (x 4/3), with room for noisier
#: images than the sample. RG1_UNCR (1841 x 1955), PNG / base64 bytes per image:
#:
#: =========  =========  ==========  ==================
#: shortest   PNG        base64      3 images, base64
#: =========  =========  ==========  ==================
#: 518        112.5 KB   150.0 KB    0.45 MB
#: 640        167.8 KB   223.8 KB    0.67 MB
#: 768        238.7 KB   318.2 KB    0.95 MB  (default)
#: 896        322.2 KB   429.7 KB    1.29 MB
#: 1036       429.5 KB   572.6 KB    1.72 MB  (over budget)
#: full       1348 KB    1798 KB     5.39 MB
#: =========  =========  ==========  ==================
#:
#: 768 is 1.5x what the model sees (518) and leaves a third of the budget
#: for text and harder-to-compress images; 896 would leave only 14 %.
DEFAULT_SHORTEST_SIDE = 768

#: Longest side / shortest side beyond which an image is refused: the model resizes
#: the shortest side to 518 px and keeps only the central square, so a 65535 x 1
#: strip would become 518 x 34 million pixels of which it sees 1/65535.
MAX_ASPECT_RATIO = 10.0


@dataclass(repr=False)
class PreparedImage:
    """An image as it will be sent, and what was done to get it there."""

    image: Image.Image
    png: bytes
    original_size: tuple[int, int]
    size: tuple[int, int]
    source_kind: str
    bit_depth: int
    inverted: bool = False
    resized: bool = False
    notes: list[str] = field(default_factory=list)
    windowing: str | None = None
    #: DICOM BurnedInAnnotation: True when the file says the pixels carry text
    #: (possibly a name); None when the source does not say.
    burned_in_annotation: bool | None = None

    @property
    def base64(self) -> str:
        """The PNG, standard base64 without newlines: the value sent in the request."""
        return _b64.b64encode(self.png).decode("ascii")

    @property
    def nbytes(self) -> int:
        """Size of the PNG in bytes (base64 adds a third)."""
        return len(self.png)

    @property
    def width(self) -> int:
        return self.size[0]

    @property
    def height(self) -> int:
        return self.size[1]

    def describe(self) -> str:
        """One line for people, e.g. ``DICOM 1841x1955 15-bit, MONOCHROME1 inverted, ...``."""
        kind = _KIND_LABELS.get(self.source_kind, self.source_kind.upper())
        ow, oh = self.original_size
        parts = [f"{kind} {ow}x{oh} {self.bit_depth}-bit"]
        if self.inverted:
            parts.append("MONOCHROME1 inverted")
        if self.windowing:
            parts.append(self.windowing)
        if self.resized:
            parts.append(f"resized to {self.size[0]}x{self.size[1]}")
        if self.burned_in_annotation:
            parts.append("burned-in annotation (the pixels may show patient data)")
        parts.append(_format_bytes(self.nbytes))
        return ", ".join(parts)

    def __repr__(self) -> str:
        return f"PreparedImage({self.describe()})"


_KIND_LABELS = {
    "png": "PNG",
    "jpeg": "JPEG",
    "dicom": "DICOM",
    "dicom-dataset": "DICOM dataset",
    "pil": "PIL image",
    "numpy": "array",
}


def _format_bytes(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f} MB"
    if n >= 1000:
        return f"{round(n / 1000)} KB"
    return f"{n} B"


def prepare_image(
    source: Any,
    *,
    name: str | None = None,
    shortest_side: int | None = DEFAULT_SHORTEST_SIDE,
    max_side: int | None = None,
    full_resolution: bool = False,
    max_pixels: int = MAX_PIXELS,
) -> PreparedImage:
    """The 8-bit grayscale, lossless PNG that will be sent for ``source``.

    ``source`` is a path, bytes, a PIL image, a numpy array, a pydicom Dataset or
    a :class:`PixelData` from :func:`load_pixels` (not decoded again); PNG, JPEG
    and DICOM are recognised by content. ``name`` (for example
    ``"frontal_image"``) appears in error messages.

    Size: the shortest side is reduced to ``shortest_side`` (default
    :data:`DEFAULT_SHORTEST_SIDE`; images are never upscaled), then the longest
    side is capped at ``max_side`` if given. ``shortest_side=None`` or
    ``full_resolution=True`` keeps the original size. Images over
    ``max_pixels`` are rejected from their header before decoding.

    Raises :class:`~cxr_widgets.errors.ImageError` for anything that cannot
    be read, saying what the source is, what is wrong and what to do.
    """
    label = describe_source(source)
    if name:
        label = f"{name} ({label})"
    _check_options(label, shortest_side, max_side, max_pixels)
    pixels = load_pixels(source, name=name, max_pixels=max_pixels)
    _check_shape(label, pixels)
    what = _KIND_LABELS.get(pixels.source_kind, "image")
    image, notes, windowing = guard(label, what, lambda: to_display8(pixels))
    original_size = image.size
    target = _target_size(
        original_size,
        None if full_resolution else shortest_side,
        None if full_resolution else max_side,
    )
    resized = target != original_size
    if resized:
        image = _resize(image, target)
        notes.append(
            f"resized {original_size[0]}x{original_size[1]} -> {target[0]}x{target[1]} (Lanczos)"
        )
    elif min(original_size) < MODEL_INPUT_SIDE:
        notes.append(
            f"smaller than {MODEL_INPUT_SIDE} px on its shortest side; the model will upscale it"
        )
    if pixels.burned_in_annotation:
        notes.append(
            "the DICOM says BurnedInAnnotation = YES: the pixels may show patient data "
            "(a name or an id), and they are sent as they are"
        )
    return PreparedImage(
        image=image,
        png=encode_png(image),
        original_size=original_size,
        size=image.size,
        source_kind=pixels.source_kind,
        bit_depth=pixels.bit_depth,
        inverted=pixels.invert and pixels.display.kind == "voi",
        resized=resized,
        notes=notes,
        windowing=windowing,
        burned_in_annotation=pixels.burned_in_annotation,
    )


def to_display8(pixels: PixelData) -> tuple[Image.Image, list[str], str | None]:
    """The 8-bit grayscale picture the model gets, before resizing, with notes."""
    notes = list(pixels.notes)
    kind = pixels.display.kind
    if kind == "voi":
        gray, windowing, note = voi_to_uint8(pixels.values, pixels.display.voi, pixels.invert)
        notes.append(note)
        if pixels.invert:
            notes.append("MONOCHROME1 inverted (bone bright)")
    elif kind == "minmax":
        gray, note = minmax_to_uint8(pixels.values)
        notes.append(note)
        windowing = "min-max scaled"
    else:
        gray, windowing = pixels.values, None
    if pixels.is_constant:
        notes.append(f"the image is blank: every pixel is {pixels.value_range[0]:g}")
    return Image.fromarray(gray), notes, windowing


def encode_png(image: Image.Image) -> bytes:
    """Lossless PNG of an 8-bit grayscale image with no metadata chunks."""
    clean = Image.frombytes("L", image.size, image.tobytes())  # drops .info (ICC, EXIF, text)
    buffer = io.BytesIO()
    clean.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def _check_shape(label: str, pixels: PixelData) -> None:
    width, height = pixels.size
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT_RATIO:
        raise ImageError(
            f"{label}: an image of {width}x{height} pixels ({ratio:.0f} to 1) is not a chest "
            f"X-ray the model can read: it sees only the central {min(width, height)}x"
            f"{min(width, height)} square, resized to {MODEL_INPUT_SIDE} px. Give the "
            f"radiograph itself (at most {MAX_ASPECT_RATIO:g} to 1).",
            source=label,
        )


def _check_options(
    label: str, shortest_side: int | None, max_side: int | None, max_pixels: int
) -> None:
    if shortest_side is not None:
        if not isinstance(shortest_side, int) or isinstance(shortest_side, bool):
            raise ImageError(f"{label}: shortest_side must be an int or None", source=label)
        if shortest_side < MODEL_INPUT_SIDE:
            raise ImageError(
                f"{label}: shortest_side={shortest_side} is below {MODEL_INPUT_SIDE} px, the size "
                f"the model sees; use {MODEL_INPUT_SIDE} or more (or None to keep the full size).",
                source=label,
            )
    if max_side is not None and (
        not isinstance(max_side, int) or isinstance(max_side, bool) or max_side < 1
    ):
        raise ImageError(f"{label}: max_side must be a positive int or None", source=label)
    if not isinstance(max_pixels, int) or max_pixels < 1:
        raise ImageError(f"{label}: max_pixels must be a positive int", source=label)


def _target_size(
    size: tuple[int, int], shortest_side: int | None, max_side: int | None
) -> tuple[int, int]:
    """The size to send: shrink only, keep the aspect ratio."""
    width, height = size
    short, long = min(width, height), max(width, height)
    new_short, new_long = short, long
    if shortest_side is not None and short > shortest_side:
        new_short, new_long = shortest_side, max(shortest_side, round(long * shortest_side / short))
    if max_side is not None and new_long > max_side:
        new_short, new_long = max(1, round(short * max_side / long)), max_side
    return (new_short, new_long) if width <= height else (new_long, new_short)


def _resize(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    # Plain Lanczos: 1841x1955 -> 768x816 takes ~14 ms here (bench/bench_prepare.py);
    # a box reduction first (reducing_gap) saves nothing measurable at chest X-ray sizes.
    return image.resize(size, Image.Resampling.LANCZOS)
