"""run_batch: grouping, packing, resume, failures, adaptive concurrency, exports, SIGKILL."""

from __future__ import annotations

import io
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from cxr_widgets.adaptive import DEFAULT_START
from cxr_widgets.batch import (
    MAX_BUSY_REQUESTS,
    BatchResult,
    prepared_key,
    run_batch,
)
from cxr_widgets.client import EndpointConfig, ReportGenClient
from cxr_widgets.contract import DEFAULT_REQUEST_BUDGET, assemble_request, encode_study
from cxr_widgets.demo import DemoBackend
from cxr_widgets.errors import (
    ConfigError,
    EndpointAuthError,
    EndpointBusyError,
    RequestError,
    RequestTooLargeError,
    StoreError,
)
from cxr_widgets.local.demo_findings import wire_digest
from cxr_widgets.local.faults import FaultConfig
from cxr_widgets.local.server import LocalEndpoint
from cxr_widgets.manifest import read_manifest, write_manifest
from cxr_widgets.store import ResultStore, load_jsonl
from cxr_widgets.study import Study

CLI = [sys.executable, "-m", "cxr_widgets.cli"]


# --- fixtures ------------------------------------------------------------------------------


def png_bytes(seed: int, size: tuple[int, int] = (96, 80)) -> bytes:
    """A small grayscale PNG whose content differs for every seed."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0]), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def stored_png(seed: int) -> bytes:
    """An uncompressed noise PNG: its size depends on the shape only."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(80, 96), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=0)
    return buffer.getvalue()


