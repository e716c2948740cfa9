"""DICOM -> :class:`PixelData` (modality values), and the DICOM VOI to 8 bits.

Modality LUT or rescale slope/intercept gives the modality values; the file's VOI
LUT, else its first window (PS3.3 C.11.2.1.2: LINEAR, LINEAR_EXACT, SIGMOID),
else a 0.5-99.5 percentile window maps them to 8 bits for the model.
MONOCHROME1 is inverted at that step so that bone is bright, as the model expects.
Patient tags are never read into messages or metadata.
"""

from __future__ import annotations

import io
import re
from typing import Any

import numpy as np

from ..errors import ImageError
from .pixels import Display, PixelData, spacing_from
from .raster import minmax_to_uint8, to_uint8
from .source import bomb

#: Percentiles of the fallback window for DICOM files that carry no VOI.
FALLBACK_PERCENTILES = (0.5, 99.5)

#: The VOI elements kept for windowing (technical, never patient data).
_VOI_KEYWORDS = (
    "VOILUTSequence",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "BitsStored",
    "BitsAllocated",
    "PixelRepresentation",
    "PhotometricInterpretation",
)


def load_dicom_bytes(data: bytes, label: str, max_pixels: int) -> PixelData:
    """Decode a DICOM file's bytes."""
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
    return from_dataset(dataset, label, max_pixels, "dicom")


def from_dataset(ds: Any, label: str, max_pixels: int, kind: str) -> PixelData:
    """A pydicom Dataset's modality values and technical metadata."""
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
        raise bomb(label, "DICOM file", columns, rows, max(frames, 1) * max(samples, 1), max_pixels)
    if frames > 1:
        raise ImageError(
            f"{label}: a multi-frame DICOM ({frames} frames); a chest X-ray study needs one "
            "image. Pick a frame: pass pydicom.dcmread(path).pixel_array[i] (or split the file).",
            source=label,
        )
    ds = _with_transfer_syntax(ds)
    check_decoder(ds, label)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    from pydicom.pixels import pixel_array

    array = pixel_array(ds)  # unlike ds.pixel_array, leaves no cached copy on the dataset
    bit_depth = int(
        ds.get("BitsStored", 0) or ds.get("BitsAllocated", 0) or array.dtype.itemsize * 8
    )
    meta = safe_metadata(ds, photometric)
    burned_in = burned_in_annotation(ds)
    spacing, spacing_source = pixel_spacing(ds)
    common: dict[str, Any] = {
        "source_kind": kind,
        "bit_depth": bit_depth,
        "spacing": spacing,
        "spacing_source": spacing_source,
        "burned_in_annotation": burned_in,
        "safe_metadata": meta,
    }
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        gray, notes = _color_to_gray(ds, array, photometric)
        return PixelData(values=gray, notes=tuple(notes), display=Display("direct"), **common)
    if array.ndim != 2:
        raise ValueError(f"unexpected pixel array shape {array.shape}")
    values, notes = modality_values(array, ds)
    center, width, _function = file_window(ds)
    window = (center, width) if center is not None and width is not None else None
    return PixelData(
        values=values,
        invert=photometric == "MONOCHROME1",
        window=window,
        notes=tuple(notes),
        display=Display("voi", voi=_voi_subset(ds)),
        **common,
    )


def modality_values(array: np.ndarray, ds: Any) -> tuple[np.ndarray, list[str]]:
    """Stored values -> modality values (Modality LUT, else rescale slope/intercept).

    Integers stay integers when the rescale keeps them so (slope 1, whole
    intercept); otherwise float32 (half the memory of pydicom's float64).
    """
    if ds.get("ModalityLUTSequence"):
        from pydicom.pixels import apply_modality_lut

        return np.asarray(apply_modality_lut(array, ds)), ["modality LUT applied"]
    slope = first_number(ds.get("RescaleSlope"))
    intercept = first_number(ds.get("RescaleIntercept")) or 0.0
    slope = slope or 1.0  # absent or 0 (invalid): identity
    if slope == 1.0 and intercept == 0.0:
        return array, []
    note = f"rescale slope {slope:g} intercept {intercept:g}"
    if (
        slope == 1.0
        and intercept.is_integer()
        and abs(intercept) < 2**24  # exact in float32, as the 8-bit step computes
        and array.dtype.kind in "ui"
        and array.dtype.itemsize <= 2
    ):
        return array.astype(np.int32) + np.int32(intercept), [note]
    values = array.astype(np.float32)
    values *= np.float32(slope)
    values += np.float32(intercept)
    return values, [note]


def safe_metadata(ds: Any, photometric: str) -> dict[str, Any]:
    """Technical fields only: never names, ids, dates or free text."""
    view = ds.get("ViewPosition")
    modality = ds.get("Modality")
    return {
        "modality": str(modality).strip() or None if modality is not None else None,
        "view_position": str(view).strip() or None if view is not None else None,
        "bits_allocated": int(ds.get("BitsAllocated", 0) or 0) or None,
        "photometric_interpretation": photometric,
        "voi_lut_function": file_window(ds)[2],
    }


def burned_in_annotation(ds: Any) -> bool | None:
    """BurnedInAnnotation (0028,0301): True for YES, False for NO, None if absent."""
    value = ds.get("BurnedInAnnotation")
    if value is None:
        return None
    text = str(value).strip().upper()
    return True if text == "YES" else False if text == "NO" else None


