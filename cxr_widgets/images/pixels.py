"""The image's own values for viewing: :class:`PixelData`, overviews, regions and
their compact encoding for the browser.

A viewer windows the modality values itself (in the browser); what travels is a
16-bit overview and, when zoomed in, regions at the needed scale. A 16-bit value
``u`` stands for the modality value ``offset + step * u`` (see
:meth:`PixelData.value_mapping`); for integer images whose values span at most
65 536 levels (every 8-16 bit radiograph) ``step`` is 1 and the mapping is exact.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
from PIL import Image

#: Default longest side of an overview sent to the browser, in pixels. RG1's lossless
#: 16-bit overview is about 1.3 MB at 1024 and 4.8 MB at 2048 (bench/bench_prepare.py);
#: detail beyond the overview comes from :meth:`PixelData.region` when zoomed in.
DEFAULT_OVERVIEW_SIDE = 1024

#: How :meth:`PixelData.encode` packs 16-bit pixels; see :func:`encode_uint16`.
PixelCodec = Literal["zlib-delta", "zlib-zigzag", "zlib", "png16"]
DEFAULT_CODEC: PixelCodec = "zlib-delta"


@dataclass(frozen=True)
class Display:
    """How :func:`~cxr_widgets.images.prepare_image` turns the values into 8 bits.

    ``kind``: ``"direct"`` (uint8 values as they are), ``"minmax"`` (linear over
    the values present) or ``"voi"`` (DICOM: the file's VOI LUT or window, else a
    percentile window). ``voi`` keeps only the VOI elements of a DICOM dataset.
    """

    kind: Literal["direct", "minmax", "voi"]
    voi: Any = None


@dataclass(frozen=True, eq=False, repr=False)
class PixelData:
    """An image's values as stored (after the DICOM modality LUT / rescale).

    ``values`` is a read-only 2-D array (rows x columns). MONOCHROME1 is *not*
    inverted in ``values``: ``invert`` says a viewer should show high values dark.
    ``window`` is the file's first VOI window ``(center, width)`` in the same units,
    or None. ``spacing`` is the pixel spacing in mm ``(row, column)`` from
    PixelSpacing or ImagerPixelSpacing (``spacing_source``), None when absent or 0.
    ``safe_metadata`` holds only technical fields (never patient tags).
    """

    values: np.ndarray
    source_kind: str
    bit_depth: int
    invert: bool = False
    window: tuple[float, float] | None = None
    spacing: tuple[float, float] | None = None
    spacing_source: str | None = None
    burned_in_annotation: bool | None = None
    safe_metadata: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    display: Display = field(default=Display("direct"))
    value_range: tuple[float, float] = field(init=False)

    def __post_init__(self) -> None:
        values = self.values
        if values.ndim != 2 or values.size == 0:
            raise ValueError(f"PixelData needs a non-empty 2-D array, got shape {values.shape}")
        if values.flags.writeable:
            values = values.view()
            values.flags.writeable = False
            object.__setattr__(self, "values", values)
        lo, hi = float(values.min()), float(values.max())
        object.__setattr__(self, "value_range", (lo, hi))
        meta = {
            "source": self.source_kind,
            "rows": int(values.shape[0]),
            "columns": int(values.shape[1]),
            "bits_stored": self.bit_depth,
            "pixel_spacing": self.spacing,
            "spacing_source": self.spacing_source,
            **dict(self.safe_metadata),
        }
        object.__setattr__(self, "safe_metadata", MappingProxyType(meta))

    # --- shape ----------------------------------------------------------------

    @property
    def width(self) -> int:
        return int(self.values.shape[1])

    @property
    def height(self) -> int:
        return int(self.values.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)``, as PIL gives it."""
        return self.width, self.height

    @property
    def is_constant(self) -> bool:
        """Every pixel has the same value (a blank image)."""
        return self.value_range[0] == self.value_range[1]

    # --- values for the browser -------------------------------------------------

    def value_mapping(self) -> tuple[float, float]:
        """``(offset, step)``: a 16-bit value ``u`` stands for ``offset + step * u``."""
        lo, hi = self.value_range
        integral = self.values.dtype.kind in "uib"
        if integral and hi - lo <= 65535:
            return lo, 1.0
        return lo, (hi - lo) / 65535.0 if hi > lo else 1.0

    def default_window(self) -> tuple[float, float]:
        """``(center, width)`` to start at: the file's window, else the full value range."""
        if self.window is not None:
            return self.window
        lo, hi = self.value_range
        return (lo + hi) / 2.0, max(hi - lo, 1.0)

    def to_uint16(self, values: np.ndarray | None = None) -> np.ndarray:
        """``values`` (default: all of them) as 16-bit codes of :meth:`value_mapping`."""
        values = self.values if values is None else values
        offset, step = self.value_mapping()
        if step == 1.0 and values.dtype.kind in "uib":
            if offset == 0 and values.dtype == np.uint16:
                return np.ascontiguousarray(values)
            return (values.astype(np.int64) - int(offset)).astype(np.uint16)
        codes = (np.asarray(values, dtype=np.float64) - offset) / step
        np.rint(codes, out=codes)
        np.clip(codes, 0, 65535, out=codes)
        return codes.astype(np.uint16)

    def overview(self, max_side: int = DEFAULT_OVERVIEW_SIDE) -> tuple[np.ndarray, float]:
        """A downscaled 16-bit image (longest side at most ``max_side``, never upscaled)
        and its scale (overview pixels per image pixel)."""
        pixels, scale, _box = self.region(0, 0, self.width, self.height, max_side)
        return pixels, scale

    def region(
        self, x: int, y: int, w: int, h: int, out_max_side: int
    ) -> tuple[np.ndarray, float, tuple[int, int, int, int]]:
        """The image pixels ``[y:y+h, x:x+w]`` as 16-bit codes, reduced so that the
        longest side is at most ``out_max_side`` (never enlarged).

        The rectangle is clipped to the image; returns ``(pixels, scale, (x, y, w, h))``
        with the rectangle actually cut. At scale 1 the codes are the exact values.
        Reduction averages the pixels each output pixel covers (a box filter), so
        values stay within the image's range.
        """
        if not all(isinstance(v, (int, np.integer)) for v in (x, y, w, h, out_max_side)):
            raise TypeError("region() takes integer pixel coordinates and sizes")
        if out_max_side < 1:
            raise ValueError("out_max_side must be at least 1")
        x0, y0 = max(0, int(x)), max(0, int(y))
        x1, y1 = min(self.width, int(x) + int(w)), min(self.height, int(y) + int(h))
        if x1 <= x0 or y1 <= y0:
            raise ValueError(
                f"region ({x}, {y}, {w}, {h}) lies outside the {self.width}x{self.height} image"
            )
        crop = self.values[y0:y1, x0:x1]
        cw, ch = x1 - x0, y1 - y0
        scale = min(1.0, out_max_side / max(cw, ch))
        box = (x0, y0, cw, ch)
        if scale >= 1.0:
            return self.to_uint16(crop), 1.0, box
        target = (max(1, round(cw * scale)), max(1, round(ch * scale)))
        codes = self.to_uint16(crop)
        # Float image: Pillow's box filter on exact 16-bit codes, rounded back.
        reduced = Image.fromarray(codes.astype(np.float32)).resize(target, Image.Resampling.BOX)
        out = np.asarray(reduced, dtype=np.float32)
        return np.clip(np.rint(out), 0, 65535).astype(np.uint16), scale, box

    def encode(self, pixels: np.ndarray, codec: PixelCodec = DEFAULT_CODEC) -> bytes:
        """``pixels`` (from :meth:`overview` or :meth:`region`) packed for the browser
        (see :func:`encode_uint16`)."""
        return encode_uint16(pixels, codec)

    def __repr__(self) -> str:
        lo, hi = self.value_range
        parts = [f"{self.source_kind} {self.width}x{self.height} {self.bit_depth}-bit"]
        parts.append(f"values {lo:g}..{hi:g}")
        if self.window is not None:
            parts.append(f"window {self.window[0]:g}/{self.window[1]:g}")
        if self.invert:
            parts.append("MONOCHROME1")
        if self.spacing is not None:
            parts.append(f"spacing {self.spacing[0]:g}x{self.spacing[1]:g} mm")
        return f"PixelData({', '.join(parts)})"


