"""Evaluation speed: every non-LLM metric over 10,000 synthetic studies with 1,000 resamples.

Synthetic runs (no images needed): each study gets about 5 findings drawn from
a vocabulary of 60 sentences, boxes on the model's 1/100 grid; its reference
keeps most findings (some reworded, some boxes moved), drops some and adds
others, so every metric has work to do. Times ``evaluate(reports, references,
judge="exact", bootstrap=1000)`` end to end (inputs read and checked, judge,
RadFact-style metrics with mask-based spatial entailment, box matching,
ROUGE-L, per-finding table, bootstrap) and, separately, the bootstrap alone;
wall time (what a user waits, which depends on what else the machine runs)
and CPU time (the work itself). "sparse": about 3 boxes per study; "dense":
grounded findings with one or two boxes each (about 7.5 per study).
Runtime: about 2 minutes.

Run: .venv/bin/python bench/bench_evaluate.py [--studies 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
from common import machine, print_table

from cxr_widgets.evaluate import evaluate
from cxr_widgets.evaluate.metrics import METRICS
from cxr_widgets.evaluate.stats import summarise
from cxr_widgets.report import Box, Finding, Report

PLACES = (
    "right lower lobe",
    "left lower lobe",
    "right upper lobe",
    "left apex",
    "retrocardiac region",
)
KINDS = ("opacity", "consolidation", "atelectasis", "nodule", "pleural effusion", "scarring")
SENTENCES = [f"There is {k} in the {p}." for k in KINDS for p in PLACES] + [
    "The heart size is normal.",
    "No pneumothorax.",
    "The mediastinum is unremarkable.",
    "Degenerative changes of the spine.",
    "Median sternotomy wires.",
    "The cardiomediastinal silhouette is within normal limits.",
    "There is mild pulmonary vascular congestion.",
    "No focal consolidation.",
    "Healed rib fractures are noted.",
    "The lungs are clear.",
    "Support devices are in place.",
    "Elevation of the right hemidiaphragm.",
    "Small bilateral pleural effusions.",
    "Hyperinflated lungs.",
    "Calcified granuloma.",
    "Low lung volumes.",
    "Aortic knob calcification.",
    "Interval improvement.",
    "Endotracheal tube in standard position.",
    "Nasogastric tube below the diaphragm.",
    "Left PICC line tip in the SVC.",
    "Mild cardiomegaly.",
    "Bibasilar atelectasis.",
    "No acute cardiopulmonary process.",
    "Patchy airspace disease.",
    "Tortuous thoracic aorta.",
    "Hilar prominence.",
    "Chronic interstitial changes.",
    "Pulmonary edema.",
    "Widened mediastinum.",
]


def _box(rng: np.random.Generator) -> list[float]:
    x0, y0 = rng.integers(0, 70, size=2)
    w, h = rng.integers(10, 30, size=2)
    return [(x0 + 0.5) / 100, (y0 + 0.5) / 100, (x0 + w + 0.5) / 100, (y0 + h + 0.5) / 100]


def synthetic(n: int, boxes_per_finding: float, seed: int = 1) -> tuple[list[Report], list[dict]]:
    rng = np.random.default_rng(seed)
    reports, references = [], []
    p_box = min(1.0, boxes_per_finding / 1.5)  # grounded findings carry 1-2 boxes
    for k in range(n):
        chosen = rng.choice(len(SENTENCES), size=int(rng.integers(3, 8)), replace=False)
        findings = []
        for idx in chosen:
            boxes = (
                [_box(rng) for _ in range(int(rng.integers(1, 3)))] if rng.random() < p_box else []
            )
            findings.append((SENTENCES[idx], boxes))
        reports.append(
            Report(
                findings=[Finding(t, [Box.from_list(b) for b in bs]) for t, bs in findings],
                study_id=f"S{k:05d}",
            )
        )
        ref = []
        for text, boxes in findings:
            if rng.random() < 0.15:
                continue  # the reference does not have it
            if rng.random() < 0.15:
                text = text.lower().rstrip(".")  # same after normalisation
            moved = [[min(1.0, v + rng.integers(-5, 6) / 200 + 0.025) for v in b] for b in boxes]
            moved = [
                [min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3])] for b in moved
            ]
            ref.append({"text": text, "boxes": moved})
        for idx in rng.choice(len(SENTENCES), size=int(rng.integers(0, 2)), replace=False):
            ref.append({"text": SENTENCES[idx], "boxes": [_box(rng)] if rng.random() < 0.5 else []})
        references.append({"study_id": f"S{k:05d}", "findings": ref})
    return reports, references


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f} at start")
    rows = []
    for label, per_finding in (("sparse", 0.6), ("dense", 3.0)):
        reports, references = synthetic(args.studies, per_finding)
        n_find = sum(len(r.findings) for r in reports) / len(reports)
        n_box = sum(r.n_boxes for r in reports) / len(reports)
        times, cpu_times, boot_times = [], [], []
        for _ in range(args.repeat):
            start, cpu = time.perf_counter(), time.process_time()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = evaluate(reports, references, bootstrap=args.bootstrap, seed=0)
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu)
            start = time.perf_counter()
            summarise(result.values, METRICS, bootstrap=args.bootstrap, seed=0)
            boot_times.append(time.perf_counter() - start)
        rows.append(
            [
                label,
                f"{args.studies:,}",
                f"{n_find:.1f}",
                f"{n_box:.1f}",
                f"{args.bootstrap:,}",
                f"{float(np.median(times)):.2f} s",
                f"{float(np.median(cpu_times)):.2f} s",
                f"{float(np.median(boot_times)):.2f} s",
                f"{result.summary['logical_precision']['value']:.3f}",
                f"{result.summary['spatial_precision']['value']:.3f}",
            ]
        )
    print_table(
        [
            "boxes",
            "studies",
            "findings/study",
            "boxes/study",
            "resamples",
            "evaluate, wall (median)",
            "CPU",
            "of which bootstrap",
            "logical precision",
            "spatial precision",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
