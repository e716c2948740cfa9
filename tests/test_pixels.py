"""load_pixels / PixelData: the image's own values for the viewer, overviews, regions,
their encoding, and prepare_image reusing them."""

from __future__ import annotations

import io
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from image_helpers import write_dicom
from PIL import Image
from pydicom.pixels import apply_modality_lut

from cxr_widgets.errors import ImageError
from cxr_widgets.images import (
    PixelData,
    decode_uint16,
    encode_uint16,
    load_pixels,
    prepare_image,
)

CODECS = ("zlib-delta", "zlib-zigzag", "zlib", "png16")


@pytest.fixture(scope="module")
def rg1_pixels(rg1_path: Path) -> PixelData:
    return load_pixels(rg1_path)


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_rg1_values_equal_pydicom_modality_values(rg1_path: Path, rg1_pixels: PixelData) -> None:
    ds = pydicom.dcmread(rg1_path)
    expected = apply_modality_lut(ds.pixel_array, ds)
    assert rg1_pixels.values.shape == expected.shape == (1955, 1841)
    for y, x in [(0, 0), (977, 920), (1954, 1840), (400, 1500), (1700, 200)]:
        assert rg1_pixels.values[y, x] == expected[y, x]
    assert np.array_equal(rg1_pixels.values, expected)
    assert rg1_pixels.value_range == (float(expected.min()), float(expected.max()))


def test_rg1_metadata(rg1_pixels: PixelData) -> None:
    assert rg1_pixels.invert is True  # MONOCHROME1, not yet inverted in values
    assert rg1_pixels.window == (15000.0, 30000.0)
    assert rg1_pixels.spacing is None  # PixelSpacing is 0\0: unknown
    assert rg1_pixels.bit_depth == 15
    assert rg1_pixels.burned_in_annotation is None
    meta = dict(rg1_pixels.safe_metadata)
    assert meta["modality"] == "CR"
    assert meta["view_position"] == "PA"
    assert (meta["rows"], meta["columns"]) == (1955, 1841)
    assert meta["bits_stored"] == 15
    assert meta["photometric_interpretation"] == "MONOCHROME1"
    assert meta["pixel_spacing"] is None
    assert not any("patient" in key.lower() for key in meta)
    with pytest.raises(ValueError):
        rg1_pixels.values[0, 0] = 1  # read-only: prepared data is never mutated


def test_no_patient_tag_in_metadata_or_repr(tmp_path: Path) -> None:
    array = np.arange(64 * 48, dtype=np.uint16).reshape(48, 64)
    path = write_dicom(
        tmp_path / "p.dcm",
        array,
        PatientID="ID-4242",
        PatientBirthDate="19700101",
        InstitutionName="General Hospital",
    )
    pixels = load_pixels(path)
    text = repr(pixels) + repr(dict(pixels.safe_metadata))
    for secret in ("SECRET", "PATIENT", "4242", "1970", "Hospital"):
        assert secret not in text


def test_synthetic_dicom_spacing_rescale_window_burned_in(tmp_path: Path) -> None:
    stored = np.arange(50 * 40, dtype=np.uint16).reshape(50, 40)
    path = write_dicom(
        tmp_path / "s.dcm",
        stored,
        PixelSpacing=[0.139, 0.143],
        ImagerPixelSpacing=[0.2, 0.2],
        RescaleSlope=2,
        RescaleIntercept=-1024,
        WindowCenter=500,
        WindowWidth=1200,
        BurnedInAnnotation="YES",
        ViewPosition="AP",
    )
    pixels = load_pixels(path)
    assert pixels.spacing == (0.139, 0.143)
    assert pixels.spacing_source == "PixelSpacing"
    assert pixels.window == (500.0, 1200.0)
    assert pixels.invert is False
    assert pixels.burned_in_annotation is True
    assert pixels.safe_metadata["view_position"] == "AP"
    assert np.array_equal(pixels.values, stored.astype(np.float32) * 2 - 1024)
    assert prepare_image(path).burned_in_annotation is True