def write_images(folder: Path, n: int, start: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in range(start, start + n):
        path = folder / f"img{seed:04d}.png"
        path.write_bytes(png_bytes(seed))
        paths.append(path)
    return paths


def small_studies(n: int, start: int = 0) -> list[Study]:
    return [Study(png_bytes(i), study_id=f"s{i}") for i in range(start, start + n)]


@pytest.fixture(scope="module")
def endpoint() -> LocalEndpoint:
    with LocalEndpoint() as running:
        yield running


def client_for(endpoint: LocalEndpoint, **options: object) -> ReportGenClient:
    return ReportGenClient(EndpointConfig(endpoint.scoring_uri, **options))  # type: ignore[arg-type]


def digests(studies: list[Study], **image_options: object) -> list[str]:
    """What the endpoint's request log records for each study."""
    out = []
    for study in studies:
        encoded = encode_study(study, **image_options)
        out.append(wire_digest(encoded.columns, encoded.row))
    return out


def log_since(endpoint: LocalEndpoint, start: int) -> list[dict]:
    return endpoint.received()[start:]


# --- grouping, packing, order ------------------------------------------------------------


def test_groups_by_columns_and_splits_over_ten(endpoint: LocalEndpoint) -> None:
    plain = small_studies(13)
    texted = [
        s.replace(indication="Cough.", study_id=s.study_id + "-i") for s in small_studies(4, 100)
    ]
    lateral = [Study(png_bytes(200), lateral_image=png_bytes(201), study_id="lat")]
    studies = [*plain[:5], *texted[:2], *lateral, *plain[5:], *texted[2:]]
    start = len(endpoint.received())
    with client_for(endpoint) as client:
        result = run_batch(studies, client, progress=False)
    assert result.ok == len(studies) and result.failed == 0
    assert [r.study_id for r in result.reports] == [s.study_id for s in studies]  # input order
    column_of = {}
    for group, studies_in in (("plain", plain), ("texted", texted), ("lateral", lateral)):
        for digest in digests(studies_in):
            column_of[digest] = group
    log = log_since(endpoint, start)
    assert all(e["status"] == 200 for e in log)
    sizes: dict[str, list[int]] = {}
    for entry in log:
        groups = {column_of[d] for d in entry["sha256"]}
        assert len(groups) == 1, "a request mixed studies with different columns"
        sizes.setdefault(groups.pop(), []).append(entry["n_studies"])
    assert sorted(sizes["plain"]) == [3, 10]
    assert sizes["texted"] == [4] and sizes["lateral"] == [1]
    assert result.requests == len(log) == 4
    assert sorted(d for e in log for d in e["sha256"]) == sorted(column_of)  # each once


def test_batch_size_and_request_budget(endpoint: LocalEndpoint, rg1_path: Path) -> None:
    start = len(endpoint.received())
    studies = small_studies(7)
    with client_for(endpoint) as client:
        result = run_batch(studies, client, progress=False, batch_size=3)
    assert sorted(e["n_studies"] for e in log_since(endpoint, start)) == [1, 3, 3]
    assert result.requests == 3
    # RG1 prepares to ~318 KB of base64: the 1.5 MB budget allows 4 per request.
    start = len(endpoint.received())
    rg1 = [Study(rg1_path, indication=f"case {i}", study_id=f"rg{i}") for i in range(6)]
    with client_for(endpoint) as client:
        result = run_batch(rg1, client, progress=False)
    log = log_since(endpoint, start)
    assert result.ok == 6 and sorted(e["n_studies"] for e in log) == [2, 4]
    assert all(e["bytes"] <= DEFAULT_REQUEST_BUDGET for e in log)


def test_duplicate_studies_are_sent_once() -> None:
    backend = DemoBackend()
    study = small_studies(1)[0]
    twin = study.replace(study_id="twin")
    result = run_batch([study, twin, *small_studies(2, 5)], backend, progress=False)
    assert result.ok == 4 and result.sent == 3 and backend.requests == 1
    assert result.duplicates == 1 and result.skipped == 0
    assert result.reports[1].study_id == "twin" and result.keys[0] == result.keys[1]
    assert result.reports[0].findings == result.reports[1].findings
    # A twin prepared after the first answer arrived is not sent either (nor "from the store").
    many = [study.replace(study_id=f"copy{i}") for i in range(25)]
    backend = DemoBackend()
    result = run_batch(many, backend, progress=False, batch_size=2, prepare_workers=1)
    assert backend.requests == 1 and result.ok == 25 and result.duplicates == 24
    assert [r.study_id for r in result.reports] == [s.study_id for s in many]


def test_display_images_stay_with_the_result_not_the_reports(tmp_path: Path) -> None:
    from cxr_widgets import prepare_image

    study = small_studies(1)[0]
    studies = [study, study.replace(study_id="twin"), *small_studies(2, 5)]
    store = tmp_path / "r.sqlite"
    kept = run_batch(studies, DemoBackend(), store=store, keep_images=True, progress=False)
    assert kept.ok == 4 and len(kept.images) == 4
    for s, image, report in zip(studies, kept.images, kept.reports, strict=True):
        expected = prepare_image(s.frontal_image).image  # what was sent, at the sent size
        assert image is not None and image.size == expected.size
        assert image.tobytes() == expected.tobytes()
        assert report is not None and not hasattr(report, "frontal_image")
    assert kept.images[0] is kept.images[1]  # the twin shares its original's image
    again = run_batch(studies, DemoBackend(), store=store, keep_images=True, progress=False)
    assert again.skipped == 4 and again.images == [None] * 4  # answered from the store
    plain = run_batch(small_studies(3), DemoBackend(), progress=False)
    assert plain.ok == 3 and plain.images == [None] * 3  # off by default: memory stays bounded


def test_unreadable_image_fails_alone(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    studies = [*small_studies(3), Study(bad, study_id="broken"), *small_studies(2, 10)]
    store = tmp_path / "r.sqlite"
    result = run_batch(studies, DemoBackend(), store=store, progress=False)
    assert result.ok == 5 and result.failed == 1
    (failure,) = result.failures
    assert failure.index == 3 and failure.study_id == "broken"
    assert failure.error_type == "ImageError" and "broken.png" in failure.message
    assert result.reports[3] is None and result.reports[4] is not None
    with ResultStore(store) as opened:
        assert opened.counts() == {"ok": 5, "error": 0, "total": 5}


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="batch_size must be 1 to 10"):
        run_batch(small_studies(1), DemoBackend(), batch_size=11)
    with pytest.raises(ConfigError, match="max_in_flight"):
        run_batch(small_studies(1), DemoBackend(), max_in_flight=0)
    with pytest.raises(RequestError, match=r"studies\[1\] is a str"):
        run_batch([small_studies(1)[0], "x.png"], DemoBackend())  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="ReportGenClient or DemoBackend"):
        run_batch(small_studies(1), object())  # type: ignore[arg-type]


# --- resume --------------------------------------------------------------------------------