#: zlib level for :func:`encode_uint16`: level 1 is 4x faster than 6 on RG1 and its
#: output only 4 % larger (bench/bench_prepare.py).
DEFAULT_ZLIB_LEVEL = 1


def encode_uint16(
    pixels: np.ndarray, codec: PixelCodec = DEFAULT_CODEC, level: int = DEFAULT_ZLIB_LEVEL
) -> bytes:
    """A 2-D uint16 array as bytes for the browser.

    * ``"zlib-delta"`` (default): each row replaced by its differences (the first
      value kept, arithmetic modulo 65 536), the low bytes of all values followed
      by their high bytes, then zlib (RFC 1950). The browser inflates with
      ``DecompressionStream("deflate")``, interleaves the two halves and undoes the
      differences with a running sum per row (modulo 65 536). Smallest and fastest
      on radiographs (bench/bench_prepare.py).
    * ``"zlib-zigzag"``: the same, with each difference (taken as a signed 16-bit
      number) stored zigzag-encoded, ``(d << 1) ^ (d >> 15)``, so small steps down
      are small codes too and the high-byte plane is nearly all zeros: 28 % smaller
      than ``zlib-delta`` on an 8-bit image, 19 % on RG1's 12-bit overview (within
      1 % with all 15 bits), and faster to compress.
      The browser undoes it with ``(z >>> 1) ^ -(z & 1)`` before the running sum.
    * ``"zlib"``: the little-endian values, zlib-compressed.
    * ``"png16"``: a 16-bit grayscale PNG (browsers decode PNG to 8 bits, so this
      needs a PNG decoder in JavaScript; kept for comparison and for files).
    """
    array = np.ascontiguousarray(pixels, dtype=np.uint16)
    if array.ndim != 2:
        raise ValueError(f"expected a 2-D array, got shape {array.shape}")
    if codec == "zlib":
        return zlib.compress(array.astype("<u2").tobytes(), level)
    if codec in ("zlib-delta", "zlib-zigzag"):
        delta = array.copy()
        delta[:, 1:] = np.diff(array, axis=1)  # uint16 wraps modulo 65536
        if codec == "zlib-zigzag":
            delta = (delta << 1) ^ (delta.view(np.int16) >> 15).view(np.uint16)
        planes = np.empty(2 * delta.size, dtype=np.uint8)
        planes[: delta.size] = (delta & 0xFF).ravel()
        planes[delta.size :] = (delta >> 8).ravel()
        return zlib.compress(planes.tobytes(), level)
    if codec == "png16":
        import io

        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG", compress_level=level)
        return buffer.getvalue()
    raise ValueError(f"unknown codec {codec!r}; use 'zlib-delta', 'zlib-zigzag', 'zlib' or 'png16'")