def test_imager_pixel_spacing_used_when_pixel_spacing_is_zero(tmp_path: Path) -> None:
    stored = np.zeros((20, 30), dtype=np.uint16)
    stored[5:10, 5:10] = 100
    path = write_dicom(
        tmp_path / "i.dcm",
        stored,
        PixelSpacing=[0, 0],
        ImagerPixelSpacing=[0.15, 0.16],
        BurnedInAnnotation="NO",
    )
    pixels = load_pixels(path)
    assert pixels.spacing == (0.15, 0.16)
    assert pixels.spacing_source == "ImagerPixelSpacing"
    assert pixels.burned_in_annotation is False
    assert pixels.values.dtype == np.uint16  # no rescale: stored values as they are


def test_16bit_png_keeps_its_values() -> None:
    array = (np.arange(300 * 200, dtype=np.uint32).reshape(200, 300) % 4096 + 1000).astype(
        np.uint16
    )
    pixels = load_pixels(png_bytes(array))
    assert pixels.source_kind == "png"
    assert pixels.bit_depth == 16
    assert pixels.window is None and pixels.spacing is None and pixels.invert is False
    assert np.array_equal(pixels.values, array)
    assert pixels.value_range == (1000.0, 5095.0)
    assert pixels.value_mapping() == (1000.0, 1.0)
    codes = pixels.to_uint16()
    assert np.array_equal(codes.astype(np.int64) + 1000, array)


def test_8bit_png_and_prepare_from_pixels_equal_prepare_from_file(tmp_path: Path) -> None:
    array = np.tile(np.arange(256, dtype=np.uint8), (600, 3))
    data = png_bytes(array)
    pixels = load_pixels(data)
    assert pixels.values.dtype == np.uint8 and np.array_equal(pixels.values, array)
    assert prepare_image(pixels).png == prepare_image(data).png


def test_prepare_reuses_pixel_data(rg1_path: Path, rg1_pixels: PixelData) -> None:
    from_file = prepare_image(rg1_path)
    from_pixels = prepare_image(rg1_pixels)
    assert from_pixels.png == from_file.png
    assert from_pixels.inverted and from_pixels.windowing == from_file.windowing
    assert from_pixels.notes == from_file.notes
    assert not rg1_pixels.values.flags.writeable  # untouched by prepare


def test_constant_image() -> None:
    pixels = load_pixels(np.full((100, 120), 7, dtype=np.uint16))
    assert pixels.is_constant and pixels.value_range == (7.0, 7.0)
    overview, scale = pixels.overview(50)
    assert overview.shape == (42, 50) and scale == pytest.approx(50 / 120)
    assert (overview == 0).all()  # code 0 stands for the offset, 7
    assert pixels.value_mapping() == (7.0, 1.0)
    center, width = pixels.default_window()
    assert center == 7.0 and width >= 1.0
    prepared = prepare_image(pixels)
    assert any("blank" in note for note in prepared.notes)


def test_strip_1_by_4000_loads_but_is_refused_for_the_model() -> None:
    strip = (np.arange(4000, dtype=np.uint16) % 1000).reshape(4000, 1)
    pixels = load_pixels(strip)
    assert pixels.size == (1, 4000)
    overview, scale = pixels.overview(1024)
    assert overview.shape == (1024, 1) and scale == pytest.approx(1024 / 4000)
    pixels_region, region_scale, box = pixels.region(0, 100, 1, 50, 1024)
    assert region_scale == 1.0 and box == (0, 100, 1, 50)
    assert np.array_equal(pixels_region[:, 0], strip[100:150, 0])
    with pytest.raises(ImageError, match=r"1x4000 pixels .*central 1x1 square"):
        prepare_image(strip)


