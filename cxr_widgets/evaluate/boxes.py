"""Box geometry for evaluation: IoU, one-to-one matching, and RadFact's spatial entailment.

Boxes are ``(x_min, y_min, x_max, y_max)`` in the model's 0..1 frame.

Spatial entailment follows RadFact (microsoft/RadFact,
``src/radfact/metric/box_metrics.py`` and ``radfact.py``): the boxes of a
sentence and of its evidence are rasterised to 224 x 224 masks (coordinates
times 224, truncated to whole pixels), and the sentence is spatially entailed
when the *pixel precision* -- the fraction of its mask inside the evidence
mask -- is above 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .model import BoxTuple

#: RadFact's mask size and pixel-precision threshold (``RadFactMetric`` defaults).
MASK_SIZE = 224
PIXEL_PRECISION_THRESHOLD = 0.5
#: IoU thresholds at which box precision and recall are reported.
IOU_THRESHOLDS: tuple[float, ...] = (0.25, 0.5, 0.75)


def iou(a: BoxTuple, b: BoxTuple) -> float:
    """Intersection over union of two boxes (continuous coordinates).

    Worked example: ``a = (0, 0, 0.5, 0.5)``, ``b = (0.25, 0.25, 0.75, 0.75)``:
    intersection 0.25 x 0.25 = 0.0625, union 0.25 + 0.25 - 0.0625 = 0.4375,
    IoU = 1/7 ~ 0.142857. Two boxes of zero area have IoU 0.
    """
    return float(iou_matrix([a], [b])[0, 0])


def iou_matrix(a: Sequence[BoxTuple], b: Sequence[BoxTuple]) -> np.ndarray:
    """IoU of every box of ``a`` (rows) with every box of ``b`` (columns)."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    pa = np.asarray(a, dtype=float).reshape(-1, 4)
    pb = np.asarray(b, dtype=float).reshape(-1, 4)
    ix = np.clip(
        np.minimum(pa[:, None, 2], pb[None, :, 2]) - np.maximum(pa[:, None, 0], pb[None, :, 0]),
        0,
        None,
    )
    iy = np.clip(
        np.minimum(pa[:, None, 3], pb[None, :, 3]) - np.maximum(pa[:, None, 1], pb[None, :, 1]),
        0,
        None,
    )
    inter = ix * iy
    area_a = (pa[:, 2] - pa[:, 0]) * (pa[:, 3] - pa[:, 1])
    area_b = (pb[:, 2] - pb[:, 0]) * (pb[:, 3] - pb[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _iou_pairs(a: Sequence[BoxTuple], b: Sequence[BoxTuple]) -> list[tuple[float, int, int]]:
    """``(IoU, i, j)`` for every overlapping pair (plain Python: studies have few boxes)."""
    out = []
    for i, (ax0, ay0, ax1, ay1) in enumerate(a):
        area_a = (ax1 - ax0) * (ay1 - ay0)
        for j, (bx0, by0, bx1, by1) in enumerate(b):
            w = min(ax1, bx1) - max(ax0, bx0)
            h = min(ay1, by1) - max(ay0, by0)
            if w > 0 and h > 0:
                inter = w * h
                union = area_a + (bx1 - bx0) * (by1 - by0) - inter
                if union > 0:
                    out.append((inter / union, i, j))
    return out


def match_boxes(a: Sequence[BoxTuple], b: Sequence[BoxTuple]) -> list[tuple[int, int, float]]:
    """One-to-one matching of boxes by IoU, greedy from the highest IoU (as COCO evaluation).

    Returns ``(index in a, index in b, IoU)`` for every matched pair with IoU > 0.
    Because pairs are taken in decreasing IoU, the pairs at or above any
    threshold are exactly what greedy matching at that threshold would give.
    Ties go to the lower index of ``a``, then of ``b``.
    """
    if len(a) * len(b) > 16:  # numpy pays off beyond a few pairs
        matrix = iou_matrix(a, b)
        rows, cols = np.nonzero(matrix > 0)
        pairs = [
            (float(v), int(i), int(j))
            for v, i, j in zip(
                matrix[rows, cols].tolist(), rows.tolist(), cols.tolist(), strict=True
            )
        ]
    else:
        pairs = _iou_pairs(a, b)
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    used_a: set[int] = set()
    used_b: set[int] = set()
    matched = []
    for value, i, j in pairs:
        if i in used_a or j in used_b:
            continue
        used_a.add(i)
        used_b.add(j)
        matched.append((i, j, value))
    return matched


def _pixels(box: BoxTuple, size: int) -> tuple[int, int, int, int]:
    # As RadFact: (coordinates * size).astype(int), i.e. truncation.
    x0, y0, x1, y1 = box
    return int(x0 * size), int(y0 * size), int(x1 * size), int(y1 * size)


def box_mask(boxes: Sequence[BoxTuple], size: int = MASK_SIZE) -> np.ndarray:
    """The boxes rasterised to a ``size`` x ``size`` boolean mask (RadFact's rule)."""
    mask = np.zeros((size, size), dtype=bool)
    for box in boxes:
        x1, y1, x2, y2 = _pixels(box, size)
        mask[y1:y2, x1:x2] = True
    return mask


def pixel_precision(
    boxes: Sequence[BoxTuple], evidence: Sequence[BoxTuple], size: int = MASK_SIZE
) -> float:
    """Fraction of the boxes' mask that lies inside the evidence boxes' mask (NaN if empty).

    Worked example at ``size=10``: boxes ``(0, 0, 0.4, 0.5)`` cover 4 x 5 = 20
    pixels; evidence ``(0.2, 0, 1, 1)`` covers columns 2..9, so 2 x 5 = 10 of
    the 20 pixels lie inside: precision 0.5 (not above 0.5, so not entailed).
    """
    if len(boxes) == 1 and len(evidence) == 1:  # the common case, without masks
        x1, y1, x2, y2 = _pixels(boxes[0], size)
        ex1, ey1, ex2, ey2 = _pixels(evidence[0], size)
        area = max(x2 - x1, 0) * max(y2 - y1, 0)
        if area == 0:
            return float("nan")
        inside = max(min(x2, ex2) - max(x1, ex1), 0) * max(min(y2, ey2) - max(y1, ey1), 0)
        return inside / area
    # Masks cropped to the boxes' extent: the same counts as 224 x 224 masks, far fewer pixels.
    rects = [_pixels(b, size) for b in boxes]
    x0, y0 = min(r[0] for r in rects), min(r[1] for r in rects)
    x1, y1 = max(r[2] for r in rects), max(r[3] for r in rects)
    if x1 <= x0 or y1 <= y0:
        return float("nan")
    mine = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    for rx0, ry0, rx1, ry1 in rects:
        mine[max(ry0 - y0, 0) : max(ry1 - y0, 0), max(rx0 - x0, 0) : max(rx1 - x0, 0)] = True
    area = int(np.count_nonzero(mine))
    if area == 0:
        return float("nan")
    theirs = np.zeros_like(mine)
    for ex0, ey0, ex1, ey1 in (_pixels(b, size) for b in evidence):
        theirs[max(ey0 - y0, 0) : max(ey1 - y0, 0), max(ex0 - x0, 0) : max(ex1 - x0, 0)] = True
    return int(np.count_nonzero(mine & theirs)) / area


def spatially_entailed(boxes: Sequence[BoxTuple], evidence: Sequence[BoxTuple]) -> bool:
    """RadFact's rule: pixel precision of ``boxes`` against ``evidence`` above 0.5."""
    if not boxes or not evidence:
        return False
    value = pixel_precision(boxes, evidence)
    return bool(value > PIXEL_PRECISION_THRESHOLD)  # NaN (empty mask) is not entailed
