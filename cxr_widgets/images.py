"""Any image source -> the 8-bit grayscale PNG that is sent to the model.

:func:`prepare_image` takes a path, bytes, a PIL image, a numpy array or a
pydicom Dataset (PNG, JPEG or DICOM, detected from the content, not the file
name) and returns a :class:`PreparedImage`: the pixels as they will be sent,
the lossless PNG without metadata, and a record of every step taken.

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
* Size: see :data:`DEFAULT_SHORTEST_SIDE`.
"""

from __future__ import annotations

import base64 as _b64
import io
import os
import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from .errors import ImageError
from .study import describe_source

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

#: Reject images larger than this many pixels from their header, before decoding.
MAX_PIXELS = 64_000_000

#: Percentiles of the fallback window for DICOM files that carry no VOI.
FALLBACK_PERCENTILES = (0.5, 99.5)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"


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


@dataclass
class _Loaded:
    """A decoded source, already 8-bit grayscale, before resizing."""

    image: Image.Image
    kind: str
    bit_depth: int
    inverted: bool = False
    notes: list[str] = field(default_factory=list)
    windowing: str | None = None


# --- public entry point -------------------------------------------------------


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

    ``source`` is a path, bytes, a PIL image, a numpy array or a pydicom
    Dataset; PNG, JPEG and DICOM are recognised by content. ``name`` (for
    example ``"frontal_image"``) appears in error messages.

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
    loaded = _load(source, label, max_pixels)
    image = loaded.image
    original_size = image.size
    notes = list(loaded.notes)
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
    png = encode_png(image)
    return PreparedImage(
        image=image,
        png=png,
        original_size=original_size,
        size=image.size,
        source_kind=loaded.kind,
        bit_depth=loaded.bit_depth,
        inverted=loaded.inverted,
        resized=resized,
        notes=notes,
        windowing=loaded.windowing,
    )


def encode_png(image: Image.Image) -> bytes:
    """Lossless PNG of an 8-bit grayscale image with no metadata chunks."""
    clean = Image.frombytes("L", image.size, image.tobytes())  # drops .info (ICC, EXIF, text)
    buffer = io.BytesIO()
    clean.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


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


# --- loading --------------------------------------------------------------------


