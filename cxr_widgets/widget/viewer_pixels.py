"""What the viewer sends for one image: the overview, its value mapping and presets.

Pure numpy (no widget import), shared by :class:`~cxr_widgets.widget.viewer.ReportViewer`,
its tests and ``bench/bench_viewer.py``. The pixels and their encoding come from
:mod:`cxr_widgets.images` (:class:`~cxr_widgets.images.PixelData`); this module
only decides how much of them travels before a zoom, and what the window
presets are.

A 16-bit code ``u`` in a buffer stands for the value ``offset + step * u``;
every buffer carries its own ``offset`` and ``step``. Regions fetched while
zoomed are exact (``step`` as in :meth:`PixelData.value_mapping`, 1 for integer
images); the overview keeps at most :data:`OVERVIEW_LEVELS` levels, because
the low bits of a downscaled radiograph are noise that does not compress
(RG1 at 1024 px: 1.5 MB with 15 bits, about 1 MB with 12).
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..images import DEFAULT_OVERVIEW_SIDE

#: How the viewer's pixels travel (viewer.js decodes it; see images.encode_uint16):
#: smaller and faster than zlib-delta, which the JupyterLab document viewer reads.
VIEWER_CODEC = "zlib-zigzag"
#: Distinct levels kept in the overview (12 bits, as most radiographs store).
OVERVIEW_LEVELS = 4096
#: Longest side of the quick first picture sent before the overview.
PREVIEW_SIDE = 256
#: Longest side of a region sent for a zoomed view (about a 2x HiDPI pane).
DETAIL_MAX_SIDE = 2048
#: About how many pixels the histogram presets look at (a regular subsample).
PRESET_SAMPLE = 250_000
#: The window presets, in the order of the keys 1-5.
PRESETS: tuple[str, ...] = ("file", "lung", "mediastinum", "bone", "full")
PRESET_LABELS = {
    "file": "File",
    "lung": "Lung",
    "mediastinum": "Mediastinum",
    "bone": "Bone",
    "full": "Full range",
}
#: Display-brightness quantiles each histogram preset spans (radiographs have no
#: Hounsfield scale, so the CT presets W1500/L-600 etc. do not apply).
PRESET_QUANTILES = {
    "lung": (0.02, 0.65),
    "mediastinum": (0.35, 0.995),
    "bone": (0.70, 0.999),
}


@dataclass(frozen=True)
class Overview:
    """The overview buffer of one image and everything the browser needs to show it."""

    data: bytes
    meta: dict[str, Any]


def window_to_uint8(values: Any, level: float, width: float, invert: bool) -> np.ndarray:
    """Grey levels 0-255 of ``values`` under the window ``(level, width)``.

    Linear from ``level - width/2`` (black) to ``level + width/2`` (white),
    rounded half up, then inverted when ``invert``. viewer.js computes its
    lookup table with the same formula.
    """
    width = max(float(width), 1e-9)
    lo = float(level) - width / 2.0
    scaled = np.clip((np.asarray(values, dtype=np.float64) - lo) / width, 0.0, 1.0)
    grey = np.floor(scaled * 255.0 + 0.5).astype(np.uint8)
    return 255 - grey if invert else grey


def presets(pixels: Any, sample: np.ndarray | None = None) -> dict[str, list[float]]:
    """``{name: [level, width]}`` for :data:`PRESETS` on ``pixels`` (a PixelData).

    ``file`` is the file's window (else the full range); ``full`` the value range;
    lung, mediastinum and bone are windows over quantiles of display brightness
    (MONOCHROME1 counted inverted) in the central 70 % of ``sample`` (default:
    the values), away from collimation borders.
    """
    lo, hi = (float(v) for v in pixels.value_range)
    full = [(lo + hi) / 2.0, max(hi - lo, 1.0)]
    file = list(pixels.window) if pixels.window is not None else full
    out = {"file": [float(file[0]), max(float(file[1]), 1.0)], "full": full}
    values = np.asarray(pixels.values if sample is None else sample, dtype=np.float64)
    rows, cols = values.shape
    # The central 70 %: collimation borders and labels would dominate the extremes.
    values = values[
        int(rows * 0.15) : max(int(rows * 0.85), 1), int(cols * 0.15) : max(int(cols * 0.85), 1)
    ]
    values = values.ravel() if values.size else np.asarray(pixels.values, dtype=np.float64).ravel()
    spans = {
        name: (1.0 - q1, 1.0 - q0) if pixels.invert else (q0, q1)
        for name, (q0, q1) in PRESET_QUANTILES.items()
    }
    # One partition for every quantile (the same numbers as one call per preset).
    found = np.quantile(values, [q for span in spans.values() for q in span])
    for i, name in enumerate(spans):
        a, b = float(found[2 * i]), float(found[2 * i + 1])
        out[name] = [(a + b) / 2.0, max(b - a, 1.0)]
    return out


def overview(
    pixels: Any, max_side: int = DEFAULT_OVERVIEW_SIDE, levels: int = OVERVIEW_LEVELS
) -> Overview:
    """The overview of ``pixels`` (a PixelData) for the browser, with its metadata."""
    codes, scale = pixels.overview(max_side)
    return _packed(pixels, codes, scale, levels)


def preview(pixels: Any, side: int = PREVIEW_SIDE, levels: int = OVERVIEW_LEVELS) -> Overview:
    """A quick first picture: every k-th pixel (no filtering), longest side about ``side``.

    Shown for the fraction of a second the overview takes to compute and travel.
    """
    k = max(1, math.ceil(max(pixels.width, pixels.height) / side))
    codes = pixels.to_uint16(np.asarray(pixels.values)[::k, ::k])
    return _packed(pixels, codes, codes.shape[1] / pixels.width, levels)


def _packed(pixels: Any, codes: np.ndarray, scale: float, levels: int) -> Overview:
    offset, step = pixels.value_mapping()
    shift = max(0, math.ceil(math.log2(max(int(codes.max()) + 1, 1) / levels)))
    if shift:
        codes = ((codes.astype(np.uint32) + (1 << (shift - 1))) >> shift).astype(np.uint16)
        step *= 1 << shift
    data = pixels.encode(codes, VIEWER_CODEC)
    return Overview(data=data, meta=describe(pixels, codes.shape, scale, offset, step))


#: Presets by image: the preview and the overview of one image share them.
_PRESETS: weakref.WeakKeyDictionary[Any, dict[str, list[float]]] = weakref.WeakKeyDictionary()


def _presets_of(pixels: Any) -> dict[str, list[float]]:
    """:func:`presets` on a regular subsample of about :data:`PRESET_SAMPLE` values, once
    per image."""
    if pixels not in _PRESETS:
        sample = np.asarray(pixels.values)
        stride = max(1, round((sample.size / PRESET_SAMPLE) ** 0.5))
        _PRESETS[pixels] = presets(pixels, sample[::stride, ::stride])
    return {name: list(span) for name, span in _PRESETS[pixels].items()}


def describe(
    pixels: Any, shape: tuple[int, ...], scale: float, offset: float, step: float
) -> dict[str, Any]:
    """The JSON metadata of one image: sizes, value mapping, window, presets, notes."""
    table = _presets_of(pixels)
    level, width = table["file"]
    return {
        "width": pixels.width,
        "height": pixels.height,
        "ow": int(shape[1]),
        "oh": int(shape[0]),
        "scale": float(scale),
        "offset": float(offset),
        "step": float(step),
        "codec": VIEWER_CODEC,
        "range": [float(v) for v in pixels.value_range],
        "window": [level, width],
        "invert": bool(pixels.invert),
        "spacing": list(pixels.spacing) if pixels.spacing else None,
        "presets": table,
        "notes": notes(pixels, shape),
    }


def notes(pixels: Any, shape: tuple[int, ...]) -> list[str]:
    """What the viewer did with an unusual image, in words a reader can act on."""
    out = list(getattr(pixels, "notes", ()))
    lo, hi = pixels.value_range
    if lo == hi:
        out.append(f"every pixel has the value {lo:g}: the image is blank (shown mid-grey)")
    if pixels.window is None and lo != hi:
        out.append("the file gives no window: starting at the full value range")
    side = max(pixels.width, pixels.height)
    if min(pixels.width, pixels.height) * 20 < side:
        out.append(f"a {pixels.width} x {pixels.height} strip: zoom in to see it")
    if int(shape[1]) < pixels.width:
        out.append(
            f"{pixels.width} x {pixels.height} shown from a {shape[1]} x {shape[0]} overview; "
            "zooming in fetches full-resolution detail"
        )
    if pixels.spacing is None:
        out.append("pixel spacing unknown: distances are in pixels")
    return out


def region(pixels: Any, x: int, y: int, w: int, h: int, side: int) -> tuple[bytes, dict[str, Any]]:
    """The region ``(x, y, w, h)`` of ``pixels`` at most ``side`` pixels long, encoded."""
    side = max(1, min(int(side), DETAIL_MAX_SIDE))
    codes, scale, (bx, by, bw, bh) = pixels.region(int(x), int(y), int(w), int(h), side)
    offset, step = pixels.value_mapping()
    meta = {
        "x": bx,
        "y": by,
        "w": bw,
        "h": bh,
        "ow": int(codes.shape[1]),
        "oh": int(codes.shape[0]),
        "scale": float(scale),
        "offset": float(offset),
        "step": float(step),
        "codec": VIEWER_CODEC,
    }
    return pixels.encode(codes, VIEWER_CODEC), meta