def test_resume_sends_only_what_is_missing(tmp_path: Path, endpoint: LocalEndpoint) -> None:
    paths = write_images(tmp_path / "images", 15)
    studies = [Study(p, indication="Fever.", study_id=p.stem) for p in paths]
    store = tmp_path / "r.sqlite"
    with client_for(endpoint) as client:
        first = run_batch(studies[:12], client, store=store, progress=False)
        assert first.ok == 12 and first.skipped == 0 and first.prepare_time > 0
        start = len(endpoint.received())
        second = run_batch(studies, client, store=store, progress=False)
        sent = [d for e in log_since(endpoint, start) for d in e["sha256"]]
        assert sorted(sent) == sorted(digests(studies[12:]))  # only the 3 new ones
        assert second.skipped == 12 and second.sent == 3 and second.ok == 15
        assert [r.study_id for r in second.reports] == [s.study_id for s in studies]
        assert second.reports[:12] == [
            r
            for r in first.reports  # the stored reports come back unchanged
        ]
        # Unchanged files: keys come from the digest cache, nothing is prepared or sent.
        start = len(endpoint.received())
        third = run_batch(studies, client, store=store, progress=False)
        assert third.skipped == 15 and third.requests == 0 and third.prepare_time == 0
        # A touched file (same bytes) is still found by its content: not prepared, not sent.
        os.utime(paths[0], ns=(10**18, 10**18))
        fourth = run_batch(studies, client, store=store, progress=False)
        assert fourth.skipped == 15 and fourth.requests == 0 and fourth.prepare_time == 0
        assert log_since(endpoint, start) == []
    # Another endpoint, image size or text is another key: sent again.
    with ResultStore(store) as opened:
        assert len(opened) == 15
    changed = run_batch(
        [studies[0].replace(indication="Cough.")], DemoBackend(), store=store, progress=False
    )
    assert changed.skipped == 0 and changed.sent == 1


def test_failed_studies_are_recorded_and_retried(tmp_path: Path) -> None:
    studies = small_studies(24)
    store = tmp_path / "r.sqlite"
    faults = FaultConfig(rate_503=0.5, seed=3)
    with LocalEndpoint(faults=faults) as flaky:
        client = client_for(flaky, max_retries=0)
        wire = dict(zip(digests(studies), range(len(studies)), strict=True))
        result = run_batch(
            studies, client, store=store, progress=False, max_in_flight=1, batch_size=4
        )
        assert 0 < result.failed < 24 and result.ok + result.failed == 24
        assert {f.error_type for f in result.failures} == {"EndpointServerError"}
        failed = {f.index for f in result.failures}
        with ResultStore(store) as opened:
            errors = list(opened.results("error"))
            assert len(errors) == len(failed) and all(e.attempts == 1 for e in errors)
            assert all("503" in (e.error_message or "") for e in errors)
        for _ in range(12):
            start = len(flaky.received())
            again = run_batch(
                studies, client, store=store, progress=False, max_in_flight=1, batch_size=4
            )
            sent = {wire[d] for e in log_since(flaky, start) for d in e["sha256"]}
            assert sent == failed  # only what had failed is sent again
            assert again.skipped == 24 - len(failed)
            failed = {f.index for f in again.failures}
            if not failed:
                break
        assert not failed, "studies still failing after 12 runs at 50% 503"
        with ResultStore(store) as opened:
            assert opened.counts() == {"ok": 24, "error": 0, "total": 24}
            assert any(r.attempts > 1 for r in opened.results("ok"))
        client.close()


def test_retry_failed_false_reports_stored_failures(tmp_path: Path) -> None:
    studies = small_studies(3)
    store = tmp_path / "r.sqlite"
    key = run_batch(studies[:1], DemoBackend(), progress=False).keys[0]
    with ResultStore(store) as opened:
        opened.put_many_errors([(key, "s0")], ("ModelError", "the model failed (424)"))
    result = run_batch(studies, DemoBackend(), store=store, progress=False, retry_failed=False)
    assert result.ok == 2 and result.skipped == 1
    (failure,) = result.failures
    assert failure.from_store and failure.error_type == "ModelError" and failure.index == 0


# --- the endpoint pushing back --------------------------------------------------------------


def test_adaptive_concurrency_backs_off_on_429() -> None:
    faults = FaultConfig(latency=0.15, instances=1)  # 2 pending at most, as Azure ML
    studies = small_studies(30)
    with LocalEndpoint(faults=faults) as busy:
        with client_for(busy) as client:
            result = run_batch(studies, client, progress=False, batch_size=1, max_in_flight=6)
        log = busy.received()
    assert result.ok == 30 and result.failed == 0
    capped = [e for e in log if e["fault"] == "pending_cap"]
    assert capped and all(e["status"] == 429 for e in capped)
    assert result.busy == len(capped) and result.backoffs >= 1
    assert result.peak_limit > 2 and result.final_limit < 6
    answered = [d for e in log if e["status"] == 200 for d in e["sha256"]]
    assert sorted(answered) == sorted(digests(studies))  # each study answered once


