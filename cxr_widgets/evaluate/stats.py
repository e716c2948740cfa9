"""Cohort statistics: means over studies with bootstrap 95 % intervals, paired
differences, and Cohen's kappa.

The bootstrap resamples studies with replacement (``bootstrap`` times, numpy's
``default_rng(seed)``, so the same seed gives the same intervals) and takes
the 2.5th and 97.5th percentiles of the resampled means, as RadFact's
``MetricBootstrapper`` does. A resample is a vector of counts per study, so
the means of every metric over 1,000 resamples are a few matrix products.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

#: F1 scores derived from cohort precision and recall, as RadFact reports them.
F1_PAIRS: dict[str, tuple[str, str]] = {
    "logical_f1": ("logical_precision", "logical_recall"),
    "grounding_f1": ("grounding_precision", "grounding_recall"),
    "spatial_f1": ("spatial_precision", "spatial_recall"),
}
CHUNK = 100  # resamples per matrix product: bounds memory at 10,000 studies


def resample_counts(n: int, bootstrap: int, seed: int) -> Iterator[np.ndarray]:
    """Blocks of resamples, each row the number of times each study is drawn."""
    rng = np.random.default_rng(seed)
    done = 0
    while done < bootstrap:
        size = min(CHUNK, bootstrap - done)
        draws = rng.integers(0, n, size=(size, n))
        offsets = (np.arange(size) * n)[:, None]
        counts = np.bincount((draws + offsets).ravel(), minlength=size * n)
        yield counts.reshape(size, n).astype(float)
        done += size


def weighted_means(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Means of each column of ``values`` (studies x metrics) ignoring NaN, per weight row."""
    valid = ~np.isnan(values)
    totals = weights @ np.where(valid, values, 0.0)
    counts = weights @ valid.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, totals / np.where(counts > 0, counts, 1), np.nan)


