"""Any image source -> :class:`PixelData`: dispatch by type and content."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from PIL import Image

from ..errors import ImageError
from ..study import describe_source
from .dicom import from_dataset, load_dicom_bytes
from .pixels import PixelData
from .raster import from_array, from_pil, load_raster_bytes
from .sniff import detect_format, what_is
from .source import MAX_PIXELS, guard, read_path


def load_pixels(source: Any, *, name: str | None = None, max_pixels: int = MAX_PIXELS) -> PixelData:
    """The image's own values (DICOM: after the modality LUT / rescale) for ``source``.

    ``source`` is anything :func:`~cxr_widgets.images.prepare_image` takes: a path,
    bytes, a PIL image, a numpy array or a pydicom Dataset (a :class:`PixelData` is
    returned as it is). The same checks apply: regular files only, the header
    before the body, ``max_pixels`` before decoding. ``name`` (for example
    ``"frontal_image"``) appears in error messages.

    Raises :class:`~cxr_widgets.errors.ImageError` for anything that cannot be read.
    """
    if isinstance(source, PixelData):
        return source
    label = describe_source(source)
    if name:
        label = f"{name} ({label})"
    if not isinstance(max_pixels, int) or isinstance(max_pixels, bool) or max_pixels < 1:
        raise ImageError(f"{label}: max_pixels must be a positive int", source=label)
    return _load(source, label, max_pixels)


def _load(source: Any, label: str, max_pixels: int) -> PixelData:
    if isinstance(source, (str, os.PathLike)):
        return _load_bytes(read_path(source, label, max_pixels), label, max_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _load_bytes(bytes(source), label, max_pixels)
    if isinstance(source, Image.Image):
        return guard(label, "PIL image", lambda: from_pil(source, label, max_pixels, "pil"))
    if isinstance(source, np.ndarray):
        return guard(label, "array", lambda: from_array(source, label, max_pixels))
    module = type(source).__module__ or ""
    if module.startswith("pydicom") and hasattr(source, "dir"):
        return guard(
            label,
            "DICOM dataset",
            lambda: from_dataset(source, label, max_pixels, "dicom-dataset"),
        )
    raise ImageError(
        f"{label}: cannot read an image from a {type(source).__name__}; give a path, bytes, "
        "a PIL image, a numpy array or a pydicom Dataset.",
        source=label,
    )


def _load_bytes(data: bytes, label: str, max_pixels: int) -> PixelData:
    kind = detect_format(data)
    if kind == "unknown":
        raise ImageError(
            f"{label} is {what_is(data)}. Give a PNG, JPEG or DICOM file "
            "(convert other formats to PNG first).",
            source=label,
        )
    if kind == "dicom":
        return guard(label, "DICOM file", lambda: load_dicom_bytes(data, label, max_pixels))
    return guard(
        label, f"{kind.upper()} file", lambda: load_raster_bytes(data, kind, label, max_pixels)
    )
