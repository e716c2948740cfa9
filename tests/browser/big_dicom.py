"""A real ~25 MB DICOM: the NEMA chest radiograph upsampled, 16 bits per pixel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_big_dicom(path: Path, width: int = 3520, height: int = 3600) -> tuple[int, int]:
    """Write RG1_UNCR resampled to ``width`` x ``height`` (uncompressed, 16-bit) to ``path``.

    The default size makes a file of about 25 MB, past Tornado's 10 MiB
    websocket message limit. Returns (width, height).
    """
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import ExplicitVRLittleEndian

    ds = pydicom.dcmread(get_testdata_file("RG1_UNCR.dcm"))
    pixels = ds.pixel_array.astype(np.uint16)
    big = Image.fromarray(pixels.astype(np.int32), mode="I").resize(
        (width, height), Image.Resampling.BILINEAR
    )
    array = np.clip(np.asarray(big), 0, 2 ** int(ds.BitsStored) - 1).astype(np.uint16)
    ds.Rows, ds.Columns = height, width
    ds.PixelData = array.tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    return width, height
