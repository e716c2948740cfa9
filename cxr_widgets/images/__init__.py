"""Images: any source -> its values for viewing (:func:`load_pixels`) and the
8-bit grayscale PNG sent to the model (:func:`prepare_image`).

Modules, one job each: ``sniff`` (what a file is: signatures, PNG chunks, header
sizes; standard library only), ``source`` (reading files safely, decoder errors),
``raster`` (PNG/JPEG/PIL/numpy), ``dicom`` (DICOM values, VOI), ``pixels``
(:class:`PixelData`, overviews, regions, encoding for the browser), ``load``
(:func:`load_pixels`) and ``prepare`` (:func:`prepare_image`, :class:`PreparedImage`).

Names are imported on first use, so ``from cxr_widgets.images.sniff import ...``
(as the wire contract does) loads neither numpy nor Pillow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr

_LAZY = {
    "FALLBACK_PERCENTILES": "dicom",
    "load_pixels": "load",
    "DEFAULT_CODEC": "pixels",
    "DEFAULT_OVERVIEW_SIDE": "pixels",
    "PixelData": "pixels",
    "decode_uint16": "pixels",
    "encode_uint16": "pixels",
    "DEFAULT_SHORTEST_SIDE": "prepare",
    "MAX_ASPECT_RATIO": "prepare",
    "MODEL_INPUT_SIDE": "prepare",
    "PreparedImage": "prepare",
    "encode_png": "prepare",
    "prepare_image": "prepare",
    "JPEG_MAGIC": "sniff",
    "PNG_MAGIC": "sniff",
    "build_png": "sniff",
    "png_chunk": "sniff",
    "png_chunks": "sniff",
    "detect_format": "sniff",
    "MAX_PIXELS": "source",
}

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
    "detect_format",
    "encode_png",
    "encode_uint16",
    "load_pixels",
    "png_chunk",
    "png_chunks",
    "prepare_image",
]


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:
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
    from .sniff import JPEG_MAGIC, PNG_MAGIC, build_png, detect_format, png_chunk, png_chunks
    from .source import MAX_PIXELS
