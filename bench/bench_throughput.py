"""Batch throughput against the local endpoint: run_batch beside the documentation's loop.

The endpoint (``LocalEndpoint``, the real azureml-inference-server-http on
127.0.0.1) simulates a CXRReportGen deployment: every request costs
``--latency`` seconds plus ``--latency-per-study`` per study on one of
``instances`` model instances; request bodies share a ``--bandwidth`` link
(5 MB/s, the Azure ML per-endpoint limit); beyond 2 pending requests per
instance it answers 429 with Retry-After, as Azure ML does. Its 413 limit is
raised to 10 MB so that the baseline's full-resolution images are accepted.

The studies: the NEMA chest radiograph RG1 as a full-resolution 8-bit PNG
(1841 x 1955, what a notebook user converts the DICOM to, since the endpoint
takes only PNG/JPEG), each with its own indication text, so every study is a
different request row.

Compared, per instance count:

* **baseline**: the model documentation's notebook loop. For each study, read
  the PNG file, ``base64.encodebytes`` its raw bytes, POST one study per
  request (``{"input_data": {...}, "params": {}}``) with urllib, wait for
  the answer, decode ``json.loads(json.loads(body)[0]["output"])``; sequential.
* **run_batch**: ``run_batch(studies, ReportGenClient(...))`` with its
  defaults (images prepared to 768 px on the shortest side, up to 10 studies
  per request within the 1.5 MB request budget, requests in flight found from
  the endpoint's answers, starting at 4), and variants named in the table.
* **capacity**: what the endpoint can do at best: ``instances x 10 /
  (latency + 10 x latency_per_study)`` studies/s when every request carries
  the maximum 10 studies, and the bandwidth bound ``bandwidth / bytes per
  study`` (run_batch's prepared bytes); the smaller of the two.

Run: .venv/bin/python bench/bench_throughput.py [--quick] [--repeat 3]
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import machine, print_table

from cxr_widgets.batch import run_batch
from cxr_widgets.client import EndpointConfig, ReportGenClient
from cxr_widgets.contract import DEFAULT_REQUEST_BUDGET
from cxr_widgets.images import prepare_image
from cxr_widgets.local.faults import FaultConfig
from cxr_widgets.local.server import LocalEndpoint
from cxr_widgets.samples import sample_path
from cxr_widgets.study import Study

MAX_ROWS = 10


@dataclass
class Measured:
    label: str
    studies: int
    seconds: float
    requests: int
    busy: int
    bytes_per_study: float
    per_request: float
    failed: int = 0  # studies the run recorded as failed (sent again by the next run)

    @property
    def per_minute(self) -> float:
        """Studies answered per minute (failed ones do not count)."""
        return 60 * (self.studies - self.failed) / self.seconds


def full_resolution_png(folder: Path) -> Path:
    """RG1 as the full-resolution 8-bit PNG a notebook user would send."""
    path = folder / "rg1_full.png"
    path.write_bytes(prepare_image(sample_path(), full_resolution=True).png)
    return path


def make_studies(png: Path, n: int, offset: int) -> list[Study]:
    return [
        Study(png, indication=f"Case {offset + i}: cough for two weeks.", study_id=f"c{offset + i}")
        for i in range(n)
    ]


def baseline_loop(uri: str, studies: list[Study]) -> None:
    """The documentation notebook's loop: raw file bytes, one study per request, in order."""
    for study in studies:
        with open(study.frontal_image, "rb") as handle:
            image = base64.encodebytes(handle.read()).decode("utf-8")
        body = {
            "input_data": {
                "columns": ["frontal_image", "indication"],
                "index": [0],
                "data": [[image, study.indication]],
            },
            "params": {},
        }
        request = urllib.request.Request(
            uri, data=json.dumps(body).encode("utf-8"), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=180) as response:
            answer = response.read()
        findings = json.loads(json.loads(answer)[0]["output"])
        assert findings, "the endpoint answered no findings"


def measure(
    label: str, endpoint: LocalEndpoint, n: int, run: Callable[[], dict[str, int]]
) -> Measured:
    before = len(endpoint.received())
    started = time.perf_counter()
    extra = run()
    seconds = time.perf_counter() - started
    log = endpoint.received()[before:]
    answered = [e for e in log if e["status"] == 200]
    failed = extra.get("failed", 0)
    assert sum(e["n_studies"] for e in answered) == n - failed, f"{label}: answers do not add up"
    return Measured(
        label=label,
        studies=n,
        seconds=seconds,
        requests=len(log),
        busy=extra.get("busy", sum(e["status"] == 429 for e in log)),
        bytes_per_study=sum(e["bytes"] for e in answered) / max(1, n - failed),
        per_request=(n - failed) / max(1, len(answered)),
        failed=failed,
    )


