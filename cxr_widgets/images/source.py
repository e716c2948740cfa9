"""Reading an image source safely: regular files only, header before body, and
every decoder failure turned into an :class:`~cxr_widgets.errors.ImageError`."""

from __future__ import annotations

import io
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from ..errors import ImageError
from .sniff import detect_format, header_size, what_is

T = TypeVar("T")

#: Reject images larger than this many pixels from their header, before decoding.
MAX_PIXELS = 64_000_000

#: Bytes read before anything else: enough for the format, a PNG's IHDR and most
#: JPEG SOF markers; DICOM headers are parsed from the open file.
HEAD_BYTES = 64 * 1024


def max_file_bytes(max_pixels: int) -> int:
    """Largest file accepted: ``max_pixels`` 16-bit pixels with room for headers and a
    lossless codec's worst case."""
    return max_pixels * 8 + 64_000_000


def read_path(source: str | os.PathLike[str], label: str, max_pixels: int) -> bytes:
    """The bytes of an image file, refused early when they cannot be an image.

    Only regular files are read (a FIFO, ``/dev/zero`` or a socket would block or
    never end); the file is opened without blocking and checked with ``fstat`` on
    the open descriptor, so it cannot be swapped in between. The header (format and
    claimed size) is checked before the body is read.
    """
    path = Path(os.fspath(source)).expanduser()
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ImageError(
            f"{label}: no such file. Check the path (relative paths start at {os.getcwd()}).",
            source=label,
        ) from None
    except OSError as exc:
        raise _os_error(label, exc) from None
    if stat.S_ISDIR(info.st_mode):
        raise ImageError(
            f"{label} is a directory; give the path of an image file (PNG, JPEG or DICOM).",
            source=label,
        )
    _require_regular(label, info.st_mode)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise _os_error(label, exc) from None
    with os.fdopen(fd, "rb") as handle:
        try:
            info = os.fstat(handle.fileno())
            _require_regular(label, info.st_mode)
            size = info.st_size
            if size > max_file_bytes(max_pixels):
                raise ImageError(
                    f"{label} is {size / 1e6:.0f} MB, too large for one chest X-ray image "
                    f"(limit follows max_pixels={max_pixels}).",
                    source=label,
                )
            head = handle.read(HEAD_BYTES)
            check_header(head, size, label, max_pixels, handle)
            handle.seek(len(head))
            return head + handle.read()
        except OSError as exc:
            raise _os_error(label, exc) from None


def _require_regular(label: str, mode: int) -> None:
    if stat.S_ISREG(mode):
        return
    kinds = (
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    what = next((name for test, name in kinds if test(mode)), "not a regular file")
    raise ImageError(
        f"{label} is {what}, not a regular file; give the path of an image file "
        "(PNG, JPEG or DICOM). Nothing was read from it.",
        source=label,
    )


def _os_error(label: str, exc: OSError) -> ImageError:
    return ImageError(
        f"{label}: cannot read the file ({exc.strerror or exc.__class__.__name__}).",
        source=label,
    )


def check_header(
    head: bytes, size: int, label: str, max_pixels: int, handle: io.BufferedReader | None = None
) -> None:
    """Refuse from the first bytes: unknown formats, and images whose header claims
    more than ``max_pixels`` (for DICOM, read from ``handle`` without the pixel data)."""
    kind = detect_format(head)
    if kind == "unknown":
        raise ImageError(
            f"{label} is {what_is(head)}. Give a PNG, JPEG or DICOM file "
            "(convert other formats to PNG first).",
            source=label,
        )
    what = f"{kind.upper()} file"
    if kind in ("png", "jpeg"):
        claimed = header_size(head, kind)
        if claimed is None:
            return
        if claimed[0] * claimed[1] > max_pixels:
            raise bomb(label, what, claimed[0], claimed[1], 1, max_pixels)
        # At most 4 channels of 16 bits; anything far beyond that is not this image.
        _check_file_size(label, what, size, claimed[0], claimed[1], claimed[0] * claimed[1] * 8)
        return
    if handle is None:
        return
    dims = _dicom_header_dims(handle)
    if dims is None:
        return
    rows, columns, frames, samples, bits = dims
    if rows * columns * frames * samples > max_pixels:
        raise bomb(label, what, columns, rows, frames * samples, max_pixels)
    if rows and columns:
        raw = rows * columns * frames * samples * max(1, (bits + 7) // 8)
        _check_file_size(label, what, size, columns, rows, raw)


def _check_file_size(label: str, what: str, size: int, width: int, height: int, raw: int) -> None:
    """Refuse a file far larger than the raw pixels its header describes (a generous
    allowance covers headers, metadata and codec overhead), before reading it."""
    if size > 4 * raw + 16_000_000:
        raise ImageError(
            f"{label} is {size / 1e6:.0f} MB but its header describes a {width}x{height} "
            f"{what.split()[0]} image ({_megabytes(raw)} of raw pixels at most); the file is "
            "not what its header says. Re-export it. Nothing beyond the header was read.",
            source=label,
        )


def _dicom_header_dims(handle: io.BufferedReader) -> tuple[int, int, int, int, int] | None:
    """Rows, columns, frames, samples and bits allocated, or None when the header
    cannot be read on its own (the full read then says what is wrong)."""
    import pydicom

    handle.seek(0)
    if handle.read(4) == b"DICM":  # file meta present but the preamble was cut off
        return None
    handle.seek(0)
    try:
        with np.errstate(all="ignore"):
            ds = pydicom.dcmread(handle, force=True, stop_before_pixels=True)
    except Exception:  # a foreign parser on a possibly corrupt file
        return None

    def number(keyword: str, default: int) -> int:
        try:
            return int(ds.get(keyword, default) or default)
        except (TypeError, ValueError):
            return default

    return (
        number("Rows", 0),
        number("Columns", 0),
        max(1, number("NumberOfFrames", 1)),
        max(1, number("SamplesPerPixel", 1)),
        number("BitsAllocated", 16),
    )


def _megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{max(1, round(n / 1000))} KB"


def guard(label: str, what: str, load: Callable[[], T]) -> T:
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
            "pass a larger max_pixels.",
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


def bomb(
    label: str, what: str, width: int, height: int, frames: int, max_pixels: int
) -> ImageError:
    """The error for an image whose header claims more than ``max_pixels``."""
    total = width * height * frames
    dims = f"{width}x{height}" + (f"x{frames} frames" if frames > 1 else "")
    return ImageError(
        f"{label}: the {what} claims {dims} = {_mp(total)} pixels, over the limit of "
        f"{max_pixels / 1e6:.3g} million (max_pixels); refused before decoding (possible "
        "decompression bomb). If it is genuine, pass a larger max_pixels.",
        source=label,
    )