def pixel_spacing(ds: Any) -> tuple[tuple[float, float] | None, str | None]:
    """Spacing in mm ``(row, column)``: PixelSpacing, else ImagerPixelSpacing (the
    detector plane, for projection radiographs); 0 or malformed means unknown."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        spacing = spacing_from(ds.get(keyword))
        if spacing is not None:
            return spacing, keyword
    return None, None


def _voi_subset(ds: Any) -> Any:
    """The VOI elements alone, with the transfer syntax (an OW LUT needs its byte order)."""
    from pydicom.dataset import Dataset, FileMetaDataset

    subset = Dataset()
    subset.file_meta = FileMetaDataset()
    subset.file_meta.TransferSyntaxUID = ds.file_meta.TransferSyntaxUID
    for keyword in _VOI_KEYWORDS:
        if keyword in ds:
            subset[keyword] = ds[keyword]
    return subset


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


def check_decoder(ds: Any, label: str) -> None:
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
    _check_12bit_jpeg(ds, syntax, decoder, label)


def _check_12bit_jpeg(ds: Any, syntax: Any, decoder: Any, label: str) -> None:
    """Pillow reads only 8-bit JPEG: a 12-bit JPEG DICOM needs another plugin."""
    from pydicom import uid

    bits = int(ds.get("BitsStored", 8) or 8)
    if syntax != uid.JPEGExtended12Bit or bits <= 8:
        return
    others = [name for name in decoder.available_plugins if name != "pillow"]
    if others:
        return
    missing = [m for m in decoder.missing_dependencies if not m.startswith("pillow")]
    raise ImageError(
        f"{label}: the DICOM pixel data is a {bits}-bit JPEG ({_syntax_name(syntax)}); "
        "Pillow, the only decoder installed for it, reads 8-bit JPEG only. Install one "
        f"that reads 12-bit JPEG: {_install_hint(missing)}.",
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


# --- VOI: modality values -> 8 bits ---------------------------------------------


def voi_to_uint8(values: np.ndarray, voi: Any, invert: bool) -> tuple[np.ndarray, str, str]:
    """The DICOM display pipeline to 8 bits: returns ``(pixels, windowing, note)``."""
    floats = values if values.dtype == np.float32 else values.astype(np.float32)
    scaled, windowing, note = apply_voi(floats, voi)
    if invert:
        np.subtract(255.0, scaled, out=scaled)
    return to_uint8(scaled), windowing, note


def apply_voi(values: np.ndarray, ds: Any) -> tuple[np.ndarray, str, str]:
    """VOI from the file (LUT or window), else a percentile window; returns 0..255 floats.

    ``values`` is not changed.
    """
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
    center, width, function = file_window(ds)
    if center is not None and width is not None:
        scaled = windowing(values, center, width, function)
        if _has_contrast(scaled):
            return (
                scaled,
                "windowed",
                f"VOI LUT window {center:g}/{width:g} (center/width, {function})",
            )
    low_p, high_p = FALLBACK_PERCENTILES
    lo, hi = percentile_window(values)
    scaled = np.subtract(values, lo, dtype=values.dtype)
    scaled *= 255.0 / (hi - lo) if hi > lo else 0.0
    np.clip(scaled, 0, 255, out=scaled)
    return (
        scaled,
        "percentile window",
        f"no usable window in the file: percentile window {low_p:g}-{high_p:g}% ({lo:g}..{hi:g})",
    )


def percentile_window(values: np.ndarray) -> tuple[float, float]:
    """``(low, high)`` of :data:`FALLBACK_PERCENTILES` on a sample; min/max if flat."""
    low_p, high_p = FALLBACK_PERCENTILES
    sample = values[:: max(1, values.shape[0] // 512), :: max(1, values.shape[1] // 512)]
    lo, hi = (float(v) for v in np.percentile(sample, [low_p, high_p]))
    if hi <= lo:
        lo, hi = float(values.min()), float(values.max())
    return lo, hi


def file_window(ds: Any) -> tuple[float | None, float | None, str]:
    """The first ``(center, width, function)`` in the file; (None, None, f) if unusable."""
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    center = first_number(ds.get("WindowCenter"))
    width = first_number(ds.get("WindowWidth"))
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        function = "LINEAR"
    if width is not None and width <= (1 if function == "LINEAR" else 0):
        return None, None, function
    return center, width, function


def first_number(value: Any) -> float | None:
    """The first value of a (multi-valued) DICOM number, None if absent or not finite."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def windowing(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 windowing straight to 0..255 (``values`` is not changed)."""
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


def _color_to_gray(ds: Any, array: np.ndarray, photometric: str) -> tuple[np.ndarray, list[str]]:
    notes = []
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        array = apply_color_lut(array, ds)
        notes.append("palette colour expanded")
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"unexpected pixel array shape {array.shape}")
    rgb = array.astype(np.float64)
    luma = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    gray, note = minmax_to_uint8(luma) if array.dtype != np.uint8 else (to_uint8(luma), "")
    notes.append(f"{photometric} converted to grayscale")
    if note:
        notes.append(note)
    return gray, notes
