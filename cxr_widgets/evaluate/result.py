"""What an evaluation returns: summary, per-study and per-finding tables, JSON, figures."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .boxes import IOU_THRESHOLDS
from .metrics import METRICS, RADFACT_METRICS
from .model import Problem

__all__ = ["Comparison", "Evaluation"]

#: The metrics drawn by plot(), in order.
PLOTTED: tuple[str, ...] = (
    *RADFACT_METRICS,
    "box_iou",
    f"box_precision@{IOU_THRESHOLDS[1]:g}",
    f"box_recall@{IOU_THRESHOLDS[1]:g}",
    "rouge_l",
)


def _frame(rows: list[dict[str, Any]], columns: list[str] | None = None) -> Any:
    from ..extras import require

    require("pandas", "evaluation tables")
    import pandas as pd

    return pd.DataFrame(rows, columns=columns)


def _json_ready(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        return _json_ready(value.item())
    return value


def _write(text: str, path: str | os.PathLike[str] | None) -> str:
    if path is not None:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    return text


def _bars(ax: Any, names: list[str], values: list, lows: list, highs: list, title: str) -> None:
    y = np.arange(len(names))
    v = np.array([np.nan if x is None else x for x in values], dtype=float)
    lo = np.array([np.nan if x is None else x for x in lows], dtype=float)
    hi = np.array([np.nan if x is None else x for x in highs], dtype=float)
    err = np.vstack([np.nan_to_num(v - lo), np.nan_to_num(hi - v)])
    ax.barh(y, np.nan_to_num(v), xerr=err, color="#4c78a8", ecolor="#333", capsize=3)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)


@dataclass
class Evaluation:
    """The result of :func:`~cxr_widgets.evaluate.evaluate`.

    ``summary``: metric -> ``{"value", "ci_low", "ci_high", "n"}`` (mean over
    the ``n`` studies where the metric is defined, bootstrap 95 % interval);
    ``per_study`` and ``per_finding``: DataFrames; ``missing``: study ids on
    one side only; ``problems``: inputs that could not be used, by study;
    ``counts``: how many studies went where; ``provenance``: both runs'
    sources, the references, the judge; ``agreement``: reader agreement when
    the references are reviews by two readers.
    """

    summary: dict[str, dict[str, Any]]
    rows: list[dict[str, Any]]
    values: np.ndarray
    missing: dict[str, list[str]]
    problems: list[Problem]
    counts: dict[str, int]
    provenance: dict[str, Any]
    ious: np.ndarray
    findings: list[dict[str, Any]] = field(default_factory=list)
    agreement: dict[str, Any] | None = None

    @property
    def per_study(self) -> Any:
        """One row per evaluated study: counts and every metric (NaN where undefined)."""
        from .api import COUNT_COLUMNS

        return _frame(self.rows, ["study_id", *COUNT_COLUMNS, *METRICS])

    @property
    def per_finding(self) -> Any:
        """One row per normalised finding text, most frequent first."""
        columns = list(self.findings[0]) if self.findings else ["finding"]
        return _frame(self.findings, columns)

    @property
    def problems_frame(self) -> Any:
        """The problems as a DataFrame (study_id, side, finding, reason, excluded)."""
        return _frame(
            [asdict(p) for p in self.problems],
            ["study_id", "side", "finding", "reason", "excluded"],
        )

    @property
    def disagreements(self) -> list[str]:
        """Studies where model and reference disagree: a sentence on either side not entailed.

        Give them to the study browser: ``browser.filter(only=evaluation.disagreements)``.
        """
        return [
            r["study_id"]
            for r in self.rows
            if r["n_generated_entailed"] < r["n_generated_judged"]
            or r["n_reference_entailed"] < r["n_reference"]
        ]

    def to_dict(self) -> dict[str, Any]:
        """The JSON summary as a dict (no report text; problems name studies and reasons)."""
        data = {
            "summary": self.summary,
            "counts": self.counts,
            "missing": self.missing,
            "problems": [asdict(p) for p in self.problems],
            "provenance": self.provenance,
        }
        if self.agreement is not None:
            data["agreement"] = {k: v for k, v in self.agreement.items() if k != "table"}
        return _json_ready(data)

    def to_json(self, path: str | os.PathLike[str] | None = None, indent: int | None = 2) -> str:
        """The JSON summary (also written to ``path`` when given)."""
        return _write(json.dumps(self.to_dict(), indent=indent), path)

    def table(self) -> Any:
        """The summary as a DataFrame, one row per metric."""
        rows = [{"metric": k, **v} for k, v in self.summary.items()]
        return _frame(rows, ["metric", "value", "ci_low", "ci_high", "n"])

    def plot(self, top: int = 12) -> Any:
        """A figure: metric bars with 95 % intervals, the IoU histogram, the per-finding table."""
        from ..extras import require

        require("plot", "Evaluation.plot()")
        from matplotlib.figure import Figure

        fig = Figure(figsize=(13, 4.8), layout="constrained")
        ax_bars, ax_iou, ax_table = fig.subplots(
            1, 3, gridspec_kw={"width_ratios": [1.1, 0.8, 1.4]}
        )
        names = [m for m in PLOTTED if m in self.summary]
        _bars(
            ax_bars,
            names,
            [self.summary[m]["value"] for m in names],
            [self.summary[m]["ci_low"] for m in names],
            [self.summary[m]["ci_high"] for m in names],
            f"{self.counts['evaluated']} studies, 95 % CI",
        )
        ax_bars.set_xlim(0, 1)
        ax_iou.hist(self.ious, bins=np.linspace(0, 1, 21), color="#f58518")
        ax_iou.set_title(f"IoU of {len(self.ious)} matched box pairs")
        ax_iou.set_xlabel("IoU")
        ax_table.axis("off")
        shown = self.findings[:top]
        if shown:
            cells = [
                [
                    (r["finding"][:38] + "…") if len(r["finding"]) > 39 else r["finding"],
                    f"{r['generated']}",
                    "-" if math.isnan(r["precision"]) else f"{r['precision']:.2f}",
                    f"{r['reference']}",
                    "-" if math.isnan(r["recall"]) else f"{r['recall']:.2f}",
                ]
                for r in shown
            ]
            table = ax_table.table(
                cells,
                colLabels=["finding (normalised)", "gen", "prec", "ref", "recall"],
                loc="upper center",
                cellLoc="left",
                colWidths=[0.62, 0.09, 0.1, 0.09, 0.1],
            )
            table.auto_set_font_size(False)
            table.set_fontsize(7.5)
        ax_table.set_title("per finding")
        return fig

    def __repr__(self) -> str:
        lp, lr = self.summary["logical_precision"]["value"], self.summary["logical_recall"]["value"]

        def show(x: float | None) -> str:
            return "n/a" if x is None else f"{x:.3f}"

        return (
            f"<Evaluation {self.counts['evaluated']} studies ({self.provenance['judge']['name']} "
            f"judge): logical precision {show(lp)}, recall {show(lr)}; "
            f"{len(self.missing['generated_only']) + len(self.missing['reference_only'])} "
            f"missing, {len(self.problems)} problems>"
        )


@dataclass
class Comparison:
    """A paired comparison of two runs (:func:`~cxr_widgets.evaluate.compare`).

    ``summary``: metric -> ``{"a", "b", "difference", "ci_low", "ci_high",
    "n"}``, the difference being first minus second with a paired bootstrap
    95 % interval over the studies both runs evaluated.
    """

    summary: dict[str, dict[str, Any]]
    labels: tuple[str, str]
    studies: list[str]
    missing: dict[str, list[str]]
    provenance: dict[str, Any]
    bootstrap: int
    seed: int

    def table(self) -> Any:
        rows = [{"metric": k, **v} for k, v in self.summary.items()]
        return _frame(rows, ["metric", "a", "b", "difference", "ci_low", "ci_high", "n"])

    def to_dict(self) -> dict[str, Any]:
        return _json_ready(
            {
                "labels": list(self.labels),
                "studies": len(self.studies),
                "summary": self.summary,
                "missing": self.missing,
                "bootstrap": self.bootstrap,
                "seed": self.seed,
                "provenance": self.provenance,
            }
        )

    def to_json(self, path: str | os.PathLike[str] | None = None, indent: int | None = 2) -> str:
        return _write(json.dumps(self.to_dict(), indent=indent), path)

    def plot(self) -> Any:
        """Differences (first minus second) with their paired 95 % intervals."""
        from ..extras import require

        require("plot", "Comparison.plot()")
        from matplotlib.figure import Figure

        fig = Figure(figsize=(7, 4.5), layout="constrained")
        ax = fig.subplots()
        names = [m for m in PLOTTED if m in self.summary]
        diff = [self.summary[m]["difference"] for m in names]
        v = np.array([np.nan if x is None else x for x in diff], dtype=float)
        lo = np.array([np.nan if (x := self.summary[m]["ci_low"]) is None else x for m in names])
        hi = np.array([np.nan if (x := self.summary[m]["ci_high"]) is None else x for m in names])
        colors = ["#54a24b" if x >= 0 else "#e45756" for x in np.nan_to_num(v)]
        ax.barh(
            np.arange(len(names)),
            np.nan_to_num(v),
            xerr=np.vstack([np.nan_to_num(v - lo), np.nan_to_num(hi - v)]),
            color=colors,
            ecolor="#333",
            capsize=3,
        )
        ax.axvline(0, color="#333", linewidth=0.8)
        ax.set_yticks(np.arange(len(names)), names)
        ax.invert_yaxis()
        a, b = self.labels
        ax.set_title(f"{a} minus {b} on {len(self.studies)} studies (paired 95 % CI)")
        ax.grid(axis="x", alpha=0.3)
        return fig

    def __repr__(self) -> str:
        a, b = self.labels
        return f"<Comparison {a} vs {b} on {len(self.studies)} studies>"