def decode_uint16(
    data: bytes, shape: tuple[int, int], codec: PixelCodec = DEFAULT_CODEC
) -> np.ndarray:
    """The inverse of :func:`encode_uint16` (what the browser does, for tests and tools)."""
    if codec == "png16":
        import io

        return np.asarray(Image.open(io.BytesIO(data)), dtype=np.uint16)
    raw = zlib.decompress(data)
    if codec == "zlib":
        return np.frombuffer(raw, dtype="<u2").astype(np.uint16).reshape(shape)
    if codec not in ("zlib-delta", "zlib-zigzag"):
        raise ValueError(f"unknown codec {codec!r}")
    planes = np.frombuffer(raw, dtype=np.uint8)
    half = planes.size // 2
    delta = (planes[:half].astype(np.uint16) | (planes[half:].astype(np.uint16) << 8)).reshape(
        shape
    )
    if codec == "zlib-zigzag":
        delta = (delta >> 1) ^ (-(delta & 1).astype(np.int16)).view(np.uint16)
    return np.cumsum(delta, axis=1, dtype=np.uint16)  # wraps modulo 65536


def spacing_from(value: Any) -> tuple[float, float] | None:
    """``(row, column)`` spacing in mm from a DICOM spacing value; None if absent,
    malformed, zero or negative (RG1's ``PixelSpacing`` is ``0\\0``: unknown)."""
    if value is None:
        return None
    try:
        items = [float(v) for v in value] if not isinstance(value, (str, bytes)) else []
    except (TypeError, ValueError):
        return None
    if len(items) != 2 or not all(math.isfinite(v) and v > 0 for v in items):
        return None
    return items[0], items[1]
