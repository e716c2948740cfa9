"""prepare_image: every input kind, every bad input, sizes, and the PNG that is sent."""

from __future__ import annotations

import base64
import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from image_helpers import png_bomb, write_dicom
from PIL import Image, PngImagePlugin
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGLossless,
    generate_uid,
)

from cxr_widgets.errors import ImageError
from cxr_widgets.images import (
    DEFAULT_SHORTEST_SIDE,
    MAX_PIXELS,
    MODEL_INPUT_SIDE,
    PreparedImage,
    build_png,
    prepare_image,
)
from cxr_widgets.images import png_chunks as walk_png

RG1_SIZE = (1841, 1955)  # width, height


# --- helpers -------------------------------------------------------------------------


def png_chunks(data: bytes) -> list[bytes]:
    """Chunk types of a PNG, by walking the file."""
    return [kind for kind, _body in walk_png(data)]


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def pixels(prepared: PreparedImage) -> np.ndarray:
    return np.asarray(prepared.image)


def gradient(width: int = 600, height: int = 560) -> np.ndarray:
    """An 8-bit test card: horizontal ramp plus a bright square."""
    ramp = np.tile(np.linspace(0, 200, width).astype(np.uint8), (height, 1))
    ramp[40:120, 40:120] = 255
    return ramp


@pytest.fixture(scope="module")
def rg1(rg1_path: Path) -> PreparedImage:
    return prepare_image(rg1_path)


@pytest.fixture(scope="module")
def rg1_full(rg1_path: Path) -> PreparedImage:
    return prepare_image(rg1_path, full_resolution=True)