def run_batch_runner(
    endpoint: LocalEndpoint, studies: list[Study], **options: Any
) -> Callable[[], dict[str, int]]:
    image_options = options.pop("image_options", None)
    budget = options.pop("max_request_bytes", DEFAULT_REQUEST_BUDGET)

    def run() -> dict[str, int]:
        config = EndpointConfig(endpoint.scoring_uri, key_env=None, max_request_bytes=budget)
        with ReportGenClient(config, image_options=image_options) as client:
            result = run_batch(studies, client, progress=False, **options)
        return {"busy": result.busy, "failed": len(result.failures)}

    return run


def scenario(
    instances: int, args: argparse.Namespace, png: Path, rows: list[tuple[Any, ...]]
) -> None:
    faults = FaultConfig(
        latency=args.latency,
        latency_per_study=args.latency_per_study,
        bandwidth=args.bandwidth,
        instances=instances,
    )
    service = (args.latency + MAX_ROWS * args.latency_per_study) / MAX_ROWS
    compute_cap = 60 * instances / service
    n_batch = args.studies_per_instance * instances
    with LocalEndpoint(faults=faults, max_request_bytes=10_000_000) as endpoint:
        variants: list[tuple[str, int, Callable[[list[Study]], Callable[[], dict[str, int]]]]] = [
            (
                "baseline: notebook loop, raw PNG, 1 study/request",
                args.baseline_studies,
                lambda s: lambda: baseline_loop(endpoint.scoring_uri, s) or {},
            ),
            (
                "run_batch defaults (768 px, <= 1.5 MB/request)",
                n_batch,
                lambda s: run_batch_runner(endpoint, s),
            ),
            (
                "run_batch, 10/request (no 1.5 MB budget)",
                n_batch,
                lambda s: run_batch_runner(endpoint, s, max_request_bytes=None),
            ),
            (
                "run_batch, 518 px (9/request in 1.5 MB)",
                n_batch,
                lambda s: run_batch_runner(endpoint, s, image_options={"shortest_side": 518}),
            ),
        ]
        if 2 * instances >= 8:  # the default 8 in flight never meets the cap: go past it
            variants.append(
                (
                    "run_batch defaults, max_in_flight=16 (AIMD vs 429)",
                    n_batch,
                    lambda s: run_batch_runner(endpoint, s, max_in_flight=16),
                )
            )
        offset = 0
        for label, n, make in variants:
            results = []
            for _ in range(args.repeat):
                studies = make_studies(png, n, offset)
                offset += n
                results.append(measure(label, endpoint, n, make(studies)))
            best = sorted(results, key=lambda m: m.per_minute)[len(results) // 2]  # median
            cap = min(compute_cap, 60 * args.bandwidth / best.bytes_per_study)
            # What the endpoint can do with requests of this row's size.
            at_size = (
                60
                * instances
                * best.per_request
                / (args.latency + best.per_request * args.latency_per_study)
            )
            at_size = min(at_size, 60 * args.bandwidth / best.bytes_per_study)
            rows.append(
                (
                    instances,
                    label,
                    n,
                    f"{statistics.median(m.per_minute for m in results):.1f}",
                    f"{best.per_request:.1f}",
                    f"{best.bytes_per_study / 1e6:.2f} MB",
                    best.requests,
                    best.busy,
                    best.failed,
                    f"{cap:.0f}",
                    f"{100 * best.per_minute / cap:.0f}%",
                    f"{100 * best.per_minute / at_size:.0f}%",
                )
            )
            print(
                f"  {instances} instance(s): {label}: {best.per_minute:.1f} studies/min", flush=True
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer studies (about 2 minutes)")
    parser.add_argument("--instances", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--latency", type=float, default=1.0, help="seconds per request")
    parser.add_argument("--latency-per-study", type=float, default=1.0, help="seconds per study")
    parser.add_argument("--bandwidth", type=float, default=5e6, help="bytes/s (5 MB/s: Azure ML)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per row (median shown)")
    args = parser.parse_args()
    args.studies_per_instance = 20 if args.quick else 50
    args.baseline_studies = 6 if args.quick else 15
    print(f"machine: {machine()}")
    print(
        f"endpoint: {args.latency:g} s/request + {args.latency_per_study:g} s/study, "
        f"{args.bandwidth / 1e6:g} MB/s shared, 2 pending requests per instance (429 beyond)\n"
    )
    rows: list[tuple[Any, ...]] = []
    with tempfile.TemporaryDirectory() as tmp:
        png = full_resolution_png(Path(tmp))
        for instances in args.instances:
            scenario(instances, args, png, rows)
    print()
    print_table(
        (
            "instances",
            "method",
            "studies",
            "studies/min",
            "studies/request",
            "sent/study",
            "requests",
            "429s",
            "failed (next run)",
            "capacity/min",
            "of capacity",
            "of capacity at its request size",
        ),
        rows,
    )
    print(
        "\ncapacity: min(instances x 10 / (latency + 10 x latency_per_study), bandwidth / the "
        "row's bytes per study), in studies per minute: every request full (10 studies).\n"
        "at its request size: the same with the row's mean studies per request instead of 10 "
        "(what is left is scheduling: ramp-up, 429s, the last partial round)."
    )


if __name__ == "__main__":
    main()