def test_requests_refused_at_the_start_while_long_ones_are_taken_are_sent_again() -> None:
    """1 instance (2 pending at most) and requests of 1.5 s: of the first requests, 2 are
    taken and the rest refused through all of the client's retries before any answer. The
    endpoint holds this run's requests, so those are queued again, not failed, and the run
    keeps no more in flight than it holds."""
    faults = FaultConfig(latency=1.5, instances=1, retry_after=0.05)
    studies = small_studies(6)
    with LocalEndpoint(faults=faults) as endpoint:
        with client_for(endpoint, max_retries=2) as client:
            result = run_batch(studies, client, progress=False, batch_size=1)
        log = endpoint.received()
    first_answer = min(e["time"] + e["seconds"] for e in log if e["status"] == 200)
    refused_early = [e for e in log if e["status"] == 429 and e["time"] < first_answer]
    assert len(refused_early) >= 3 * (DEFAULT_START - 2)  # every attempt of 2 requests
    assert result.ok == 6 and result.failed == 0 and result.final_limit <= 2
    answered = [d for e in log if e["status"] == 200 for d in e["sha256"]]
    assert sorted(answered) == sorted(digests(studies))  # each study answered once


def test_a_429_storm_costs_at_most_the_documented_attempts(tmp_path: Path) -> None:
    """The client owns retries; the run never requeues on top and stops when refused."""
    faults = FaultConfig(rate_429=1.0, retry_after=0.01)
    studies = small_studies(40)
    store = tmp_path / "r.sqlite"
    in_flight = 4
    with LocalEndpoint(faults=faults) as storm:
        client = client_for(storm, max_retries=2)
        attempts = client.config.max_retries + 1  # per request, documented by the client
        with pytest.raises(EndpointBusyError, match=r"kept refusing.*run again later") as raised:
            run_batch(
                studies, client, store=store, progress=False, batch_size=1, max_in_flight=in_flight
            )
        client.close()
        received = len(storm.received())
    per_run = (MAX_BUSY_REQUESTS + in_flight - 1) * attempts
    assert 0 < received <= per_run
    result = raised.value.result  # type: ignore[attr-defined]
    assert result.ok == 0 and result.requests <= MAX_BUSY_REQUESTS + in_flight - 1
    assert received <= result.requests * attempts  # no request tried more than the client does
    with ResultStore(store) as opened:
        assert opened.counts()["ok"] == 0 and opened.counts()["error"] == result.failed
    # The endpoint recovers: the same command resumes and answers everything.
    again = run_batch(studies, DemoBackend(), store=store, progress=False)
    assert again.ok == 40


class _QueueFullOnce(DemoBackend):
    """Three requests sent at once: the first is answered after ``hold`` seconds; then
    the second ends in 429 (the client's retries spent) while the third is still held;
    the third and the rest are answered."""

    def __init__(self, hold: float) -> None:
        super().__init__()
        self.hold, self.calls, self.refused = hold, 0, 0
        self._lock = threading.Lock()
        self._first_answered = threading.Event()
        self._second_refused = threading.Event()

    def send(self, request):  # type: ignore[no-untyped-def]
        with self._lock:
            self.calls += 1
            call = self.calls
        if call == 1:
            time.sleep(self.hold)
            reports = super().send(request)
            self._first_answered.set()
            return reports
        if call == 2:
            self._first_answered.wait(30)
            time.sleep(0.05)  # the runner has taken the first answer in by now
            self.refused += 1
            self._second_refused.set()
            raise EndpointBusyError("busy (429) after the client's retries", status=429)
        if call == 3:
            self._second_refused.wait(30)
            time.sleep(0.3)  # still held by the endpoint when the refusal is taken in
        return super().send(request)


def test_a_request_refused_while_others_are_answered_is_queued_again_once() -> None:
    """Long requests outlast the client's retries while the run finds the endpoint's
    level: such a request is sent once more, not failed (it was a lost study per run)."""
    backend = _QueueFullOnce(hold=0.5)
    studies = small_studies(6)
    result = run_batch(studies, backend, progress=False, batch_size=1, start_in_flight=3)
    assert backend.refused == 1
    assert result.ok == 6 and result.failed == 0
    assert backend.calls == 7  # six studies, one of them sent twice
    assert result.requests == 7


