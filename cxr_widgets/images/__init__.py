"""Images: any source -> its values for viewing (:func:`load_pixels`) and the
8-bit grayscale PNG sent to the model (:func:`prepare_image`).

Modules, one job each: ``sniff`` (what a file is, PNG chunks, header sizes),
``source`` (reading files safely, decoder errors), ``raster`` (PNG/JPEG/PIL/numpy),
``dicom`` (DICOM values, VOI), ``pixels`` (:class:`PixelData`, overviews, regions,
encoding for the browser), ``load`` (:func:`load_pixels`) and ``prepare``
(:func:`prepare_image`, :class:`PreparedImage`).
"""

from __future__ import annotations

from .dicom import FALLBACK_PERCENTILES
from .load import load_pixels
from .pixels import (
    DEFAULT_CODEC,
    DEFAULT_OVERVIEW_SIDE,
    PixelData,
    decode_uint16,
    encode_uint16,
)
from .prepare import (
    DEFAULT_SHORTEST_SIDE,
    MAX_ASPECT_RATIO,
    MODEL_INPUT_SIDE,
    PreparedImage,
    encode_png,
    prepare_image,
)
from .sniff import JPEG_MAGIC, PNG_MAGIC, build_png, png_chunk, png_chunks, sniff
from .source import MAX_PIXELS

__all__ = [
    "DEFAULT_CODEC",
    "DEFAULT_OVERVIEW_SIDE",
    "DEFAULT_SHORTEST_SIDE",
    "FALLBACK_PERCENTILES",
    "JPEG_MAGIC",
    "MAX_ASPECT_RATIO",
    "MAX_PIXELS",
    "MODEL_INPUT_SIDE",
    "PNG_MAGIC",
    "PixelData",
    "PreparedImage",
    "build_png",
    "decode_uint16",
    "encode_png",
    "encode_uint16",
    "load_pixels",
    "png_chunk",
    "png_chunks",
    "prepare_image",
    "sniff",
]
