"""images.sniff: formats from their first bytes, PNG chunks, sizes from headers."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from cxr_widgets.images import JPEG_MAGIC, PNG_MAGIC, build_png, detect_format, png_chunks
from cxr_widgets.images.sniff import (
    header_size,
    is_animated_png,
    is_png_or_jpeg,
    not_an_image,
    png_pixel_data_short,
    what_is,
)


def saved(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def test_detect_format(rg1_path: Path) -> None:
    png = saved(Image.new("L", (5, 3)), "PNG")
    jpeg = saved(Image.new("L", (5, 3)), "JPEG")
    dicom = rg1_path.read_bytes()
    assert detect_format(png) == "png" and png.startswith(PNG_MAGIC)
    assert detect_format(jpeg) == "jpeg" and jpeg.startswith(JPEG_MAGIC)
    assert detect_format(dicom) == "dicom"
    assert detect_format(dicom[128:]) == "dicom"  # preamble cut off
    assert detect_format(b"GIF89a....") == "unknown"
    assert is_png_or_jpeg(png) and is_png_or_jpeg(jpeg) and not is_png_or_jpeg(dicom)
    assert what_is(b"GIF89a") == "a GIF image"
    assert what_is(b"") == "empty (0 bytes)"
    assert what_is(b"hello\n") == "text, not an image"


def test_a_dicom_file_named_without_an_extension_loads(rg1_path: Path, tmp_path: Path) -> None:
    """PACS exports name files IM0001, 1.2.840...: the content says DICOM (the "DICM"
    after the 128-byte preamble, or a bare group 0002/0008 tag), never the name."""
    import shutil

    from cxr_widgets import DemoBackend, Study, prepare_image
    from cxr_widgets.images import load_pixels
    from cxr_widgets.manifest import read_manifest

    named = tmp_path / "IM0001"
    shutil.copyfile(rg1_path, named)
    bare = tmp_path / "1.2.840.10008.5.1.4.1.1.1"  # dots, but no image extension
    bare.write_bytes(rg1_path.read_bytes()[128:])  # no preamble at all
    for path in (named, bare):
        assert not_an_image(path) is None
        sent = prepare_image(path)
        assert sent.source_kind == "dicom" and sent.original_size == (1841, 1955)
        assert sent.png == prepare_image(rg1_path).png  # the same pixels as the .dcm
        assert load_pixels(path).size == (1841, 1955)
    (tmp_path / "m.csv").write_text("frontal,study_id\nIM0001,s1\n")
    (study,) = read_manifest(tmp_path / "m.csv")
    report = DemoBackend().generate(study)
    assert report.image_size == (1841, 1955) and report.study_id == "s1"
    assert DemoBackend().generate(Study(bare)).image_size == (1841, 1955)
    (tmp_path / "NOTES").write_text("hello\n")
    assert not_an_image(tmp_path / "NOTES") == "text, not an image"
    with pytest.raises(FileNotFoundError):
        not_an_image(tmp_path / "missing")


def test_png_chunks_walk_what_pillow_writes() -> None:
    image = Image.new("L", (7, 4), 9)
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "x")
    data = saved(image, "PNG", pnginfo=info)
    kinds = [kind for kind, _ in png_chunks(data)]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"tEXt" in kinds
    ihdr = dict(png_chunks(data))[b"IHDR"]
    assert struct.unpack(">II", ihdr[:8]) == (7, 4)
    with pytest.raises(ValueError, match="not a PNG"):
        list(png_chunks(b"GIF89a"))


def test_build_png_is_a_png_pillow_reads() -> None:
    rows = b"".join(b"\x00" + bytes([r * 10 + c for c in range(6)]) for r in range(3))
    header = struct.pack(">IIBBBBB", 6, 3, 8, 0, 0, 0, 0)
    data = build_png([(b"IHDR", header), (b"IDAT", zlib.compress(rows)), (b"IEND", b"")])
    decoded = np.asarray(Image.open(io.BytesIO(data)))
    assert decoded.shape == (3, 6) and decoded[2, 5] == 25  # CRCs were right
    assert png_pixel_data_short(data) is None
    short = build_png([(b"IHDR", header), (b"IDAT", zlib.compress(rows[:7])), (b"IEND", b"")])
    assert png_pixel_data_short(short) == (21, 7)


def test_header_size_png_and_jpeg_with_exif() -> None:
    image = Image.new("L", (321, 123))
    assert header_size(saved(image, "PNG"), "png") == (321, 123)
    exif = Image.Exif()
    exif[0x010E] = "x" * 5000  # a large APP1 segment before the frame header
    assert header_size(saved(image.convert("RGB"), "JPEG", exif=exif), "jpeg") == (321, 123)
    assert header_size(b"\xff\xd8\xff\xda", "jpeg") is None


def test_is_animated_png() -> None:
    frames = [Image.new("L", (4, 4), v) for v in (0, 255)]
    animated = saved(frames[0], "PNG", save_all=True, append_images=frames[1:])
    assert is_animated_png(animated)
    assert not is_animated_png(saved(frames[0], "PNG"))


def test_the_wire_contract_imports_sniff_without_numpy_or_pillow() -> None:
    import subprocess
    import sys

    code = (
        "import sys, cxr_widgets; "
        "print('cxr_widgets.images.sniff' in sys.modules, 'PIL' in sys.modules, "
        "'numpy' in sys.modules, 'cxr_widgets.images.prepare' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False", "False", "False"]