def test_overview_and_region(rg1_pixels: PixelData) -> None:
    overview, scale = rg1_pixels.overview(1024)
    assert max(overview.shape) == 1024 and overview.dtype == np.uint16
    assert scale == pytest.approx(1024 / 1955)
    offset, step = rg1_pixels.value_mapping()
    assert step == 1.0
    # a box average stays within the image's values, and matches a block mean
    assert overview.min() >= 0 and offset + overview.max() <= rg1_pixels.value_range[1]
    # full-resolution detail: a region at scale 1 is the exact modality values
    detail, detail_scale, box = rg1_pixels.region(900, 1000, 256, 128, 512)
    assert detail_scale == 1.0 and box == (900, 1000, 256, 128)
    assert np.array_equal(
        detail.astype(np.int64) + int(offset), rg1_pixels.values[1000:1128, 900:1156]
    )
    # reduced region: each output pixel is the mean of the block it covers
    half, half_scale, _ = rg1_pixels.region(0, 0, 512, 512, 256)
    assert half_scale == 0.5 and half.shape == (256, 256)
    block = rg1_pixels.values[200:202, 300:302].astype(np.float64).mean() - offset
    assert abs(int(half[100, 150]) - block) <= 0.5
    # clipped to the image
    _, _, clipped = rg1_pixels.region(1800, 1900, 500, 500, 64)
    assert clipped == (1800, 1900, 41, 55)
    with pytest.raises(ValueError, match="outside"):
        rg1_pixels.region(5000, 0, 10, 10, 64)


def test_float_values_map_to_16_bits() -> None:
    values = np.linspace(-1.5, 2.5, 400 * 300, dtype=np.float32).reshape(300, 400)
    pixels = load_pixels(values)
    offset, step = pixels.value_mapping()
    assert offset == pytest.approx(-1.5) and step == pytest.approx(4.0 / 65535)
    codes = pixels.to_uint16()
    assert codes.min() == 0 and codes.max() == 65535
    assert np.abs(offset + step * codes - values).max() <= step / 2 + 1e-6


@pytest.mark.parametrize("codec", CODECS)
def test_encoding_round_trip(rg1_pixels: PixelData, codec: str) -> None:
    overview, _ = rg1_pixels.overview(512)
    data = rg1_pixels.encode(overview, codec)
    assert np.array_equal(decode_uint16(data, overview.shape, codec), overview)
    assert len(data) < overview.nbytes  # it compresses


@pytest.mark.parametrize("codec", ["zlib-delta", "zlib-zigzag"])
def test_zlib_delta_wraps_modulo_65536(codec: str) -> None:
    extremes = np.array(
        [[0, 65535, 0, 1, 65535, 32768, 32767, 0], [65535, 0, 65535, 65534, 2, 32767, 32768, 1]],
        dtype=np.uint16,
    )
    data = encode_uint16(extremes, codec)  # type: ignore[arg-type]
    assert np.array_equal(decode_uint16(data, extremes.shape, codec), extremes)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="codec"):
        encode_uint16(extremes, "jpeg")  # type: ignore[arg-type]


def test_zigzag_differences_leave_the_high_bytes_of_an_8_bit_image_empty(
    rg1_pixels: PixelData,
) -> None:
    """Steps down as well as up are small codes, so the zigzag form is the smaller one."""
    eight_bit = (rg1_pixels.overview(512)[0] >> 4).astype(np.uint16)  # 0..255, noisy
    sizes = {c: len(encode_uint16(eight_bit, c)) for c in ("zlib-delta", "zlib-zigzag")}
    assert sizes["zlib-zigzag"] < 0.85 * sizes["zlib-delta"]
    raw = zlib.decompress(encode_uint16(eight_bit, "zlib-zigzag"))
    high = np.frombuffer(raw, dtype=np.uint8)[eight_bit.size :]
    assert np.count_nonzero(high) < 0.05 * high.size  # |steps| < 128 fit the low byte


def test_load_pixels_refuses_what_prepare_refuses(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ImageError, match="text, not an image"):
        load_pixels(tmp_path / "notes.txt")
    with pytest.raises(ImageError, match="max_pixels"):
        load_pixels(np.zeros((100, 100), dtype=np.uint8), max_pixels=1000)
    with pytest.raises(ImageError, match="directory"):
        load_pixels(tmp_path)
