"""Test images made with pydicom and Pillow, shared by the image test modules."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from cxr_widgets.images import build_png


def png_bomb(width: int, height: int, depth: int = 1) -> bytes:
    """A valid greyscale PNG of zeros: a few KB that inflate to width x height pixels."""
    compressor = zlib.compressobj(9)
    row = bytes(1 + (width * depth + 7) // 8)  # filter byte + grey samples
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, depth, 0, 0, 0, 0)
    return build_png([(b"IHDR", header), (b"IDAT", idat), (b"IEND", b"")])


def write_dicom(
    path: Path,
    array: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    frames: int = 1,
    **elements,
) -> Path:
    """A minimal secondary-capture DICOM file written with pydicom."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = elements.pop("transfer_syntax", ExplicitVRLittleEndian)
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = "SECRET^PATIENT"
    ds.Modality = "OT"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = array.shape[-2:]
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    for key, value in elements.items():
        setattr(ds, key, value)
    if "PixelData" not in elements:
        ds.PixelData = array.astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path