def test_a_request_refused_before_anything_is_answered_fails() -> None:
    """Without an answer in between, a 429 is not the run's own overshoot: no second try."""

    class Refuses(DemoBackend):
        calls = 0

        def send(self, request):  # type: ignore[no-untyped-def]
            Refuses.calls += 1
            if Refuses.calls == 1:
                raise EndpointBusyError("busy (429) after the client's retries", status=429)
            return super().send(request)

    result = run_batch(small_studies(3), Refuses(), progress=False, batch_size=1, max_in_flight=1)
    assert result.failed == 1 and result.ok == 2 and Refuses.calls == 3


def test_wrong_key_stops_the_run(tmp_path: Path) -> None:
    with LocalEndpoint(key="the-right-key") as locked:
        client = client_for(locked, key="a-wrong-key")
        with pytest.raises(EndpointAuthError, match="refused the credentials"):
            run_batch(
                small_studies(40), client, store=tmp_path / "r.sqlite", progress=False, batch_size=2
            )
        client.close()
        # Stopped at once: the first requests in flight, nothing sent after (not 20 requests).
        assert 1 <= len(locked.received()) <= DEFAULT_START
    with ResultStore(tmp_path / "r.sqlite") as opened:
        assert opened.counts()["ok"] == 0


# --- results ----------------------------------------------------------------------------------


def test_exports_load_back(tmp_path: Path) -> None:
    studies = small_studies(6)
    studies[2] = studies[2].replace(indication="Cough.")
    result = run_batch(studies, DemoBackend(), store=tmp_path / "r.sqlite", progress=False)
    assert result.ok == 6 and all(r.demo for r in result.reports)
    jsonl = tmp_path / "out.jsonl"
    assert result.export(jsonl) == 6
    assert load_jsonl(jsonl) == result.reports
    csv_path = tmp_path / "out.csv"
    rows = result.export(csv_path)
    assert rows == sum(len(r.to_records()) for r in result.reports)
    assert len(csv_path.read_text().splitlines()) == rows + 1
    frame = result.to_dataframe()
    assert len(frame) == rows and set(frame["study_id"]) == {s.study_id for s in studies}
    with ResultStore(tmp_path / "r.sqlite") as opened:
        stored = sorted(opened.load_reports(), key=lambda r: r.study_id)
    assert stored == sorted(result.reports, key=lambda r: r.study_id)
    with pytest.raises(ConfigError, match=r"\.jsonl or \.csv"):
        result.export(tmp_path / "out.txt")


def test_on_result_sees_every_study() -> None:
    seen: list[tuple[int, bool]] = []
    lock = threading.Lock()

    def on_result(index: int, report: object, failure: object) -> None:
        with lock:
            seen.append((index, report is not None))

    run_batch(small_studies(12), DemoBackend(), on_result=on_result, progress=False, batch_size=5)
    assert sorted(seen) == [(i, True) for i in range(12)]


def test_keyboard_interrupt_keeps_what_is_stored(tmp_path: Path) -> None:
    studies = small_studies(20)
    store = tmp_path / "r.sqlite"

    finished: list[int] = []

    def stop_after(index: int, report: object, failure: object) -> None:
        finished.append(index)
        if len(finished) == 8:
            raise KeyboardInterrupt  # what Ctrl-C does

    first = run_batch(
        studies, DemoBackend(), store=store, progress=False, batch_size=4, on_result=stop_after
    )
    assert first.interrupted and 8 <= first.ok < 20
    with ResultStore(store) as opened:
        stored = opened.counts()["ok"]
    assert stored >= 8
    second = run_batch(studies, DemoBackend(), store=store, progress=False, batch_size=4)
    assert not second.interrupted and second.ok == 20 and second.skipped == stored
    assert isinstance(second, BatchResult) and "20 ok" in repr(second)


# --- killed and restarted ---------------------------------------------------------------------


def _ok_count(store: Path) -> int:
    """Reports committed so far, read while the run is writing (WAL allows it)."""
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM results WHERE status='ok'").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def _wait_for_some(child: subprocess.Popen, store: Path, at_least: int, total: int) -> int:
    deadline = time.monotonic() + 120
    while True:
        count = _ok_count(store)
        if count >= at_least:
            assert count < total, "the run finished before it could be interrupted"
            return count
        assert child.poll() is None, f"the run ended early ({child.returncode})"
        assert time.monotonic() < deadline, "the run stored nothing within 120 s"
        time.sleep(0.02)


