"""PNG, JPEG, PIL images and numpy arrays -> :class:`PixelData` (stored values).

8-bit images keep their values; 16-bit PNGs, 16/32-bit PIL images and integer or
float arrays keep theirs too, and :func:`prepare_image` later scales them min-max
over the values present. Colour becomes luma (ITU-R 601-2, as Pillow's ``L``),
alpha is flattened on black (transparent padding looks like the air around the
body), and an EXIF orientation is applied.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps

from ..errors import ImageError
from .pixels import Display, PixelData
from .sniff import header_size, is_animated_png, png_pixel_data_short
from .source import bomb


def load_raster_bytes(data: bytes, kind: str, label: str, max_pixels: int) -> PixelData:
    """Decode PNG or JPEG bytes (``kind`` from :func:`~.sniff.detect_format`)."""
    what = f"{kind.upper()} file"
    # Read the size from the header ourselves first: Image.open would warn
    # (DecompressionBombWarning) about a bomb before we could refuse it.
    claimed = header_size(data, kind)
    if claimed is not None and claimed[0] * claimed[1] > max_pixels:
        raise bomb(label, what, claimed[0], claimed[1], 1, max_pixels)
    image = Image.open(io.BytesIO(data), formats=[kind.upper()])
    width, height = image.size
    if width * height > max_pixels:
        raise bomb(label, what, width, height, 1, max_pixels)
    image.load()
    notes: list[str] = []
    animated = kind == "png" and is_animated_png(data)
    if kind == "png":
        short = png_pixel_data_short(data)
        if short is not None:
            raise ImageError(
                f"{label}: the PNG file's pixel data ends early ({short[1]:,} of "
                f"{short[0]:,} bytes; the missing rows would be black): the file is damaged "
                "or truncated. Export or copy it again.",
                source=label,
            )
    if animated:
        notes.append("animated PNG: only its default image is used")
    pixels = from_pil(image, label, max_pixels, kind, notes)
    if animated and pixels.is_constant:
        raise ImageError(
            f"{label} is an animated PNG (APNG) whose default image is blank (every pixel "
            f"{pixels.value_range[0]:g}); the model would see only that blank image. Save the "
            "frame you mean as a plain PNG and give that.",
            source=label,
        )
    return pixels


def from_pil(
    image: Image.Image, label: str, max_pixels: int, kind: str, notes: list[str] | None = None
) -> PixelData:
    """A PIL image's values: L/1 and colour as 8-bit, I;16/I/F as they are."""
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError(f"{label}: the image is empty ({width}x{height} pixels).", source=label)
    if width * height > max_pixels:
        raise bomb(label, "image", width, height, 1, max_pixels)
    notes = list(notes or [])
    orientation = image.getexif().get(0x0112, 1)
    if orientation in range(2, 9):
        transposed = ImageOps.exif_transpose(image)
        if transposed is not None:
            image = transposed
            notes.append(f"EXIF orientation {orientation} applied")
    mode = image.mode
    if mode in ("L", "1"):
        values = _as_array(image if mode == "L" else image.convert("L"))
        return _pixels(values, kind, 1 if mode == "1" else 8, notes, Display("direct"))
    if mode.startswith("I") or mode == "F":
        values = _as_array(image)
        bit_depth = 32 if mode in ("I", "F") else 16
        if mode == "I" and values.size and int(values.min()) >= 0 and int(values.max()) < 65536:
            bit_depth = 16
        if mode != "F" and values.dtype.kind in "ui" and values.dtype.itemsize > 2:
            values = values.astype(np.int32, copy=False)
        return _pixels(values, kind, bit_depth, notes, Display("minmax"))
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        mode == "P" and "transparency" in image.info
    )
    if mode == "P":
        notes.append("palette expanded")
    if has_alpha:
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(black, rgba)
        notes.append("alpha flattened on black")
    if mode not in ("LA", "La"):
        if image.mode != "RGB":
            image = image.convert("RGB")
        if not _is_gray(image):
            notes.append(f"{mode} converted to grayscale (ITU-R 601-2 luma)")
    return _pixels(_as_array(image.convert("L")), kind, 8, notes, Display("direct"))


#: Pillow modes whose raw bytes are one plain numpy dtype.
_MODE_DTYPES = {"L": "u1", "I;16": "<u2", "I;16B": ">u2", "I": "=i4", "F": "=f4"}


def _as_array(image: Image.Image) -> np.ndarray:
    """A read-only array over the image's bytes: one copy (``np.asarray`` makes two)."""
    dtype = _MODE_DTYPES.get(image.mode)
    if dtype is None:
        return np.asarray(image)
    width, height = image.size
    return np.frombuffer(image.tobytes(), dtype=dtype).reshape(height, width)


def _pixels(
    values: np.ndarray, kind: str, bit_depth: int, notes: list[str], display: Display
) -> PixelData:
    return PixelData(
        values=values,
        source_kind=kind,
        bit_depth=bit_depth,
        notes=tuple(notes),
        display=display,
        safe_metadata={"photometric_interpretation": None, "modality": None},
    )


def _is_gray(image: Image.Image) -> bool:
    r, g, b = image.split()
    return r.tobytes() == g.tobytes() == b.tobytes()


def minmax_to_uint8(array: np.ndarray) -> tuple[np.ndarray, str]:
    """Linear min-max over the values present -> uint8, and a note saying so."""
    values = np.asarray(array, dtype=np.float64 if array.dtype == np.float64 else np.float32)
    if not np.isfinite(values).all():
        raise ValueError("the array contains NaN or infinite values")
    lo, hi = float(values.min()), float(values.max())
    scaled = (values - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(values)
    note = f"min-max scaled {lo:g}..{hi:g} to 0..255"
    return to_uint8(scaled), note


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Float values in 0..255 -> uint8 (``values`` is overwritten)."""
    np.rint(values, out=values)
    np.clip(values, 0, 255, out=values)
    return np.ascontiguousarray(values.astype(np.uint8))


def from_array(array: np.ndarray, label: str, max_pixels: int) -> PixelData:
    """A numpy image: H x W (values kept) or H x W x 3/4 (RGB/RGBA -> 8-bit luma)."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageError(
            f"{label}: an array of shape {array.shape} is not an image; give H x W "
            "(grayscale) or H x W x 3/4 (RGB/RGBA).",
            source=label,
        )
    height, width = array.shape[:2]
    if width < 1 or height < 1:
        raise ImageError(f"{label}: the array is empty (shape {array.shape}).", source=label)
    if width * height > max_pixels:
        raise bomb(label, "array", width, height, 1, max_pixels)
    is_bool = array.dtype == np.bool_
    if is_bool:
        array = array.astype(np.uint8) * 255
    if array.dtype.kind not in "uif":
        raise ImageError(
            f"{label}: an array of dtype {array.dtype} is not an image; use integers or floats.",
            source=label,
        )
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ImageError(f"{label}: the array contains NaN or infinite values.", source=label)
    bit_depth = 1 if is_bool else array.dtype.itemsize * 8
    if array.ndim == 3:
        if array.dtype != np.uint8:
            scaled, _note = minmax_to_uint8(array.reshape(height, -1))
            array = scaled.reshape(array.shape)
        rgb_or_rgba = Image.fromarray(np.ascontiguousarray(array))  # uint8 x 3 or 4 channels
        pixels = from_pil(rgb_or_rgba, label, max_pixels, "numpy")
        return _pixels(pixels.values, "numpy", bit_depth, list(pixels.notes), Display("direct"))
    display = Display("direct" if array.dtype == np.uint8 else "minmax")
    return _pixels(array, "numpy", bit_depth, [], display)