def _f1(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        total = precision + recall
        return np.where(total > 0, 2 * precision * recall / np.where(total > 0, total, 1), np.nan)


def _with_f1(means: np.ndarray, names: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Append the F1 columns whose precision and recall are among ``names``."""
    index = {name: k for k, name in enumerate(names)}
    extra, extra_names = [], []
    for f1, (p, r) in F1_PAIRS.items():
        if p in index and r in index:
            extra.append(_f1(means[..., index[p]], means[..., index[r]]))
            extra_names.append(f1)
    if not extra:
        return means, list(names)
    return np.concatenate([means, np.stack(extra, axis=-1)], axis=-1), [*names, *extra_names]


def _interval(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if samples.shape[0] == 0:
        nan = np.full(samples.shape[1], np.nan)
        return nan, nan
    with np.errstate(invalid="ignore"), _quiet():
        low, high = np.nanquantile(samples, [0.025, 0.975], axis=0)
    return low, high


class _quiet:
    """Silence numpy's all-NaN warnings (a metric no study defines is NaN, not an alarm)."""

    def __enter__(self) -> None:
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)


def _entry(value: float, low: float, high: float, n: int) -> dict[str, Any]:
    def clean(x: float) -> float | None:
        return None if x != x else float(x)

    return {"value": clean(value), "ci_low": clean(low), "ci_high": clean(high), "n": int(n)}


def summarise(
    values: np.ndarray, names: Sequence[str], *, bootstrap: int, seed: int
) -> dict[str, dict[str, Any]]:
    """Metric -> ``{"value", "ci_low", "ci_high", "n"}`` from per-study ``values``.

    ``value`` is the mean over studies where the metric is defined (NaN
    ignored), ``n`` the number of those studies; F1 scores are computed from
    the mean precision and recall, in every resample too. With
    ``bootstrap=0`` the interval is None.
    """
    values = np.asarray(values, dtype=float).reshape(len(values), len(names))
    n_studies = values.shape[0]
    point, all_names = _with_f1(weighted_means(values, np.ones((1, n_studies))), names)
    defined = (~np.isnan(values)).sum(axis=0)
    counts = {name: int(defined[k]) for k, name in enumerate(names)}
    for f1, (p, r) in F1_PAIRS.items():
        if f1 in all_names:
            counts[f1] = min(counts[p], counts[r])
    if bootstrap > 0 and n_studies:
        blocks = [
            _with_f1(weighted_means(values, w), names)[0]
            for w in resample_counts(n_studies, bootstrap, seed)
        ]
        low, high = _interval(np.concatenate(blocks))
    else:
        low = high = np.full(len(all_names), np.nan)
    return {
        name: _entry(point[0, k], low[k], high[k], counts[name]) for k, name in enumerate(all_names)
    }


def paired_difference(
    a: np.ndarray, b: np.ndarray, names: Sequence[str], *, bootstrap: int, seed: int
) -> dict[str, dict[str, Any]]:
    """Mean of ``a`` minus mean of ``b`` over the same studies, with a paired bootstrap CI.

    Rows of ``a`` and ``b`` are the same studies. For each metric only the
    studies where both runs define it count; every resample draws the same
    studies for both runs, so the interval is that of the difference itself.
    Returns metric -> ``{"a", "b", "difference", "ci_low", "ci_high", "n"}``.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    both = ~(np.isnan(a) | np.isnan(b))
    a = np.where(both, a, np.nan)
    b = np.where(both, b, np.nan)
    n_studies = a.shape[0]
    ones = np.ones((1, n_studies))
    mean_a, all_names = _with_f1(weighted_means(a, ones), names)
    mean_b, _ = _with_f1(weighted_means(b, ones), names)
    if bootstrap > 0 and n_studies:
        blocks = []
        for w in resample_counts(n_studies, bootstrap, seed):
            blocks.append(
                _with_f1(weighted_means(a, w), names)[0] - _with_f1(weighted_means(b, w), names)[0]
            )
        low, high = _interval(np.concatenate(blocks))
    else:
        low = high = np.full(len(all_names), np.nan)
    defined = both.sum(axis=0)
    counts = {name: int(defined[k]) for k, name in enumerate(names)}
    for f1, (p, r) in F1_PAIRS.items():
        if f1 in all_names:
            counts[f1] = min(counts[p], counts[r])
    out = {}
    for k, name in enumerate(all_names):
        entry = _entry(mean_a[0, k] - mean_b[0, k], low[k], high[k], counts[name])
        out[name] = {
            "a": _entry(mean_a[0, k], 0, 0, 0)["value"],
            "b": _entry(mean_b[0, k], 0, 0, 0)["value"],
            "difference": entry["value"],
            "ci_low": entry["ci_low"],
            "ci_high": entry["ci_high"],
            "n": entry["n"],
        }
    return out


def cohen_kappa(first: Sequence[str], second: Sequence[str]) -> dict[str, Any]:
    """Cohen's kappa and raw agreement of two readers' labels for the same items.

    kappa = (p_o - p_e) / (1 - p_e), p_o the observed agreement, p_e the
    agreement expected by chance from each reader's label frequencies (Cohen,
    1960). Worked example: A = agree, agree, disagree, agree; B = agree,
    disagree, disagree, agree: p_o = 3/4; p_e = (3/4)(2/4) + (1/4)(2/4) = 1/2;
    kappa = (3/4 - 1/2) / (1/2) = 0.5. When both readers use one label only,
    p_e = 1 and kappa is undefined (None).
    """
    if len(first) != len(second):
        raise ValueError("both readers need a label for every item")
    n = len(first)
    if n == 0:
        return {"n": 0, "raw_agreement": None, "kappa": None}
    labels = sorted(set(first) | set(second))
    observed = sum(x == y for x, y in zip(first, second, strict=True)) / n
    expected = sum((list(first).count(c) / n) * (list(second).count(c) / n) for c in labels)
    kappa = None if expected >= 1 else (observed - expected) / (1 - expected)
    return {"n": n, "raw_agreement": observed, "kappa": kappa}