def _load(source: Any, label: str, max_pixels: int) -> _Loaded:
    if isinstance(source, (str, os.PathLike)):
        return _load_bytes(_read_path(source, label, max_pixels), label, max_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _load_bytes(bytes(source), label, max_pixels)
    if isinstance(source, Image.Image):
        return _guard(label, "PIL image", lambda: _from_pil(source, label, max_pixels, "pil"))
    if isinstance(source, np.ndarray):
        return _guard(label, "array", lambda: _from_array(source, label, max_pixels))
    module = type(source).__module__ or ""
    if module.startswith("pydicom") and hasattr(source, "dir"):
        return _guard(
            label,
            "DICOM dataset",
            lambda: _from_dataset(source, label, max_pixels, "dicom-dataset"),
        )
    raise ImageError(
        f"{label}: cannot read an image from a {type(source).__name__}; give a path, bytes, "
        "a PIL image, a numpy array or a pydicom Dataset.",
        source=label,
    )


def _read_path(source: str | os.PathLike[str], label: str, max_pixels: int) -> bytes:
    path = Path(os.fspath(source)).expanduser()
    if not path.exists():
        raise ImageError(
            f"{label}: no such file. Check the path (relative paths start at {os.getcwd()}).",
            source=label,
        )
    if path.is_dir():
        raise ImageError(
            f"{label} is a directory; give the path of an image file (PNG, JPEG or DICOM).",
            source=label,
        )
    try:
        size = path.stat().st_size
        # A DICOM of max_pixels 16-bit pixels, with room for headers and a lossless codec's worst case.
        if size > max_pixels * 8 + 64_000_000:
            raise ImageError(
                f"{label} is {size / 1e6:.0f} MB, too large for one chest X-ray image "
                f"(limit follows max_pixels={max_pixels}).",
                source=label,
            )
        return path.read_bytes()
    except OSError as exc:
        raise ImageError(
            f"{label}: cannot read the file ({exc.strerror or exc.__class__.__name__}).",
            source=label,
        ) from None


def _sniff(data: bytes) -> str:
    if data.startswith(PNG_MAGIC):
        return "png"
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "dicom"
    if data.startswith(b"DICM") or _looks_like_bare_dicom(data):
        return "dicom"
    return "unknown"


def _looks_like_bare_dicom(data: bytes) -> bool:
    """DICOM written without the 128-byte preamble: starts with a group 0002/0008 tag."""
    if len(data) < 8:
        return False
    group, element = struct.unpack("<HH", data[:4])
    if group not in (0x0002, 0x0008) or element > 0x0100:
        return False
    vr = data[4:6]
    explicit = vr.isalpha() and vr.isupper()
    implicit = struct.unpack("<I", data[4:8])[0] < 0x10000
    return explicit or implicit


_OTHER_FORMATS: tuple[tuple[bytes, str], ...] = (
    (b"GIF8", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"BM", "a BMP image"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x00\x00\x00\x0cjP  ", "a JPEG 2000 file"),
    (b"\xff\x4f\xff\x51", "a JPEG 2000 codestream"),
    (b"RIFF", "a RIFF (e.g. WebP) file"),
    (b"\x93NUMPY", "a numpy .npy file (load it with numpy.load and pass the array)"),
)


def _what_is(data: bytes) -> str:
    if not data:
        return "empty (0 bytes)"
    for magic, what in _OTHER_FORMATS:
        if data.startswith(magic):
            return what
    head = data[:512]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c in "\r\n\t" for c in text):
        return "text, not an image"
    return "not a format cxr_widgets recognises"


def _load_bytes(data: bytes, label: str, max_pixels: int) -> _Loaded:
    kind = _sniff(data)
    if kind == "unknown":
        raise ImageError(
            f"{label} is {_what_is(data)}. Give a PNG, JPEG or DICOM file "
            "(convert other formats to PNG first).",
            source=label,
        )
    if kind == "dicom":
        return _guard(label, "DICOM file", lambda: _load_dicom_bytes(data, label, max_pixels))
    return _guard(
        label, f"{kind.upper()} file", lambda: _load_pillow(data, kind, label, max_pixels)
    )


def _guard(label: str, what: str, load: Any) -> _Loaded:
    """Run a decoder; turn anything a corrupt file makes it raise into ImageError."""
    try:
        with np.errstate(all="ignore"):  # thread-local, unlike warnings.catch_warnings
            return load()
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        pixels = _first_int(str(exc))
        raise ImageError(
            f"{label}: the {what} claims {_mp(pixels)} pixels, far more than a chest X-ray; "
            "refused before decoding (possible decompression bomb). If it is genuine, "
            "downscale it with another tool first.",
            source=label,
        ) from None
    except MemoryError:
        raise ImageError(
            f"{label}: the {what} needs more memory than is available to decode; "
            "it is corrupt or far too large.",
            source=label,
        ) from None
    except Exception as exc:
        # Decoders are foreign code: on a corrupt file Pillow, numpy and pydicom raise
        # OSError, SyntaxError, ValueError, struct.error, EOFError, KeyError, TypeError,
        # pydicom's BytesLengthException, ... Any of them means the file is bad.
        reason = _short_reason(exc, what)
        raise ImageError(
            f"{label}: the {what} is truncated or corrupt and cannot be decoded ({reason}). "
            "Re-export or re-download it.",
            source=label,
        ) from None


def _short_reason(exc: BaseException, what: str) -> str:
    name = exc.__class__.__name__
    if what.startswith("DICOM"):
        return name  # pydicom messages may quote element values; keep tags out of messages
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{name}: {message[:120]}" if message else name


def _first_int(text: str) -> int | None:
    match = re.search(r"\d+", text)
    return int(match.group()) if match else None


def _mp(pixels: int | None) -> str:
    return f"{pixels / 1e6:.3g} million" if pixels else "too many"


def _bomb(
    label: str, what: str, width: int, height: int, frames: int, max_pixels: int
) -> ImageError:
    total = width * height * frames
    dims = f"{width}x{height}" + (f"x{frames} frames" if frames > 1 else "")
    return ImageError(
        f"{label}: the {what} claims {dims} = {_mp(total)} pixels, over the limit of "
        f"{max_pixels / 1e6:.3g} million (max_pixels); refused before decoding (possible "
        "decompression bomb). If it is genuine, pass a larger max_pixels.",
        source=label,
    )


# --- PNG / JPEG / PIL -------------------------------------------------------------


def _load_pillow(data: bytes, kind: str, label: str, max_pixels: int) -> _Loaded:
    what = f"{kind.upper()} file"
    # Read the size from the header ourselves first: Image.open would warn
    # (DecompressionBombWarning) about a bomb before we could refuse it.
    claimed = _header_size(data, kind)
    if claimed is not None and claimed[0] * claimed[1] > max_pixels:
        raise _bomb(label, what, claimed[0], claimed[1], 1, max_pixels)
    image = Image.open(io.BytesIO(data), formats=[kind.upper()])
    width, height = image.size
    if width * height > max_pixels:
        raise _bomb(label, what, width, height, 1, max_pixels)
    image.load()
    if kind == "png":
        short = _png_pixel_data_short(data)
        if short is not None:
            raise ImageError(
                f"{label}: the PNG file's pixel data ends early ({short[1]:,} of "
                f"{short[0]:,} bytes; the missing rows would be black): the file is damaged "
                "or truncated. Export or copy it again.",
                source=label,
            )
    return _from_pil(image, label, max_pixels, kind)


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def _png_pixel_data_short(data: bytes) -> tuple[int, int] | None:
    """``(expected, found)`` inflated bytes when a PNG's pixel stream is too short.

    Pillow fills the rows of a PNG whose compressed stream ends cleanly but early
    with black and says nothing. Interlaced PNGs are not checked.
    """
    pos, ihdr, idat = 8, b"", []
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"IHDR":
            ihdr = data[pos + 8 : pos + 8 + length]
        elif kind == b"IDAT":
            idat.append(data[pos + 8 : pos + 8 + length])
        elif kind == b"IEND":
            break
        pos += 12 + length
    if len(ihdr) < 13:
        return None
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", ihdr[:13])
    channels = _PNG_CHANNELS.get(color)
    if interlace or channels is None:
        return None
    expected = height * (1 + (width * channels * depth + 7) // 8)
    inflater, found = zlib.decompressobj(), 0
    try:
        for part in idat:
            while part:  # inflate in slices: never hold the whole image twice
                found += len(inflater.decompress(part, 1 << 20))
                part = inflater.unconsumed_tail
                if found >= expected:
                    return None
        found += len(inflater.flush())
    except zlib.error:
        return None  # Pillow already decoded it; leave damaged streams to its checks
    return (expected, found) if found < expected else None


_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_NO_LENGTH = frozenset([0x01, 0xD8, *range(0xD0, 0xD8)])


def _header_size(data: bytes, kind: str) -> tuple[int, int] | None:
    """(width, height) from a PNG IHDR or the first JPEG SOF marker; None if not found."""
    if kind == "png":
        if data[12:16] == b"IHDR" and len(data) >= 24:
            return struct.unpack(">II", data[16:24])
        return None
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _JPEG_NO_LENGTH:
            pos += 2
            continue
        if marker in _JPEG_SOF:
            if pos + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        if marker == 0xDA:  # start of scan before any frame header
            return None
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        pos += 2 + length
    return None


def _from_pil(image: Image.Image, label: str, max_pixels: int, kind: str) -> _Loaded:
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError(f"{label}: the image is empty ({width}x{height} pixels).", source=label)
    if width * height > max_pixels:
        raise _bomb(label, "image", width, height, 1, max_pixels)
    notes: list[str] = []
    orientation = image.getexif().get(0x0112, 1)
    if orientation in range(2, 9):
        transposed = ImageOps.exif_transpose(image)
        if transposed is not None:
            image = transposed
            notes.append(f"EXIF orientation {orientation} applied")
    mode = image.mode
    bit_depth = 8
    windowing = None
    if mode in ("L", "1"):
        gray = image.convert("L")
        bit_depth = 1 if mode == "1" else 8
    elif mode.startswith("I") or mode == "F":
        array = np.asarray(image)
        bit_depth = 32 if mode in ("I", "F") else 16
        if mode == "I" and array.size and int(array.min()) >= 0 and int(array.max()) < 65536:
            bit_depth = 16
        gray, note = _minmax_to_image(array)
        notes.append(note)
        windowing = "min-max scaled"
    else:
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
        gray = image.convert("L")
    return _Loaded(gray, kind, bit_depth, notes=notes, windowing=windowing)


def _is_gray(image: Image.Image) -> bool:
    r, g, b = image.split()
    return r.tobytes() == g.tobytes() == b.tobytes()


def _minmax_to_image(array: np.ndarray) -> tuple[Image.Image, str]:
    values = np.asarray(array, dtype=np.float64 if array.dtype == np.float64 else np.float32)
    if not np.isfinite(values).all():
        raise ValueError("the array contains NaN or infinite values")
    lo, hi = float(values.min()), float(values.max())
    scaled = (values - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(values)
    note = f"min-max scaled {lo:g}..{hi:g} to 0..255"
    return _to_image(scaled), note


def _to_image(values: np.ndarray) -> Image.Image:
    """Float values in 0..255 -> an 8-bit grayscale image (``values`` is overwritten)."""
    np.rint(values, out=values)
    np.clip(values, 0, 255, out=values)
    return Image.fromarray(np.ascontiguousarray(values.astype(np.uint8)))


# --- numpy --------------------------------------------------------------------------


def _from_array(array: np.ndarray, label: str, max_pixels: int) -> _Loaded:
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
        raise _bomb(label, "array", width, height, 1, max_pixels)
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
            scaled, note = _minmax_to_image(array.reshape(height, -1))
            array = np.asarray(scaled).reshape(array.shape)
        rgb_or_rgba = Image.fromarray(np.ascontiguousarray(array))  # uint8 x 3 or 4 channels
        loaded = _from_pil(rgb_or_rgba, label, max_pixels, "numpy")
        loaded.bit_depth = bit_depth
        return loaded
    if array.dtype == np.uint8:
        return _Loaded(Image.fromarray(np.ascontiguousarray(array)), "numpy", bit_depth)
    gray, note = _minmax_to_image(array)
    return _Loaded(gray, "numpy", bit_depth, notes=[note], windowing="min-max scaled")


# --- DICOM --------------------------------------------------------------------------


def _load_dicom_bytes(data: bytes, label: str, max_pixels: int) -> _Loaded:
    import pydicom
    from pydicom.errors import InvalidDicomError

    if data.startswith(b"DICM"):  # file meta present but the preamble was cut off
        data = bytes(128) + data
    try:
        dataset = pydicom.dcmread(io.BytesIO(data), force=True)
    except InvalidDicomError:
        raise ImageError(
            f"{label}: not a readable DICOM file (the header is invalid).", source=label
        ) from None
    return _from_dataset(dataset, label, max_pixels, "dicom")


def _from_dataset(ds: Any, label: str, max_pixels: int, kind: str) -> _Loaded:
    if not any(key in ds for key in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        sop = ds.get("SOPClassUID")
        what = f" ({sop.name})" if sop is not None and hasattr(sop, "name") else ""
        raise ImageError(
            f"{label}: this DICOM object{what} has no pixel data (for example a structured "
            "report or presentation state); give the DICOM file of the radiograph itself.",
            source=label,
        )
    rows = int(ds.get("Rows", 0) or 0)
    columns = int(ds.get("Columns", 0) or 0)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if rows < 1 or columns < 1:
        raise ImageError(
            f"{label}: the DICOM file gives no image size (Rows x Columns = {rows} x {columns}).",
            source=label,
        )
    if columns * rows * max(frames, 1) * max(samples, 1) > max_pixels:
        raise _bomb(
            label, "DICOM file", columns, rows, max(frames, 1) * max(samples, 1), max_pixels
        )
    if frames > 1:
        raise ImageError(
            f"{label}: a multi-frame DICOM ({frames} frames); a chest X-ray study needs one "
            "image. Pick a frame: pass pydicom.dcmread(path).pixel_array[i] (or split the file).",
            source=label,
        )
    ds = _with_transfer_syntax(ds)
    _check_decoder(ds, label)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    from pydicom.pixels import pixel_array

    array = pixel_array(ds)  # unlike ds.pixel_array, leaves no cached copy on the dataset
    bit_depth = int(
        ds.get("BitsStored", 0) or ds.get("BitsAllocated", 0) or array.dtype.itemsize * 8
    )
    notes: list[str] = []
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        return _dicom_color(ds, array, photometric, kind, bit_depth)
    if array.ndim != 2:
        raise ValueError(f"unexpected pixel array shape {array.shape}")
    if ds.get("ModalityLUTSequence"):
        from pydicom.pixels import apply_modality_lut

        values = np.asarray(apply_modality_lut(array, ds), dtype=np.float32)
        notes.append("modality LUT applied")
    else:
        # Rescale in float32 ourselves: half the memory of pydicom's float64 on large images.
        slope = _first_number(ds.get("RescaleSlope"))
        intercept = _first_number(ds.get("RescaleIntercept")) or 0.0
        slope = slope or 1.0  # absent or 0 (invalid): identity
        values = array.astype(np.float32)
        if slope != 1.0 or intercept != 0.0:
            values *= np.float32(slope)
            values += np.float32(intercept)
            notes.append(f"rescale slope {slope:g} intercept {intercept:g}")
    scaled, windowing, note = _apply_voi(values, ds)
    notes.append(note)
    inverted = photometric == "MONOCHROME1"
    if inverted:
        np.subtract(255.0, scaled, out=scaled)
        notes.append("MONOCHROME1 inverted (bone bright)")
    return _Loaded(_to_image(scaled), kind, bit_depth, inverted, notes, windowing)


def _with_transfer_syntax(ds: Any) -> Any:
    """A dataset read without file meta (no preamble) gets the syntax it was read with.

    The caller's dataset is not changed: a shallow copy carries the new file meta.
    """
    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID") is not None:
        return ds
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is None or little is None:
        # Built in memory: native pixel data in this machine's (little-endian) order.
        pixels = ds.get("PixelData")
        if not isinstance(pixels, (bytes, bytearray)) or pixels[:4] == b"\xfe\xff\x00\xe0":
            return ds
        implicit, little = False, True
    from pydicom import uid
    from pydicom.dataset import Dataset, FileMetaDataset

    copy = Dataset(ds)
    copy.file_meta = FileMetaDataset(meta) if meta is not None else FileMetaDataset()
    if implicit:
        copy.file_meta.TransferSyntaxUID = uid.ImplicitVRLittleEndian
    else:
        copy.file_meta.TransferSyntaxUID = (
            uid.ExplicitVRLittleEndian if little else uid.ExplicitVRBigEndian
        )
    return copy


def _check_decoder(ds: Any, label: str) -> None:
    """Say which package to install when the pixel data's codec is not available."""
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax is None:
        raise ImageError(
            f"{label}: the DICOM dataset has no Transfer Syntax UID; set "
            "ds.file_meta.TransferSyntaxUID (e.g. pydicom.uid.ExplicitVRLittleEndian).",
            source=label,
        )
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise ImageError(
            f"{label}: the DICOM transfer syntax {_syntax_name(syntax)} is not supported by "
            "pydicom; convert the file (for example with gdcmconv --raw or dcmdjpeg).",
            source=label,
        ) from None
    if not decoder.is_available:
        raise ImageError(
            f"{label}: the DICOM pixel data is compressed as {_syntax_name(syntax)} and no "
            f"installed decoder reads it. Install one: {_install_hint(decoder.missing_dependencies)}.",
            source=label,
        )


def _syntax_name(syntax: Any) -> str:
    name = getattr(syntax, "name", "")
    return f"'{name}' ({syntax})" if name and name != str(syntax) else str(syntax)


def _install_hint(missing: list[str]) -> str:
    """``pip install pylibjpeg pylibjpeg-libjpeg`` from pydicom's missing-dependency strings."""
    options = []
    for entry in missing:
        _plugin, _, requires = entry.partition(" - requires ")
        if not requires:
            continue
        packages = [re.split(r"[<>=!~ ]", dep.strip())[0] for dep in re.split(r",| and ", requires)]
        packages = ["python-gdcm" if p == "gdcm" else p for p in packages if p and p != "numpy"]
        if packages:
            options.append("pip install " + " ".join(dict.fromkeys(packages)))
    options.sort(key=lambda text: "pylibjpeg" not in text)  # pure pip wheels first
    return " or ".join(options) if options else "a pydicom pixel data plugin (see pydicom docs)"


def _apply_voi(values: np.ndarray, ds: Any) -> tuple[np.ndarray, str, str]:
    """VOI from the file (LUT or window), else a percentile window; returns 0..255 floats."""
    if ds.get("VOILUTSequence"):
        from pydicom.pixels import apply_voi_lut

        # The LUT's output range: its own entries, read by pydicom (LUTData may be OW bytes).
        entries, first, _bits = (int(v) for v in ds.VOILUTSequence[0].LUTDescriptor)
        every_input = np.arange(first, first + (entries or 65536), dtype=np.int32)
        table = np.asarray(apply_voi_lut(every_input, ds, index=0, prefer_lut=True))
        lo, hi = float(table.min()), float(table.max())
        indexes = np.rint(values).astype(np.int32)  # a LUT maps integer modality values
        out = np.asarray(apply_voi_lut(indexes, ds, index=0, prefer_lut=True), dtype=np.float32)
        if hi > lo:
            scaled = (out - lo) * (255.0 / (hi - lo))
            if _has_contrast(scaled):
                return scaled, "VOI LUT", "VOI LUT from the file"
    center, width, function = _window(ds)
    if center is not None and width is not None:
        scaled = _windowing(values, center, width, function)
        if _has_contrast(scaled):
            return (
                scaled,
                "windowed",
                f"VOI LUT window {center:g}/{width:g} (center/width, {function})",
            )
    low_p, high_p = FALLBACK_PERCENTILES
    sample = values[:: max(1, values.shape[0] // 512), :: max(1, values.shape[1] // 512)]
    lo, hi = (float(v) for v in np.percentile(sample, [low_p, high_p]))
    if hi <= lo:
        lo, hi = float(values.min()), float(values.max())
    scaled = np.subtract(values, lo, dtype=values.dtype)
    scaled *= 255.0 / (hi - lo) if hi > lo else 0.0
    np.clip(scaled, 0, 255, out=scaled)
    return (
        scaled,
        "percentile window",
        f"no usable window in the file: percentile window {low_p:g}-{high_p:g}% ({lo:g}..{hi:g})",
    )


def _window(ds: Any) -> tuple[float | None, float | None, str]:
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    center = _first_number(ds.get("WindowCenter"))
    width = _first_number(ds.get("WindowWidth"))
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        function = "LINEAR"
    if width is not None and width <= (1 if function == "LINEAR" else 0):
        return None, None, function
    return center, width, function


def _first_number(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def _windowing(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 windowing straight to 0..255."""
    if function == "SIGMOID":
        return 255.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR":
        center, width = center - 0.5, width - 1.0
    # ((v - c) / w + 0.5) * 255, with one temporary array (images can be 64 MP).
    out = np.subtract(values, center, dtype=values.dtype)
    out *= 255.0 / width
    out += 127.5
    np.clip(out, 0, 255, out=out)
    return out


def _has_contrast(scaled: np.ndarray) -> bool:
    """False when a window maps nearly everything to one grey (a broken or foreign window)."""
    sample = scaled[:: max(1, scaled.shape[0] // 256), :: max(1, scaled.shape[1] // 256)]
    return float(np.percentile(sample, 99) - np.percentile(sample, 1)) >= 8.0


def _dicom_color(
    ds: Any, array: np.ndarray, photometric: str, kind: str, bit_depth: int
) -> _Loaded:
    notes = []
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        array = apply_color_lut(array, ds)
        notes.append("palette colour expanded")
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"unexpected pixel array shape {array.shape}")
    rgb = array.astype(np.float64)
    luma = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    gray, note = _minmax_to_image(luma) if array.dtype != np.uint8 else (_to_image(luma), "")
    notes.append(f"{photometric} converted to grayscale")
    if note:
        notes.append(note)
    return _Loaded(gray, kind, bit_depth, notes=notes)
