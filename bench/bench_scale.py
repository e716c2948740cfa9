"""Scale: run_batch's share of an endpoint's capacity, preparation speed, memory (issue 17).

Three tables from one run:

1. **Capacity used**, with run_batch's defaults (no ``max_in_flight``), against
   the local endpoint (the real azureml-inference-server-http on 127.0.0.1)
   with 1, 4, 16 and 32 simulated instances, each scoring one request at a
   time and holding two (429 beyond, as Azure ML does with
   ``max_concurrent_requests_per_instance: 1``), and a run whose endpoint
   grows from 4 to 16 instances half way (``FaultConfig.instances_file``).
   Short simulated latencies (``--latency`` per request + ``--per-study``)
   keep it to a few minutes. The studies are small images with distinct
   indications, so the endpoint's model time, not preparation, is what is
   measured here. Capacity = instances x 10 / (latency + 10 x per_study)
   studies/s (every request full), integrated over the run for the growth case.
2. **Preparation throughput**: :class:`~cxr_widgets.prepare_pool.PreparePool`
   with 1 and 2 worker processes, studies/s and per core, for the NEMA chest
   DICOM (RG1_UNCR.dcm, 1841 x 1955, 15-bit) and the same image as an 8-bit
   PNG, every study a distinct file (no reuse).
3. **Peak memory** (resident set, ``ru_maxrss``) of a process running a
   100,000-study manifest (CSV, read with ``read_manifest``) through
   run_batch on the demo backend.

Run: .venv/bin/python bench/bench_scale.py [--quick]  (about 7 minutes; --quick about 3)

Each run starts at 4 requests in flight (the endpoint's size unknown) and
doubles per round trip: the ramp costs a few seconds, which is why the runs
last 40 s (in a run of hours it is nothing).
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from common import machine, print_table
from PIL import Image

from cxr_widgets.batch import run_batch
from cxr_widgets.client import EndpointConfig, ReportGenClient
from cxr_widgets.images import prepare_image
from cxr_widgets.local.faults import FaultConfig
from cxr_widgets.local.server import LocalEndpoint
from cxr_widgets.prepare_pool import PreparePool
from cxr_widgets.samples import sample_path
from cxr_widgets.study import Study

ROWS = 10  # studies per request (the contract's maximum, run_batch's default)


def small_png(side: int = 64) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, size=(side, side), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def capacity_row(
    label: str, steps: list[tuple[float, int]], seconds: float, args: argparse.Namespace
) -> tuple[object, ...]:
    """One run at the given instance counts ([(from second, instances)], growth by file)."""
    service = args.latency + ROWS * args.per_study
    rate = {n: n * ROWS / service for _, n in steps}  # studies/s at n instances
    n_studies = int(sum(rate[n] * (end - start) for (start, n), end in _spans(steps, seconds)))
    n_studies -= n_studies % ROWS
    image = small_png()
    studies = [Study(image, indication=f"case {i}", study_id=f"c{i}") for i in range(n_studies)]
    with tempfile.TemporaryDirectory() as tmp:
        count = Path(tmp) / "instances"
        count.write_text(str(steps[0][1]))
        top = max(n for _, n in steps)
        faults = FaultConfig(
            latency=args.latency,
            latency_per_study=args.per_study,
            instances=steps[0][1],
            retry_after=args.retry_after,
            instances_file=str(count),
        )
        with LocalEndpoint(faults=faults, threads=2 * top + 16) as endpoint:
            config = EndpointConfig(endpoint.scoring_uri, key_env=None)
            timers = [
                threading.Timer(start, count.write_text, args=(str(n),)) for start, n in steps[1:]
            ]
            with ReportGenClient(config) as client:
                started = time.monotonic()
                for timer in timers:
                    timer.start()
                result = run_batch(studies, client, progress=False)
                wall = time.monotonic() - started
            for timer in timers:
                timer.cancel()
            log = endpoint.received()
    answered = sum(e["n_studies"] for e in log if e["status"] == 200)
    assert result.ok == n_studies == answered, "a study was lost or answered twice"
    possible = sum(rate[n] * (end - start) for (start, n), end in _spans(steps, wall))
    return (
        label,
        n_studies,
        f"{wall:.1f}",
        f"{n_studies / wall:.1f}",
        f"{possible / wall:.1f}",
        f"{100 * n_studies / possible:.0f}%",
        result.peak_limit,
        result.busy,
        result.limited_by,
    )


def _spans(steps: list[tuple[float, int]], end: float) -> list[tuple[tuple[float, int], float]]:
    bounds = [start for start, _ in steps[1:]] + [float("inf")]
    return [
        ((min(start, end), n), min(stop, end))
        for (start, n), stop in zip(steps, bounds, strict=True)
    ]


def preparation_rows(args: argparse.Namespace) -> list[tuple[object, ...]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        dicom = sample_path()
        png = prepare_image(dicom, full_resolution=True).png
        for kind, make in (
            ("NEMA DICOM RG1_UNCR (1841 x 1955, 15-bit)", lambda p: shutil.copy(dicom, p)),
            ("the same as an 8-bit PNG", lambda p: p.write_bytes(png)),
        ):
            paths = []
            for i in range(args.prepare_studies):
                path = folder / f"{'d' if 'DICOM' in kind else 'p'}{i}"
                make(path)
                # A byte of difference per file: no two contents alike, none reused.
                with open(path, "ab") as handle:
                    handle.write(bytes([i % 256, i // 256]))
                paths.append(path)
            for workers in (1, 2):
                with PreparePool(workers=workers, processes=True) as pool:
                    pool.encode(Study(paths[0]))  # start the worker processes
                    threads = []
                    started = time.perf_counter()
                    chunks = [paths[1 + k :: workers * 2] for k in range(workers * 2)]
                    for chunk in chunks:
                        thread = threading.Thread(
                            target=lambda c=chunk: [pool.encode(Study(p)) for p in c]
                        )
                        thread.start()
                        threads.append(thread)
                    for thread in threads:
                        thread.join()
                    seconds = time.perf_counter() - started
                n = len(paths) - 1
                rows.append((kind, workers, f"{n / seconds:.2f}", f"{n / seconds / workers:.2f}"))
    return rows


MEMORY_CHILD = """
import resource, sys, time
from cxr_widgets.batch import run_batch
from cxr_widgets.demo import DemoBackend
from cxr_widgets.manifest import read_manifest
studies = read_manifest(sys.argv[1])
result = run_batch(studies, DemoBackend(), progress=False)
assert result.ok == len(studies), result
print(len(studies), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, result.wall_time)
"""


def memory_row(n: int) -> tuple[object, ...]:
    """A child process runs a manifest of n studies (distinct rows, a few shared images)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        images = []
        for k in range(8):
            pixels = np.random.default_rng(k).integers(0, 256, size=(128, 128), dtype=np.uint8)
            path = folder / f"img{k}.png"
            Image.fromarray(pixels).save(path)
            images.append(path.name)
        manifest = folder / "manifest.csv"
        with open(manifest, "w", encoding="utf-8") as out:
            out.write("study_id,frontal,indication\n")
            for i in range(n):
                out.write(f"s{i},{images[i % len(images)]},case {i}: cough\n")
        answer = subprocess.run(
            [sys.executable, "-c", MEMORY_CHILD, str(manifest)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
    count, maxrss_kb, wall = answer.stdout.split()
    return (f"{int(count):,}", f"{int(maxrss_kb) / 1024:.0f} MB", f"{float(wall):.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--latency", type=float, default=0.3, help="seconds per request")
    parser.add_argument("--per-study", type=float, default=0.07, help="seconds per study")
    parser.add_argument("--retry-after", type=float, default=0.5, help="Retry-After on 429, s")
    parser.add_argument("--seconds", type=float, default=40.0, help="target length of a run")
    parser.add_argument("--grow-at", type=float, default=30.0, help="4 -> 16 after this, s")
    parser.add_argument("--instances", type=int, nargs="+", default=[1, 4, 16, 32])
    parser.add_argument("--manifest", type=int, default=100_000, help="studies in the manifest")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.grow_at, args.manifest = 15.0, 10.0, 20_000
    args.prepare_studies = 9 if args.quick else 17
    print(f"machine: {machine()}")
    service = args.latency + ROWS * args.per_study
    print(
        f"endpoint: {args.latency:g} s/request + {args.per_study:g} s/study ({service:g} s for "
        f"a full request), 2 pending per instance (429 beyond, Retry-After {args.retry_after:g} "
        "s); run_batch defaults\n",
        flush=True,
    )
    rows = []
    for n in args.instances:
        rows.append(capacity_row(f"{n} instance(s)", [(0.0, n)], args.seconds, args))
        print("  ", rows[-1], flush=True)
    half = args.grow_at  # twice as long: half at 4, half at 16
    rows.append(capacity_row("4 -> 16 instances half way", [(0.0, 4), (half, 16)], 2 * half, args))
    print("  ", rows[-1], flush=True)
    print()
    print_table(
        (
            "endpoint",
            "studies",
            "wall s",
            "studies/s",
            "capacity studies/s",
            "of capacity",
            "peak in flight",
            "429s",
            "limited by",
        ),
        rows,
    )
    print("\npreparation (PreparePool, worker processes; every file distinct):", flush=True)
    print_table(("image", "workers", "studies/s", "studies/s per worker"), preparation_rows(args))
    print(f"\npeak memory of a {args.manifest:,}-study manifest (demo backend):", flush=True)
    print_table(("studies", "peak resident memory", "wall s"), [memory_row(args.manifest)])
    print(f"\n(this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")


if __name__ == "__main__":
    main()
