"""What a file is, from its first bytes: PNG, JPEG, DICOM or something named.

The one place that knows the PNG and JPEG signatures, walks PNG chunks and
reads an image's size from its header (before any decoder runs).
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"

#: Bytes enough to tell the format and read a PNG/JPEG size (a JPEG's SOF may follow
#: large EXIF/ICC segments, so header reads fall back to the whole file).
SNIFF_BYTES = 512


def detect_format(data: bytes) -> str:
    """``"png"``, ``"jpeg"``, ``"dicom"`` or ``"unknown"`` from the first bytes."""
    if data.startswith(PNG_MAGIC):
        return "png"
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "dicom"
    if data.startswith(b"DICM") or looks_like_bare_dicom(data):
        return "dicom"
    return "unknown"


def is_png_or_jpeg(data: bytes) -> bool:
    """True for bytes that start like a PNG or a JPEG (what the endpoint accepts)."""
    return data.startswith(PNG_MAGIC) or data.startswith(JPEG_MAGIC)


def looks_like_bare_dicom(data: bytes) -> bool:
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


def not_an_image(path: str | os.PathLike[str]) -> str | None:
    """Why the file at ``path`` is not a PNG, JPEG or DICOM image, from its first bytes
    (never its name: DICOM files are often named ``IM0001`` or by a UID), or None when
    it is one. Raises ``OSError`` when the file cannot be read."""
    with open(path, "rb") as handle:
        head = handle.read(SNIFF_BYTES)
    return None if detect_format(head) != "unknown" else what_is(head)


def what_is(data: bytes) -> str:
    """A few words for a file that is not PNG, JPEG or DICOM."""
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


# --- PNG chunks -----------------------------------------------------------------


def png_chunks(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """``(type, body)`` of each chunk of a PNG, in order, up to IEND or the end of data.

    CRCs are not checked (Pillow does that); a chunk cut short yields what is there.
    """
    if not data.startswith(PNG_MAGIC):
        raise ValueError("not a PNG (no PNG signature)")
    pos = len(PNG_MAGIC)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        yield kind, data[pos + 8 : pos + 8 + length]
        if kind == b"IEND":
            return
        pos += 12 + length


def png_chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk with its length and CRC."""
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def build_png(chunks: list[tuple[bytes, bytes]]) -> bytes:
    """A PNG file from ``(type, body)`` chunks (the signature is added)."""
    return PNG_MAGIC + b"".join(png_chunk(kind, body) for kind, body in chunks)


#: Channels per PNG colour type (PNG spec, IHDR).
PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def png_pixel_data_short(data: bytes) -> tuple[int, int] | None:
    """``(expected, found)`` inflated bytes when a PNG's pixel stream is too short.

    Pillow fills the rows of a PNG whose compressed stream ends cleanly but early
    with black and says nothing. Interlaced PNGs are not checked.
    """
    ihdr, idat = b"", []
    for kind, body in png_chunks(data):
        if kind == b"IHDR":
            ihdr = body
        elif kind == b"IDAT":
            idat.append(body)
    if len(ihdr) < 13:
        return None
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", ihdr[:13])
    channels = PNG_CHANNELS.get(color)
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


def is_animated_png(data: bytes) -> bool:
    """True for an APNG: an ``acTL`` chunk before the first IDAT."""
    for kind, _body in png_chunks(data):
        if kind == b"acTL":
            return True
        if kind == b"IDAT":
            return False
    return False


# --- sizes from headers ---------------------------------------------------------

_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_NO_LENGTH = frozenset([0x01, 0xD8, *range(0xD0, 0xD8)])


def header_size(data: bytes, kind: str) -> tuple[int, int] | None:
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
