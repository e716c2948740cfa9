"""Fault soak: many studies through a flaky endpoint, killed once, restarted; nothing lost.

The local endpoint (azureml-inference-server-http on 127.0.0.1) answers 10% of
requests 429 (with Retry-After), 5% 503, drops 2% of connections without an
answer, and caps pending requests at 2 per instance (2 instances). A manifest
of distinct studies is run with ``cxr-widgets run`` in a subprocess, which is
killed with SIGKILL once part of the results are stored, then started again
(and again, if some studies still failed) until every study is answered.

Checked afterwards, from the store and the endpoint's own request log:

* every study has exactly one stored answer, and it equals what the endpoint
  answers for that study's content;
* no study stored before the kill was sent again after it;
* studies lost (not answered): must be 0.

Then a disk that fills part way: the store lives on a small tmpfs (mounting one
needs root; otherwise this part is skipped with the reason printed). The run
must stop with a message saying the disk is full (no traceback), keep every
committed result, still write ``--out``; after the disk grows, the same command
sends only what is missing and every study is stored exactly once.

Exit status 0 when every check holds. Run:
    .venv/bin/python bench/soak.py [--studies 1000] [--disk-kb 256]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from cxr_widgets.batch import prepared_key
from cxr_widgets.client import EndpointConfig
from cxr_widgets.contract import assemble_request, encode_study, parse_response
from cxr_widgets.local.demo_findings import score_payload, wire_digest
from cxr_widgets.local.faults import FaultConfig
from cxr_widgets.local.server import LocalEndpoint
from cxr_widgets.manifest import read_manifest, write_manifest
from cxr_widgets.store import ResultStore

MAX_RUNS = 6


def make_manifest(folder: Path, n: int) -> Path:
    """``n`` distinct small PNG studies (noise, so each image differs) and a manifest."""
    images = folder / "images"
    images.mkdir(parents=True)
    rows = []
    for i in range(n):
        pixels = np.random.default_rng(i).integers(0, 256, size=(120, 140), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        path = images / f"study{i:05d}.png"
        path.write_bytes(buffer.getvalue())
        rows.append({"study_id": f"S{i:05d}", "frontal": path, "indication": f"Soak study {i}."})
    return write_manifest(folder / "manifest.csv", rows)


def ok_count(store: Path) -> int:
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM results WHERE status='ok'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def run_command(manifest: Path, uri: str, store: Path, batch_size: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "cxr_widgets.cli",
        "run",
        str(manifest),
        "--scoring-uri",
        uri,
        "--store",
        str(store),
        "--key-env",
        "CXR_SOAK_NO_KEY",
        "--no-progress",
        "--batch-size",
        str(batch_size),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--kill-at", type=float, default=0.4, help="fraction stored at the kill")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per request")
    parser.add_argument("--latency-per-study", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=10, help="studies per request")
    parser.add_argument("--disk-kb", type=int, default=256, help="tmpfs size for the full disk")
    args = parser.parse_args()
    n = args.studies
    faults = FaultConfig(
        latency=args.latency,
        latency_per_study=args.latency_per_study,
        instances=2,
        rate_429=0.10,
        rate_503=0.05,
        rate_drop=0.02,
        retry_after=1.0,
        seed=args.seed,
    )
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        manifest = make_manifest(folder, n)
        studies = read_manifest(manifest)
        store = folder / "results.sqlite"
        with LocalEndpoint(faults=faults) as endpoint:
            command = run_command(manifest, endpoint.scoring_uri, store, args.batch_size)
            started = time.monotonic()
            child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            target = max(1, int(args.kill_at * n))
            while ok_count(store) < target:
                if child.poll() is not None:
                    print(child.stderr.read().decode(errors="replace"), file=sys.stderr)  # type: ignore[union-attr]
                    print("the first run ended before the kill", file=sys.stderr)
                    return 2
                time.sleep(0.02)
            child.send_signal(signal.SIGKILL)
            child.wait()
            child.stderr.close()  # type: ignore[union-attr]
            with ResultStore(store) as opened:
                stored_at_kill = opened.ok_keys()
            time.sleep(0.5)  # requests in flight at the kill finish at the endpoint
            restart_at = len(endpoint.received())
            runs = 1
            while True:
                runs += 1
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode == 0 or runs >= MAX_RUNS:
                    break
                if done.returncode != 1:
                    print(done.stderr, file=sys.stderr)
                    return 2
            wall = time.monotonic() - started
            if done.returncode != 0:
                problems.append(f"studies still failing after {runs} runs")
            log = endpoint.received()
            identity = EndpointConfig(endpoint.scoring_uri, key_env=None).identity

        # What the endpoint answers for each study's content, and where the store keeps it.
        expected: dict[str, tuple[str, list]] = {}  # key -> (digest, wire findings)
        for study in studies:
            encoded = encode_study(study)
            answer = score_payload(assemble_request([encoded]).payload)
            (report,) = parse_response(json.dumps(answer), n_studies=1)
            expected[prepared_key(encoded, identity, {})] = (
                wire_digest(encoded.columns, encoded.row),
                [f.to_wire() for f in report.findings],
            )
        with ResultStore(store) as opened:
            results = list(opened.results())
        stored_keys = [r.key for r in results if r.ok]
        lost = len(set(expected) - set(stored_keys))
        if len(stored_keys) != len(set(stored_keys)) or set(stored_keys) != set(expected):
            problems.append("the store does not hold exactly one answer per study")
        wrong = [
            r.study_id
            for r in results
            if r.ok
            and r.key in expected
            and [f.to_wire() for f in r.report.findings] != expected[r.key][1]  # type: ignore[union-attr]
        ]
        if wrong:
            problems.append(f"{len(wrong)} stored answers differ from the endpoint's")
        before = {expected[k][0] for k in stored_at_kill}
        resent = {d for e in log[restart_at:] for d in e["sha256"] if d in before}
        if resent:
            problems.append(f"{len(resent)} studies stored before the kill were sent again")
        answered = Counter(d for e in log if e["status"] == 200 for d in e["sha256"])
        twice = {d for d, c in answered.items() if c > 1}
        if twice & before:
            problems.append("a study stored before the kill was answered twice")

    statuses = Counter("dropped" if e["fault"] == "drop" else str(e["status"]) for e in log)
    cap = sum(e["fault"] == "pending_cap" for e in log)
    ok_requests = statuses.get("200", 0)
    rows = [
        ("studies", n),
        ("runs (1 killed with SIGKILL)", runs),
        ("stored at the kill", len(stored_at_kill)),
        ("requests received", len(log)),
        ("  answered 200", ok_requests),
        ("  429 injected / pending cap", f"{statuses.get('429', 0) - cap} / {cap}"),
        ("  503 injected", statuses.get("503", 0)),
        ("  dropped connections", statuses.get("dropped", 0)),
        ("retries (requests - answered)", len(log) - ok_requests),
        ("answered twice (in flight at the kill)", len(twice)),
        ("stored studies sent again", len(resent)),
        ("wall time", f"{wall:.1f} s"),
        ("studies lost", lost),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")
    print()
    disk_problems = disk_full(args)
    for problem in problems + disk_problems:
        print(f"FAILED: {problem}")
    return 1 if problems or disk_problems or lost else 0


def disk_full(args: argparse.Namespace) -> list[str]:
    """A store on a tmpfs of ``--disk-kb`` that fills mid-run, then grows; the checks' failures."""
    if os.geteuid() != 0:
        print("disk-full soak skipped: mounting a small tmpfs needs root")
        return []
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        manifest = make_manifest(folder, args.studies)
        disk = folder / "disk"
        disk.mkdir()
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={args.disk_kb}k", "tmpfs", str(disk)],
            capture_output=True,
            text=True,
        )
        if mounted.returncode:
            print(f"disk-full soak skipped: mount failed ({mounted.stderr.strip()})")
            return []
        try:
            store, out = disk / "results.sqlite", folder / "reports.jsonl"
            faults = FaultConfig(latency=args.latency, latency_per_study=args.latency_per_study)
            with LocalEndpoint(faults=faults) as endpoint:
                command = [
                    *run_command(manifest, endpoint.scoring_uri, store, args.batch_size),
                    "--out",
                    str(out),
                ]
                started = time.monotonic()
                first = subprocess.run(command, capture_output=True, text=True)
                stored_first = ok_count(store)
                with ResultStore(store) as opened:
                    kept = opened.ok_keys()
                out_ok = (
                    sum(json.loads(line)["status"] == "ok" for line in out.read_text().splitlines())
                    if out.exists()
                    else 0
                )
                restart_at = len(endpoint.received())
                subprocess.run(
                    ["mount", "-o", "remount,size=64m", str(disk)], check=True, capture_output=True
                )
                second = subprocess.run(command, capture_output=True, text=True)
                wall = time.monotonic() - started
                log = endpoint.received()
            studies = read_manifest(manifest)
            identity = EndpointConfig(endpoint.scoring_uri, key_env=None).identity
            digest_of = {}
            for study in studies:
                encoded = encode_study(study)
                digest_of[prepared_key(encoded, identity, {})] = wire_digest(
                    encoded.columns, encoded.row
                )
            with ResultStore(store) as opened:
                final = [r.key for r in opened.results("ok")]
            resent = {d for e in log[restart_at:] for d in e["sha256"]} & {
                digest_of[k] for k in kept if k in digest_of
            }
            lost = len(set(digest_of) - set(final))
            if first.returncode != 1 or "the disk is full" not in first.stderr:
                problems.append(
                    f"the full disk did not stop the run with its message: {first.stderr[-300:]}"
                )
            if "Traceback" in first.stderr + second.stderr:
                problems.append("a traceback was printed")
            if not 0 < stored_first < args.studies:
                problems.append(f"the disk did not fill part way ({stored_first} stored)")
            if out_ok < stored_first:
                problems.append(
                    f"--out holds {out_ok} reports, fewer than the {stored_first} stored"
                )
            if second.returncode != 0:
                problems.append(f"the resumed run failed: {second.stderr[-300:]}")
            if resent:
                problems.append(
                    f"{len(resent)} studies stored before the disk filled were sent again"
                )
            if lost or len(final) != len(set(final)) or set(final) != set(digest_of):
                problems.append("the store does not hold exactly one answer per study")
        finally:
            subprocess.run(["umount", str(disk)], capture_output=True)
    rows = [
        ("studies", args.studies),
        (f"stored when the {args.disk_kb} KB disk filled", stored_first),
        (
            "first run: exit code / message",
            f"{first.returncode} / disk is full: {'the disk is full' in first.stderr}",
        ),
        ("reports in --out after the first run", out_ok),
        ("stored studies sent again after the disk grew", len(resent)),
        ("wall time (both runs)", f"{wall:.1f} s"),
        ("studies lost", lost),
    ]
    width = max(len(name) for name, _ in rows)
    print("disk that fills part way:")
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")
    return problems


if __name__ == "__main__":
    sys.exit(main())