def _manifest_run(tmp_path: Path, n: int) -> tuple[Path, list[Study]]:
    paths = write_images(tmp_path / "images", n)
    manifest = write_manifest(
        tmp_path / "manifest.csv",
        [{"study_id": p.stem, "frontal": p, "indication": "Cough."} for p in paths],
    )
    return manifest, read_manifest(manifest)


def test_sigkill_then_restart_answers_every_study_exactly_once(tmp_path: Path) -> None:
    n = 30
    manifest, studies = _manifest_run(tmp_path, n)
    store = tmp_path / "results.sqlite"
    with LocalEndpoint(faults=FaultConfig(latency=0.25, instances=1)) as slow:
        command = [
            *CLI, "run", str(manifest), "--scoring-uri", slow.scoring_uri, "--store", str(store),
            "--batch-size", "2", "--no-progress",
        ]  # fmt: skip
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_for_some(child, store, at_least=6, total=n)
            child.send_signal(signal.SIGKILL)
            assert child.wait(30) == -signal.SIGKILL
        finally:
            if child.poll() is None:
                child.kill()
        with ResultStore(store) as opened:
            stored_before = opened.ok_keys()
        assert 6 <= len(stored_before) < n
        restart_at = len(slow.received())
        second = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr
        assert f"skipped (from store)  {len(stored_before)}" in second.stdout
        log = slow.received()
        identity = EndpointConfig(slow.scoring_uri).identity

    key_of, digest_of = {}, {}
    for study in studies:
        encoded = encode_study(study)
        key_of[study.study_id] = prepared_key(encoded, identity, {})
        digest_of[key_of[study.study_id]] = wire_digest(encoded.columns, encoded.row)
    assert len(set(key_of.values())) == n
    with ResultStore(store) as opened:
        assert opened.counts() == {"ok": n, "error": 0, "total": n}
        results = list(opened.results())
    assert {r.key for r in results} == set(key_of.values())  # every study, once
    assert all(r.attempts == 1 for r in results)
    assert {r.study_id for r in results} == set(key_of)
    before = {digest_of[k] for k in stored_before}
    resent = [d for entry in log[restart_at:] for d in entry["sha256"] if d in before]
    assert resent == [], "studies stored before the kill were sent again"
    answered = [d for entry in log if entry["status"] == 200 for d in entry["sha256"]]
    assert all(answered.count(d) == 1 for d in before)
    assert set(answered) == set(digest_of.values())


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tmp_path: Path) -> None:
    n = 24
    manifest, _ = _manifest_run(tmp_path, n)
    store = tmp_path / "results.sqlite"
    with LocalEndpoint(faults=FaultConfig(latency=0.25, instances=1)) as slow:
        command = [
            *CLI, "run", str(manifest), "--scoring-uri", slow.scoring_uri, "--store", str(store),
            "--batch-size", "2", "--no-progress",
        ]  # fmt: skip
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _wait_for_some(child, store, at_least=4, total=n)
            child.send_signal(signal.SIGINT)
            out, err = child.communicate(timeout=60)
        finally:
            if child.poll() is None:
                child.kill()
        assert child.returncode == 130, err
        assert "Interrupted: waiting for" in err and "run again with the same store" in err
        assert "Traceback" not in err
        with ResultStore(store) as opened:
            kept = opened.counts()["ok"]
        assert f"ok                    {kept}" in out  # the in-flight answers were kept too
        again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and f"skipped (from store)  {kept}" in again.stdout


