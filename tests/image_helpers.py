"""Test images made with pydicom and Pillow, shared by the image test modules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid


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