def region_mean(image: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> float:
    h, w = image.shape
    return float(image[int(y0 * h) : int(y1 * h), int(x0 * w) : int(x1 * w)].mean())


# --- DICOM: the NEMA chest radiograph -------------------------------------------------


def test_rg1_is_read_windowed_inverted_and_resized(rg1: PreparedImage) -> None:
    assert rg1.source_kind == "dicom"
    assert rg1.original_size == RG1_SIZE
    assert rg1.bit_depth == 15
    assert rg1.inverted is True
    assert rg1.resized is True
    assert min(rg1.size) == DEFAULT_SHORTEST_SIDE
    assert rg1.size == rg1.image.size
    assert rg1.image.mode == "L"
    assert any("15000/30000" in note for note in rg1.notes), rg1.notes
    assert abs(rg1.size[1] / rg1.size[0] - RG1_SIZE[1] / RG1_SIZE[0]) < 0.01


def test_rg1_bone_bright_lungs_dark(rg1: PreparedImage) -> None:
    # Regions picked by looking at the prepared image (fractions of width/height):
    # upper lung fields either side, and the mediastinum/spine in the middle.
    image = pixels(rg1).astype(float)
    right_lung = region_mean(image, 0.19, 0.18, 0.35, 0.36)
    left_lung = region_mean(image, 0.64, 0.18, 0.79, 0.33)
    mediastinum = region_mean(image, 0.45, 0.22, 0.55, 0.73)
    assert mediastinum > right_lung + 50
    assert mediastinum > left_lung + 50


def test_rg1_jpeg2000_lossless_gives_the_same_pixels(
    rg1_j2k_path: Path, rg1_full: PreparedImage
) -> None:
    j2k = prepare_image(rg1_j2k_path, full_resolution=True)
    assert j2k.original_size == RG1_SIZE
    assert np.array_equal(pixels(j2k), pixels(rg1_full))


def test_rg1_describe_has_no_patient_data(rg1_path: Path, rg1: PreparedImage) -> None:
    text = rg1.describe()
    assert text.startswith("DICOM 1841x1955 15-bit, MONOCHROME1 inverted")
    assert f"resized to {rg1.size[0]}x{rg1.size[1]}" in text
    ds = pydicom.dcmread(rg1_path)
    for tag in ("PatientName", "PatientID", "StudyDate", "InstitutionName"):
        value = str(ds.get(tag, "") or "")
        if value:
            assert value not in text
            assert value.encode() not in rg1.png
            assert value not in repr(rg1)
    assert "png=" not in repr(rg1)


def test_dataset_and_preamble_free_dicom(rg1_path: Path, rg1: PreparedImage) -> None:
    ds = pydicom.dcmread(rg1_path)
    from_dataset = prepare_image(ds)
    assert from_dataset.source_kind == "dicom-dataset"
    assert np.array_equal(pixels(from_dataset), pixels(rg1))

    raw = rg1_path.read_bytes()
    assert raw[128:132] == b"DICM"
    assert np.array_equal(pixels(prepare_image(raw[128:])), pixels(rg1))

    bare = Dataset()
    bare.update(ds)  # no file meta at all: starts with the (0008,xxxx) group
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, bare, implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert buffer.getvalue()[:2] == b"\x08\x00"
    assert np.array_equal(pixels(prepare_image(buffer.getvalue())), pixels(rg1))


def test_dicom_12bit_rescale_and_window(tmp_path: Path) -> None:
    stored = np.tile(np.arange(0, 4096, 8, dtype=np.uint16), (520, 1))  # 512 wide
    path = write_dicom(
        tmp_path / "ct.dcm",
        stored,
        RescaleSlope=2,
        RescaleIntercept=-1000,
        WindowCenter=1000,
        WindowWidth=2000,
    )
    out = prepare_image(path, full_resolution=True)
    assert out.bit_depth == 12 and not out.inverted and out.windowing == "windowed"
    values = stored.astype(float) * 2 - 1000
    c, w = 1000 - 0.5, 2000 - 1  # DICOM PS3.3 C.11.2.1.2 (LINEAR)
    expected = np.clip(((values - c) / w + 0.5) * 255, 0, 255)
    assert np.abs(pixels(out).astype(float) - expected).max() <= 1
    assert any("rescale slope 2 intercept -1000" in n for n in out.notes)


def test_dicom_without_window_uses_percentile_fallback(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    stored = (rng.normal(2000, 300, (540, 530)).clip(0, 4095)).astype(np.uint16)
    out = prepare_image(write_dicom(tmp_path / "nowin.dcm", stored), full_resolution=True)
    assert out.windowing == "percentile window"
    assert any("percentile" in note for note in out.notes)
    image = pixels(out)
    # 0.5 % of pixels clip at each end; the middle grey stays in the middle.
    assert (image == 0).mean() == pytest.approx(0.005, abs=0.003)
    assert (image == 255).mean() == pytest.approx(0.005, abs=0.003)
    assert 100 < image.mean() < 155


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    stored = np.tile(np.arange(0, 4096, 8, dtype=np.uint16), (520, 1))
    mono1 = prepare_image(
        write_dicom(tmp_path / "m1.dcm", stored, photometric="MONOCHROME1"), full_resolution=True
    )
    mono2 = prepare_image(write_dicom(tmp_path / "m2.dcm", stored), full_resolution=True)
    assert mono1.inverted and not mono2.inverted
    assert np.array_equal(pixels(mono1).astype(int), 255 - pixels(mono2).astype(int))
    row = pixels(mono1)[0].astype(int)
    assert row[0] > 250 and row[-1] < 5  # high stored values are dark in MONOCHROME1


def test_multiframe_dicom_rejected(tmp_path: Path) -> None:
    frames = np.zeros((3, 64, 64), dtype=np.uint16)
    path = write_dicom(tmp_path / "multi.dcm", frames, frames=3)
    with pytest.raises(ImageError, match=r"multi-frame DICOM \(3 frames\)") as info:
        prepare_image(path)
    assert str(path) in str(info.value)


def test_dicom_without_pixel_data_rejected(tmp_path: Path) -> None:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    ds.PatientName = "SECRET^PATIENT"
    path = tmp_path / "report.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(ImageError, match="no pixel data") as info:
        prepare_image(path, name="frontal_image")
    message = str(info.value)
    assert message.startswith(f"frontal_image ({path})")
    assert "Basic Text SR" in message
    assert "SECRET" not in message


def test_dicom_with_missing_decoder_names_the_package(tmp_path: Path) -> None:
    from pydicom.encaps import encapsulate
    from pydicom.pixels import get_decoder

    path = write_dicom(
        tmp_path / "jpegll.dcm",
        np.zeros((64, 64), dtype=np.uint16),
        transfer_syntax=JPEGLossless,
        PixelData=encapsulate([b"\xff\xd8\xff\xc3not really jpeg\xff\xd9"]),
    )
    with pytest.raises(ImageError) as info:
        prepare_image(path)
    message = str(info.value)
    if get_decoder(JPEGLossless).is_available:  # a decoder is installed: the data is corrupt
        assert "corrupt" in message
    else:
        assert "JPEG Lossless" in message
        assert "pip install pylibjpeg pylibjpeg-libjpeg" in message


@pytest.mark.timeout(10)
def test_dicom_bomb_rejected_from_header(tmp_path: Path) -> None:
    path = write_dicom(
        tmp_path / "bomb.dcm",
        np.zeros((2, 2), dtype=np.uint16),
        Rows=60000,
        Columns=60000,
        PixelData=b"\x00" * 8,
    )
    with pytest.raises(ImageError, match="max_pixels"):
        prepare_image(path)


# --- PNG -----------------------------------------------------------------------------


def test_png_8bit_gray_exact(tmp_path: Path) -> None:
    card = gradient()
    path = tmp_path / "gray.png"
    path.write_bytes(encode(Image.fromarray(card), "PNG"))
    out = prepare_image(path, full_resolution=True)
    assert (out.source_kind, out.bit_depth, out.resized) == ("png", 8, False)
    assert np.array_equal(pixels(out), card)


def test_png_16bit_min_max(tmp_path: Path) -> None:
    values = np.tile(np.linspace(1000, 5000, 600).astype(np.uint16), (530, 1))
    out = prepare_image(encode(Image.fromarray(values), "PNG"), full_resolution=True)
    assert out.source_kind == "png" and out.bit_depth == 16
    expected = np.rint((values.astype(float) - 1000) * 255 / 4000)
    assert np.abs(pixels(out) - expected).max() <= 1
    assert pixels(out).min() == 0 and pixels(out).max() == 255
    assert any("min-max" in note for note in out.notes)


def test_png_palette() -> None:
    card = gradient()
    palette_image = Image.fromarray(card).convert("RGB").quantize(colors=16)
    out = prepare_image(encode(palette_image, "PNG"), full_resolution=True)
    assert np.array_equal(pixels(out), np.asarray(palette_image.convert("L")))
    assert "palette expanded" in out.notes


def test_png_rgb_to_luma() -> None:
    rgb = np.zeros((530, 540, 3), dtype=np.uint8)
    rgb[:, :180] = (255, 0, 0)
    rgb[:, 180:360] = (0, 255, 0)
    rgb[:, 360:] = (0, 0, 255)
    out = prepare_image(encode(Image.fromarray(rgb), "PNG"), full_resolution=True)
    row = pixels(out)[10]
    # ITU-R 601-2: L = 0.299 R + 0.587 G + 0.114 B
    assert (row[0], row[200], row[400]) == (76, 150, 29)


def test_png_rgba_and_la_flattened_on_black() -> None:
    gray = np.full((530, 530), 200, dtype=np.uint8)
    alpha = np.zeros_like(gray)
    alpha[:, 200:400] = 255
    alpha[:, 400:] = 128
    for image in (
        Image.fromarray(np.dstack([gray, gray, gray, alpha]), "RGBA"),
        Image.merge("LA", [Image.fromarray(gray), Image.fromarray(alpha)]),
    ):
        out = prepare_image(encode(image, "PNG"), full_resolution=True)
        row = pixels(out)[5]
        assert row[0] == 0 and row[300] == 200 and abs(int(row[500]) - 100) <= 1
        assert "alpha flattened on black" in out.notes


def test_png_metadata_is_not_carried() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("PatientName", "SECRET^PATIENT")
    info.add_itxt("Comment", "SECRET note", zip=True)
    data = encode(Image.fromarray(gradient()), "PNG", pnginfo=info, dpi=(300, 300))
    assert b"tEXt" in data
    out = prepare_image(data)
    assert set(png_chunks(out.png)) == {b"IHDR", b"IDAT", b"IEND"}
    assert b"SECRET" not in out.png


# --- JPEG ----------------------------------------------------------------------------


def test_jpeg_gray_and_rgb() -> None:
    card = gradient()
    gray = prepare_image(encode(Image.fromarray(card), "JPEG", quality=95), full_resolution=True)
    assert gray.source_kind == "jpeg" and gray.bit_depth == 8
    assert np.abs(pixels(gray).astype(int) - card).mean() < 2
    rgb = prepare_image(
        encode(Image.fromarray(card).convert("RGB"), "JPEG", quality=95), full_resolution=True
    )
    assert np.abs(pixels(rgb).astype(int) - card).mean() < 2


def test_jpeg_cmyk() -> None:
    cmyk = Image.new("CMYK", (540, 530), (0, 0, 0, 0))  # white
    cmyk.paste((0, 0, 0, 255), (0, 0, 270, 530))  # left half black ink
    out = prepare_image(encode(cmyk, "JPEG", quality=95), full_resolution=True)
    image = pixels(out)
    assert image[:, :200].mean() < 20 and image[:, 340:].mean() > 235


def test_jpeg_exif_orientation_applied() -> None:
    stored = np.zeros((560, 700), dtype=np.uint8)  # stored landscape
    stored[:150, :150] = 255  # bright block at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # display = stored rotated 90 degrees clockwise
    data = encode(Image.fromarray(stored), "JPEG", quality=95, exif=exif.tobytes())
    out = prepare_image(data, full_resolution=True)
    assert out.original_size == (560, 700)  # portrait after rotation
    image = pixels(out)
    assert image[:150, -150:].mean() > 200  # the block moved to the top-right
    assert image[:150, :150].mean() < 30
    assert "EXIF orientation 6 applied" in out.notes
    assert b"Exif" not in out.png


# --- PIL and numpy sources ------------------------------------------------------------------


def test_pil_sources() -> None:
    card = gradient()
    out = prepare_image(Image.fromarray(card), full_resolution=True)
    assert out.source_kind == "pil" and np.array_equal(pixels(out), card)
    wide = Image.fromarray(np.tile(np.arange(0, 60000, 100, dtype=np.uint16), (520, 1)))
    assert wide.mode == "I;16"
    out16 = prepare_image(wide, full_resolution=True)
    assert out16.bit_depth == 16 and pixels(out16)[0, 0] == 0 and pixels(out16)[0, -1] == 255


@pytest.mark.parametrize(
    ("array", "bit_depth"),
    [
        (gradient(), 8),
        (gradient().astype(np.uint16) * 64 + 500, 16),
        (gradient().astype(np.float32) / 255.0 - 0.3, 32),
        (gradient().astype(np.float64) * 1000, 64),
    ],
    ids=["uint8", "uint16", "float32", "float64"],
)
def test_numpy_grayscale(array: np.ndarray, bit_depth: int) -> None:
    out = prepare_image(array, full_resolution=True)
    assert out.source_kind == "numpy" and out.bit_depth == bit_depth
    values = array.astype(float)
    expected = np.rint((values - values.min()) * 255 / (values.max() - values.min()))
    if array.dtype == np.uint8:
        expected = values  # 8-bit is taken as is, not stretched
    assert np.abs(pixels(out) - expected).max() <= 1


def test_numpy_color_and_bad_arrays() -> None:
    rgb = np.zeros((530, 530, 3), dtype=np.uint8)
    rgb[..., 1] = 255
    assert pixels(prepare_image(rgb))[0, 0] == 150
    rgba = np.dstack([rgb, np.zeros((530, 530), dtype=np.uint8)])
    assert pixels(prepare_image(rgba)).max() == 0  # fully transparent -> black
    nan = np.ones((600, 600))
    nan[3, 3] = np.nan
    with pytest.raises(ImageError, match="NaN"):
        prepare_image(nan, name="lateral_image")
    with pytest.raises(ImageError, match=r"shape \(2, 3, 4, 5\)"):
        prepare_image(np.zeros((2, 3, 4, 5)))
    with pytest.raises(ImageError, match="empty"):
        prepare_image(np.zeros((0, 10)))
    mask = np.zeros((530, 530), dtype=bool)
    mask[:, 265:] = True
    out = prepare_image(mask)
    assert out.bit_depth == 1 and pixels(out)[0, 0] == 0 and pixels(out)[0, -1] == 255


def test_lazy_pil_image_of_a_truncated_file() -> None:
    png = encode(
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (600, 600), np.uint8)), "PNG"
    )
    lazy = Image.open(io.BytesIO(png[: len(png) // 2]))  # opens; fails only when loaded
    with pytest.raises(ImageError, match="PIL image is truncated or corrupt"):
        prepare_image(lazy)


def test_describe_for_a_16bit_png() -> None:
    values = np.tile(np.linspace(0, 4095, 600).astype(np.uint16), (1200, 1))
    out = prepare_image(encode(Image.fromarray(values), "PNG"))
    text = out.describe()
    assert text.startswith("PNG 600x1200 16-bit, min-max scaled, ") and text.endswith(" KB")
    assert "resized" not in text and "inverted" not in text


# --- size ------------------------------------------------------------------------------


def test_size_options(rg1_path: Path, rg1_full: PreparedImage) -> None:
    assert rg1_full.size == RG1_SIZE and not rg1_full.resized
    assert prepare_image(rg1_path, shortest_side=None).size == RG1_SIZE
    small = prepare_image(rg1_path, shortest_side=MODEL_INPUT_SIDE)
    assert small.size == (518, 550)
    capped = prepare_image(rg1_path, shortest_side=None, max_side=1000)
    assert max(capped.size) == 1000 and capped.size[0] < capped.size[1]
    with pytest.raises(ImageError, match="below 518"):
        prepare_image(rg1_path, shortest_side=256)


def test_never_upscaled_and_landscape_kept() -> None:
    tiny = prepare_image(np.zeros((300, 400), dtype=np.uint8))
    assert tiny.size == (400, 300) and not tiny.resized
    assert any("upscale" in note for note in tiny.notes)
    landscape = prepare_image(np.zeros((1200, 2000), dtype=np.uint8))
    assert landscape.size == (1280, DEFAULT_SHORTEST_SIDE)


def test_round_trip_base64_png_pixels(rg1: PreparedImage) -> None:
    assert "\n" not in rg1.base64
    png = base64.b64decode(rg1.base64, validate=True)
    assert png == rg1.png and rg1.nbytes == len(png)
    decoded = Image.open(io.BytesIO(png))
    assert decoded.mode == "L" and decoded.size == rg1.size
    assert np.array_equal(np.asarray(decoded), pixels(rg1))
    assert set(png_chunks(png)) == {b"IHDR", b"IDAT", b"IEND"}


# --- bad input ----------------------------------------------------------------------


def test_bad_paths(tmp_path: Path) -> None:
    missing = tmp_path / "nope.dcm"
    with pytest.raises(ImageError, match="no such file") as info:
        prepare_image(missing, name="frontal_image")
    assert str(missing) in str(info.value)
    with pytest.raises(ImageError, match="is a directory"):
        prepare_image(tmp_path)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty \(0 bytes\)"):
        prepare_image(empty)


def test_text_and_other_formats(tmp_path: Path) -> None:
    text = tmp_path / "notes.png"  # the extension lies; the content decides
    text.write_text("Patient SECRET has a cough.\n")
    with pytest.raises(ImageError, match="text, not an image") as info:
        prepare_image(text)
    assert "SECRET" not in str(info.value)
    gif = encode(Image.fromarray(gradient()), "GIF")
    with pytest.raises(ImageError, match="GIF"):
        prepare_image(gif)
    with pytest.raises(ImageError, match="cannot read an image from a dict"):
        prepare_image({"not": "an image"})


def test_truncated_png_and_corrupt_jpeg(tmp_path: Path) -> None:
    png = encode(Image.fromarray(gradient()), "PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(png[: len(png) // 2])
    with pytest.raises(ImageError, match="PNG file is truncated or corrupt") as info:
        prepare_image(path)
    assert info.value.__cause__ is None and str(path) in str(info.value)
    jpeg = bytearray(encode(Image.fromarray(gradient()), "JPEG"))
    jpeg[200:600] = b"\x00" * 400  # wipe the tables
    with pytest.raises(ImageError, match="JPEG file is truncated or corrupt"):
        prepare_image(bytes(jpeg))


def zero_png(width: int, height: int) -> bytes:
    """A real PNG of zeros (1-bit grey), a few KB that inflate to width*height pixels."""
    return png_bomb(width, height, depth=1)


@pytest.mark.timeout(20)
def test_decompression_bombs_rejected_before_decoding() -> None:
    bomb = zero_png(20000, 20000)  # 400 megapixels
    assert len(bomb) < 200_000
    with pytest.raises(ImageError, match="decompression bomb"):
        prepare_image(bomb)
    # Between Pillow's warning and error thresholds: our limit, and no warning leaks.
    header_only = zero_png(10000, 10000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ImageError, match=r"10000x10000 = 100 million pixels"):
            prepare_image(header_only)
    assert not caught
    jpeg = bytearray(encode(Image.fromarray(gradient()), "JPEG"))
    sof = jpeg.index(b"\xff\xc0")
    for side in (60000, 10000):  # over Pillow's error threshold, and between its thresholds
        jpeg[sof + 5 : sof + 9] = struct.pack(">HH", side, side)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(ImageError, match="decompression bomb"):
                prepare_image(bytes(jpeg))
        assert not caught
    # The limit is configurable.
    small = np.zeros((600, 600), dtype=np.uint8)
    with pytest.raises(ImageError, match="max_pixels"):
        prepare_image(small, max_pixels=100_000)
    assert MAX_PIXELS >= 50_000_000


def small_rg1(transfer_syntax: str | None = None) -> bytes:
    """The NEMA radiograph with its real header, pixels reduced 8x (optionally compressed)."""
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("RG1_UNCR.dcm"))
    small = np.ascontiguousarray(ds.pixel_array[::8, ::8])
    ds.Rows, ds.Columns = small.shape
    ds.PixelData = small.tobytes()
    if transfer_syntax:
        ds.compress(transfer_syntax, small)
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def mutate(seed: bytes, rng: np.random.Generator) -> bytes:
    """Bit flips, truncation, deletion, insertion or a header overwrite."""
    data = bytearray(seed)
    operation = rng.integers(0, 5)
    if operation == 0:  # truncate
        return bytes(data[: int(rng.integers(0, len(data)))])
    if operation == 1:  # delete a run
        start = int(rng.integers(0, len(data)))
        del data[start : start + int(rng.integers(1, 64))]
    elif operation == 2:  # insert random bytes
        start = int(rng.integers(0, len(data)))
        data[start:start] = rng.bytes(int(rng.integers(1, 16)))
    elif operation == 3:  # a big number in the header (sizes, lengths)
        start = int(rng.integers(0, min(len(data), 1024)))
        data[start : start + 4] = rng.choice(
            [b"\xff\xff\xff\x7f", b"\x00\x00\x00\x00", b"\xff\xff"]
        )
    # ... and always a few bit flips, half of them in the first 1 KB (the header)
    for _ in range(int(rng.integers(1, 8))):
        if data:
            limit = len(data) if rng.random() < 0.5 else min(len(data), 1024)
            data[int(rng.integers(0, limit))] ^= 1 << int(rng.integers(0, 8))
    return bytes(data)


@pytest.mark.timeout(120)
@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom and Pillow warn about mangled values
def test_mutated_files_raise_only_image_error(tmp_path: Path) -> None:
    """2,000 mutated PNG, JPEG and DICOM files (the NEMA radiograph among them)."""
    from pydicom.uid import JPEG2000Lossless, RLELossless

    card = gradient(96, 80)
    exif = Image.Exif()
    exif[0x0112] = 6
    seeds = {
        "png-8": encode(Image.fromarray(card), "PNG"),
        "png-16": encode(Image.fromarray(card.astype(np.uint16) * 250), "PNG"),
        "png-rgba": encode(Image.fromarray(np.dstack([card] * 4)), "PNG"),
        "png-palette": encode(Image.fromarray(card).quantize(8), "PNG"),
        "jpeg": encode(Image.fromarray(card), "JPEG"),
        "jpeg-exif": encode(Image.fromarray(card).convert("RGB"), "JPEG", exif=exif.tobytes()),
        "dicom-12bit": write_dicom(
            tmp_path / "s.dcm", card.astype(np.uint16) * 16, WindowCenter=2000, WindowWidth=4000
        ).read_bytes(),
        "rg1": small_rg1(),
        "rg1-j2k": small_rg1(JPEG2000Lossless),
        "rg1-rle": small_rg1(RLELossless),
    }
    rng = np.random.default_rng(20240601)
    outcomes: dict[str, int] = {"decoded": 0, "rejected": 0}
    for _ in range(200):
        for seed in seeds.values():
            try:
                prepare_image(mutate(seed, rng), shortest_side=None)
                outcomes["decoded"] += 1
            except ImageError as exc:  # anything else fails the test
                assert str(exc) and exc.__cause__ is None
                outcomes["rejected"] += 1
    assert sum(outcomes.values()) == 2000
    assert outcomes["rejected"] > 500 and outcomes["decoded"] > 100  # both paths exercised


def test_dicom_voi_lut_sequence_preferred_over_window(tmp_path: Path) -> None:
    stored = np.tile(np.arange(0, 4096, 8, dtype=np.uint16), (520, 1))
    curve = np.rint(65535 * np.sqrt(np.arange(4096) / 4095)).astype(np.uint16)
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.add_new("LUTData", "OW", curve.astype("<u2").tobytes())
    path = write_dicom(
        tmp_path / "lut.dcm",
        stored,
        VOILUTSequence=[item],
        WindowCenter=100,  # a window that would saturate nearly everything
        WindowWidth=10,
    )
    out = prepare_image(path, full_resolution=True)
    assert out.windowing == "VOI LUT" and "VOI LUT from the file" in out.notes
    expected = curve[stored].astype(float) * 255 / 65535
    assert np.abs(pixels(out) - expected).max() <= 1


def test_dicom_window_that_saturates_everything_falls_back(tmp_path: Path) -> None:
    stored = np.tile(np.arange(0, 4096, 8, dtype=np.uint16), (520, 1))
    path = write_dicom(tmp_path / "badwin.dcm", stored, WindowCenter=60000, WindowWidth=10)
    out = prepare_image(path, full_resolution=True)
    assert out.windowing == "percentile window"
    row = pixels(out)[0].astype(int)
    assert row[0] == 0 and row[-1] == 255 and np.all(np.diff(row) >= 0)


def test_rgb_dicom_to_grayscale(tmp_path: Path) -> None:
    rgb = np.zeros((530, 540, 3), dtype=np.uint8)
    rgb[:, :270] = (0, 255, 0)
    rgb[:, 270:] = (255, 255, 255)
    path = write_dicom(
        tmp_path / "rgb.dcm",
        rgb[..., 0],
        photometric="RGB",
        bits_stored=8,
        SamplesPerPixel=3,
        PlanarConfiguration=0,
        BitsAllocated=8,
        HighBit=7,
        PixelData=rgb.tobytes(),
    )
    out = prepare_image(path, full_resolution=True)
    assert out.size == (540, 530)
    assert pixels(out)[0, 0] == 150 and pixels(out)[0, -1] == 255


def test_png_whose_pixel_stream_ends_early_is_refused() -> None:
    """Pillow decodes such a file with black rows and no error; we refuse it."""
    width, height, rows_present = 64, 400, 40
    rows = b"".join(
        b"\x00" + bytes([(r * 7 + c) % 256 for c in range(width)]) for r in range(rows_present)
    )
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    short = build_png([(b"IHDR", ihdr), (b"IDAT", zlib.compress(rows)), (b"IEND", b"")])
    with pytest.raises(ImageError, match="pixel data ends early"):
        prepare_image(short)

    complete = rows * (height // rows_present)
    whole = build_png([(b"IHDR", ihdr), (b"IDAT", zlib.compress(complete)), (b"IEND", b"")])
    assert prepare_image(whole, full_resolution=True).size == (width, height)