@pytest.mark.slow
def test_fault_soak_loses_nothing() -> None:
    """bench/soak.py at 150 studies: 429/503/drops, one SIGKILL, every study once."""
    script = Path(__file__).resolve().parents[1] / "bench" / "soak.py"
    done = subprocess.run(
        [sys.executable, str(script), "--studies", "150", "--batch-size", "5"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    figures = {
        name.strip(): value.strip()
        for name, value in (
            line.rsplit("  ", 1) for line in done.stdout.splitlines() if "  " in line
        )
    }
    assert figures["studies lost"].strip() == "0"
    assert figures["stored studies sent again"].strip() == "0"
    assert int(figures["stored at the kill"]) >= 60
    assert int(figures["retries (requests - answered)"]) > 0  # the faults were met


def test_the_store_records_each_studys_image_sources(tmp_path: Path) -> None:
    paths = write_images(tmp_path / "images", 3)
    studies = [
        Study(paths[0], study_id="a"),
        Study(paths[1], prior_image=paths[2], study_id="b"),
        Study(png_bytes(99), study_id="c"),  # bytes: no path to record
    ]
    store = tmp_path / "r.sqlite"
    run_batch(studies, DemoBackend(), store=store, progress=False)
    with ResultStore(store) as opened:
        assert opened.get_sources("a") == {"frontal_image": str(paths[0])}
        assert opened.get_sources("b") == {
            "frontal_image": str(paths[1]),
            "prior_image": str(paths[2]),
        }
        assert opened.get_sources("c") == {}


def test_replaced_images_with_the_same_name_size_and_time_are_sent_again(
    tmp_path: Path, endpoint: LocalEndpoint
) -> None:
    """A folder re-exported with new patients under the old names, sizes and times."""
    folder = tmp_path / "images"
    folder.mkdir()
    paths = [folder / f"img{seed}.png" for seed in range(4)]
    for seed, path in enumerate(paths):
        path.write_bytes(stored_png(seed))
    studies = [Study(p, study_id=p.stem) for p in paths]
    store = tmp_path / "r.sqlite"
    with client_for(endpoint) as client:
        first = run_batch(studies, client, store=store, progress=False)
        assert first.ok == 4
        for seed, path in enumerate(paths, start=100):
            stat = path.stat()
            new = stored_png(seed)
            assert len(new) == stat.st_size  # uncompressed PNGs of one shape: one size
            path.write_bytes(new)
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
            assert path.stat().st_mtime_ns == stat.st_mtime_ns
        start = len(endpoint.received())
        second = run_batch(studies, client, store=store, progress=False)
        sent = [d for e in log_since(endpoint, start) for d in e["sha256"]]
    assert second.skipped == 0 and second.sent == 4
    assert sorted(sent) == sorted(digests(studies))  # the new images, every one
    assert set(second.keys).isdisjoint(first.keys)


# --- packing within the budget: a property --------------------------------------------------


class _BudgetBackend(DemoBackend):
    """The demo, with a small budget it enforces as every backend does; records bodies."""

    def __init__(self, budget: int) -> None:
        super().__init__(request_budget=budget)
        self.bodies: list[int] = []

    def send(self, request):  # type: ignore[no-untyped-def]
        size = len(request.body)  # measured here, not with the contract's own arithmetic
        self.bodies.append(size)
        if size > budget_of(self):
            raise RequestTooLargeError(f"{size} bytes over the budget", status=413)
        return super().send(request)


def budget_of(backend: DemoBackend) -> int:
    assert backend.request_budget is not None
    return backend.request_budget


_TINY_PNGS = [png_bytes(seed, size=(4 + seed, 3)) for seed in range(4)]
# Characters JSON escapes (quotes, backslashes, controls, non-ASCII) and plain ones.
_TEXT = st.text(
    alphabet=st.sampled_from(list('ab "\\/é中🫁\n\t\u2028<>&'))
    | st.characters(exclude_categories=("Cs",)),
    min_size=0,
    max_size=400,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    texts=st.lists(st.tuples(st.integers(0, 3), _TEXT, _TEXT), min_size=1, max_size=25),
    slack=st.floats(0.0, 1.0),
    batch_size=st.integers(1, 10),
)
@example(texts=[(i % 4, 'é中"' * 50, "") for i in range(6)], slack=2 / 9, batch_size=10)
def test_packed_requests_fit_the_budget_and_are_never_split_for_size(
    texts: list[tuple[int, str, str]], slack: float, batch_size: int
) -> None:
    studies = [
        Study(_TINY_PNGS[image], indication=indication, comparison=comparison, study_id=f"s{i}")
        for i, (image, indication, comparison) in enumerate(texts)
    ]
    single = max(len(assemble_request([encode_study(s)]).body) for s in studies)
    # A budget from one study's size up to ten: requests are packed right at its edge.
    budget = int(single + slack * 9 * single)
    backend = _BudgetBackend(budget)
    result = run_batch(studies, backend, progress=False, batch_size=batch_size)
    assert result.failed == 0 and result.splits == 0
    assert all(size <= budget for size in backend.bodies)
    assert len(backend.bodies) == result.requests


def test_a_full_disk_stops_the_run_cleanly_and_it_resumes(tmp_path: Path) -> None:
    studies = small_studies(40)
    path = tmp_path / "r.sqlite"
    store = ResultStore(path)
    finished: list[int] = []

    def fill_the_disk(index: int, report: object, failure: object) -> None:
        finished.append(index)
        if len(finished) == 10:  # from now on SQLite answers SQLITE_FULL
            with store._lock:
                pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
                store._conn.execute(f"PRAGMA max_page_count={pages}")

    with pytest.raises(StoreError, match="the disk is full") as raised:
        run_batch(
            studies,
            DemoBackend(latency=0.02),
            store=store,
            progress=False,
            batch_size=5,
            max_in_flight=1,
            on_result=fill_the_disk,
        )
    result = raised.value.result  # type: ignore[attr-defined]
    assert result.stopped and "the disk is full" in result.stopped
    assert 10 <= result.ok < 40  # answers received stay in the result, even unstored ones
    committed = store.ok_keys()
    assert len(committed) == result.stored >= 10
    store.close()
    with ResultStore(path) as reopened:
        assert reopened.ok_keys() == committed  # everything committed stays
    again = run_batch(studies, DemoBackend(), store=path, progress=False)
    assert again.ok == 40 and again.skipped == len(committed)
    assert again.sent == 40 - len(committed)


def test_progress_counters_are_true_while_and_after_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_batch(small_studies(12), DemoBackend(), store=tmp_path / "r.sqlite", batch_size=4)
    final = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert "12/12" in final and "ok=12" in final and "stored=12" in final, final


def test_studies_with_burned_in_annotation_are_listed(tmp_path: Path, rg1_path: Path) -> None:
    import pydicom

    ds = pydicom.dcmread(rg1_path)
    ds.BurnedInAnnotation = "YES"
    burned = tmp_path / "burned.dcm"
    ds.save_as(burned)
    studies = [Study(rg1_path, study_id="clean"), Study(burned, study_id="burned-1")]
    result = run_batch(studies, DemoBackend(), progress=False)
    assert result.burned_in == ["burned-1"] and result.ok == 2


def test_a_long_retry_after_stops_the_run_with_a_resumable_message(tmp_path: Path) -> None:
    faults = FaultConfig(rate_429=1.0, retry_after=100000)
    store = tmp_path / "r.sqlite"
    with LocalEndpoint(faults=faults) as storm:
        client = client_for(storm, deadline=5.0)
        started = time.monotonic()
        with pytest.raises(EndpointBusyError, match=r"asked to wait .*run again later") as raised:
            run_batch(
                small_studies(30),
                client,
                store=store,
                progress=False,
                batch_size=1,
                max_in_flight=1,
            )
        client.close()
        assert time.monotonic() - started < 5  # not one deadline per study
        assert len(storm.received()) == 1  # stopped after the first refusal
    assert "100,000 s" in str(raised.value) and str(store) in str(raised.value)
    assert raised.value.result.ok == 0  # type: ignore[attr-defined]


def test_one_damaged_stored_row_is_sent_again_without_stopping_the_run(tmp_path: Path) -> None:
    paths = write_images(tmp_path / "images", 6)
    studies = [Study(p, study_id=p.stem) for p in paths]
    store = tmp_path / "r.sqlite"
    first = run_batch(studies, DemoBackend(), store=store, progress=False)
    with ResultStore(store) as opened, opened._transaction("damage a row") as conn:
        conn.execute("UPDATE results SET report='{\"findings\": 7' WHERE key=?", (first.keys[2],))
    backend = DemoBackend()
    again = run_batch(studies, backend, store=store, progress=False)
    assert again.ok == 6 and again.skipped == 5 and again.sent == 1 and backend.requests == 1
    assert again.reports[2] is not None and again.reports[2].study_id == studies[2].study_id
    with ResultStore(store) as opened:
        assert opened.counts() == {"ok": 6, "error": 0, "total": 6}


def test_the_progress_bar_shows_the_requests_in_flight_after_sending(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Not one short: an answer is drawn with what was in flight, not while it is recorded."""
    result = run_batch(
        small_studies(8), DemoBackend(latency=0.3), progress=True, batch_size=1, max_in_flight=2
    )
    assert result.ok == 8
    shown = re.findall(r"in flight=(\d+)/(\d+)", capsys.readouterr().err)
    assert shown.count(("2", "2")) >= 4, shown
