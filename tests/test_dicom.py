"""images.dicom: the VOI step equals pydicom's apply_voi_lut (LINEAR, LINEAR_EXACT,
SIGMOID) on the real NEMA radiograph and on synthetic DICOM, and what the module
tells about a file (window, spacing, burned-in annotation, decoder hints)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from image_helpers import write_dicom
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from cxr_widgets.images import load_pixels, prepare_image
from cxr_widgets.images.dicom import windowing

FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")


def pydicom_display(ds: pydicom.Dataset, function: str) -> np.ndarray:
    """pydicom's windowing of the modality values, scaled to 0..255 floats."""
    ds.VOILUTFunction = function
    values = apply_modality_lut(ds.pixel_array, ds)
    out = apply_voi_lut(values, ds, index=0)
    if ds.get("PixelRepresentation", 0) == 0:
        y_min, y_max = 0.0, 2.0 ** int(ds.BitsStored) - 1
    else:
        y_min, y_max = -(2.0 ** (int(ds.BitsStored) - 1)), 2.0 ** (int(ds.BitsStored) - 1) - 1
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        y_min, y_max = y_min * slope + intercept, y_max * slope + intercept
    return (np.asarray(out, dtype=np.float64) - y_min) * (255.0 / (y_max - y_min))


def synthetic(tmp_path: Path, signed: bool) -> Path:
    rng = np.random.default_rng(7)
    if signed:
        stored = rng.integers(-2048, 2047, size=(96, 80), dtype=np.int16)
        path = write_dicom(
            tmp_path / "signed.dcm",
            stored,
            PixelRepresentation=1,
            PixelData=stored.astype("<i2").tobytes(),
            RescaleSlope=0.5,
            RescaleIntercept=-100,
            WindowCenter=-150,
            WindowWidth=900,
        )
    else:
        stored = rng.integers(0, 4095, size=(96, 80), dtype=np.uint16)
        path = write_dicom(
            tmp_path / "unsigned.dcm",
            stored,
            RescaleSlope=1,
            RescaleIntercept=-1024,
            WindowCenter=1000,
            WindowWidth=1500,
        )
    return path


@pytest.mark.parametrize("function", FUNCTIONS)
def test_windowing_equals_pydicom_on_rg1(rg1_path: Path, function: str) -> None:
    ds = pydicom.dcmread(rg1_path)
    expected = pydicom_display(ds, function)
    values = load_pixels(rg1_path).values.astype(np.float32)
    ours = windowing(values, float(ds.WindowCenter), float(ds.WindowWidth), function)
    assert ours.shape == expected.shape
    assert np.abs(ours - expected).max() < 0.01  # float32 against pydicom's float64
    assert ours.min() >= 0.0 and ours.max() <= 255.0


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
@pytest.mark.parametrize("function", FUNCTIONS)
def test_windowing_equals_pydicom_on_synthetic(tmp_path: Path, function: str, signed: bool) -> None:
    path = synthetic(tmp_path, signed)
    ds = pydicom.dcmread(path)
    expected = pydicom_display(ds, function)
    pixels = load_pixels(path)
    assert np.allclose(pixels.values, apply_modality_lut(ds.pixel_array, ds))
    center, width = pixels.window
    ours = windowing(pixels.values.astype(np.float32), center, width, function)
    assert np.abs(ours - expected).max() < 0.01
    # a window that saturates part of the image reaches both ends
    assert (ours.min() < 1 and ours.max() > 254) or function == "SIGMOID"


@pytest.mark.parametrize("function", FUNCTIONS)
def test_prepared_pixels_are_pydicoms_window_inverted(
    tmp_path: Path, rg1_path: Path, function: str
) -> None:
    """The whole pipeline: prepare_image at full size is pydicom's display, MONOCHROME1
    inverted, rounded to 8 bits (off by one grey level at most, at .5 boundaries)."""
    ds = pydicom.dcmread(rg1_path)
    ds.VOILUTFunction = function
    path = tmp_path / f"rg1-{function}.dcm"
    ds.save_as(path)
    expected = np.clip(np.rint(255.0 - pydicom_display(ds, function)), 0, 255)
    prepared = prepare_image(path, full_resolution=True)
    assert prepared.windowing == "windowed" and prepared.inverted
    assert f"{function})" in " ".join(prepared.notes)
    ours = np.asarray(prepared.image, dtype=np.float64)
    difference = np.abs(ours - expected)
    assert difference.max() <= 1.0
    assert (difference > 0).mean() < 0.001


def test_12bit_jpeg_dicom_names_the_decoder_to_install() -> None:
    """pydicom's own 12-bit JPEG Extended file: Pillow cannot decode 12-bit JPEG."""
    from pydicom.data import get_testdata_file
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGExtended12Bit

    from cxr_widgets.errors import ImageError

    path = get_testdata_file("JPEG-lossy.dcm")
    assert path is not None and pydicom.dcmread(path).BitsStored == 12
    plugins = get_decoder(JPEGExtended12Bit).available_plugins
    if set(plugins) - {"pillow"}:
        assert load_pixels(path).bit_depth == 12  # a 12-bit decoder is installed: it works
        return
    with pytest.raises(ImageError) as caught:
        prepare_image(path, name="frontal_image")
    message = str(caught.value)
    assert "12-bit JPEG" in message and "reads 8-bit JPEG only" in message
    assert "pip install pylibjpeg pylibjpeg-libjpeg" in message
    assert "python-gdcm" in message


def test_burned_in_annotation_reaches_the_prepared_image(tmp_path: Path) -> None:
    array = (np.arange(600 * 600) % 4096).astype(np.uint16).reshape(600, 600)
    yes = prepare_image(write_dicom(tmp_path / "y.dcm", array, BurnedInAnnotation="YES"))
    assert yes.burned_in_annotation is True
    assert "burned-in annotation" in yes.describe()
    assert any("BurnedInAnnotation = YES" in note for note in yes.notes)
    no = prepare_image(write_dicom(tmp_path / "n.dcm", array, BurnedInAnnotation="NO"))
    assert no.burned_in_annotation is False and "burned-in" not in no.describe()
    assert prepare_image(write_dicom(tmp_path / "u.dcm", array)).burned_in_annotation is None


def test_huge_rescale_intercept_stays_float(tmp_path: Path) -> None:
    """Found by fuzzing: an integer intercept beyond int32 must not overflow."""
    stored = (np.arange(600 * 600) % 4096).astype(np.uint16).reshape(600, 600)
    path = write_dicom(tmp_path / "big.dcm", stored, RescaleSlope=1, RescaleIntercept=3e12)
    pixels = load_pixels(path)
    assert pixels.values.dtype == np.float32
    assert pixels.value_range[0] == pytest.approx(3e12, rel=1e-6)
    assert prepare_image(pixels).size == (600, 600)
