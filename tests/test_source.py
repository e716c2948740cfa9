"""images.source: only regular files are read, without blocking, and the header is
checked before the body of a large file is read."""

from __future__ import annotations

import io
import os
import socket
import struct
import time
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from image_helpers import write_dicom
from PIL import Image

from cxr_widgets.errors import ImageError
from cxr_widgets.images import build_png, load_pixels, prepare_image

MB = 1_000_000


def refused_quickly(source: object, match: str, seconds: float = 2.0) -> ImageError:
    start = time.monotonic()
    with pytest.raises(ImageError, match=match) as caught:
        prepare_image(source, name="frontal_image")
    assert time.monotonic() - start < seconds
    return caught.value


@pytest.mark.timeout(20)
def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "image.png"
    os.mkfifo(fifo)  # no writer: opening it for reading would block forever
    error = refused_quickly(fifo, "named pipe")
    assert "not a regular file" in str(error) and "frontal_image" in str(error)
    with pytest.raises(ImageError, match="named pipe"):
        load_pixels(fifo)


@pytest.mark.timeout(20)
def test_character_device_is_refused(tmp_path: Path) -> None:
    refused_quickly("/dev/zero", "character device")
    link = tmp_path / "zero.dcm"
    link.symlink_to("/dev/zero")  # a harmless-looking name changes nothing
    refused_quickly(link, "character device")


@pytest.mark.timeout(20)
def test_socket_and_directory_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.png"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(str(path))
        refused_quickly(path, "a socket")
    finally:
        server.close()
    refused_quickly(tmp_path, "is a directory")


def peak_bytes_while(run: Callable[[], None]) -> int:
    tracemalloc.start()
    try:
        run()
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


@pytest.mark.timeout(60)
def test_large_file_refused_from_its_header(tmp_path: Path) -> None:
    """A 500 MB file (sparse: no disk used) is judged by its first bytes, not read whole."""
    text = tmp_path / "notes.dcm"
    with text.open("wb") as handle:
        handle.write(b"a list of names, not an image\n" * 40)
        handle.truncate(500 * MB)

    def refuse_text() -> None:
        with pytest.raises(ImageError, match="text, not an image"):
            prepare_image(text)

    assert peak_bytes_while(refuse_text) < 5 * MB

    # a real 64x64 PNG followed by 500 MB of anything: refused before the body is read
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((64, 64), dtype=np.uint8)).save(buffer, format="PNG")
    padded = tmp_path / "padded.png"
    with padded.open("wb") as handle:
        handle.write(buffer.getvalue())
        handle.truncate(500 * MB)

    def refuse_padded() -> None:
        with pytest.raises(ImageError, match=r"500 MB but its header describes a 64x64 PNG"):
            prepare_image(padded)

    assert peak_bytes_while(refuse_padded) < 5 * MB


@pytest.mark.timeout(60)
def test_dicom_larger_than_its_header_says_is_refused(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "small.dcm", np.zeros((32, 32), dtype=np.uint16))
    with path.open("r+b") as handle:
        handle.truncate(300 * MB)

    def refuse() -> None:
        with pytest.raises(ImageError, match=r"header describes a 32x32 DICOM"):
            prepare_image(path)

    assert peak_bytes_while(refuse) < 5 * MB


def test_dicom_header_bomb_refused_before_the_body(tmp_path: Path) -> None:
    path = write_dicom(
        tmp_path / "claims.dcm",
        np.zeros((4, 4), dtype=np.uint16),
        PixelData=bytes(32),
    )
    import pydicom

    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns = 60000, 60000
    ds.save_as(path)
    with pytest.raises(ImageError, match=r"60000x60000 = 3.6e\+03 million pixels"):
        prepare_image(path)


def test_regular_files_and_symlinks_still_work(tmp_path: Path) -> None:
    header = struct.pack(">IIBBBBB", 600, 600, 8, 0, 0, 0, 0)
    rows = b"".join(b"\x00" + bytes(range(200)) + bytes(400) for _ in range(600))
    png = build_png([(b"IHDR", header), (b"IDAT", zlib.compress(rows)), (b"IEND", b"")])
    path = tmp_path / "ok.png"
    path.write_bytes(png)
    link = tmp_path / "link.png"
    link.symlink_to(path)
    assert prepare_image(link).original_size == (600, 600)
    assert load_pixels(path).values[5, 199] == 199
