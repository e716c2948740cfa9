"""run_batch at scale against the local endpoint's simulated instances (issue 17).

Behaviour only (timing is in bench/bench_scale.py): the concurrency reached, what
the endpoint's request log says was answered (every study once, none lost), the
grow-mid-run case, latency without 429, and bounded memory for a long manifest.
"""

from __future__ import annotations

import io
import sqlite3
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxr_widgets.batch import run_batch
from cxr_widgets.client import EndpointConfig, ReportGenClient
from cxr_widgets.contract import encode_study
from cxr_widgets.demo import DemoBackend
from cxr_widgets.local.demo_findings import wire_digest
from cxr_widgets.local.faults import FaultConfig
from cxr_widgets.local.server import LocalEndpoint
from cxr_widgets.prepare_pool import PreparePool
from cxr_widgets.study import Study


def png(seed: int, side: int = 48) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(side, side), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def studies(n: int) -> list[Study]:
    return [Study(png(i), study_id=f"s{i}") for i in range(n)]


def client_for(endpoint: LocalEndpoint) -> ReportGenClient:
    return ReportGenClient(EndpointConfig(endpoint.scoring_uri, pool_size=128))


def answered_once(endpoint: LocalEndpoint, sent: list[Study]) -> None:
    """The request log: every study answered (200) exactly once; none lost."""
    answered = [d for e in endpoint.received() if e["status"] == 200 for d in e["sha256"]]
    expected = []
    for study in sent:
        encoded = encode_study(study)
        expected.append(wire_digest(encoded.columns, encoded.row))
    assert sorted(answered) == sorted(expected)


def admitted_at_once(log: list[dict]) -> int:
    """Most requests the endpoint held at once (pending: scoring or waiting for an
    instance), as it counted them when admitting each request."""
    return max(e["held"] for e in log if e["status"] == 200)


def scoring_at_once(log: list[dict], after: float = 0.0) -> int:
    """Most requests scoring at the same moment, as the endpoint counted them."""
    return max(e["scoring"] for e in log if e["status"] == 200 and e["time"] >= after)


def test_sixteen_instances_are_all_used_and_every_study_is_answered_once() -> None:
    faults = FaultConfig(latency=0.2, instances=16, retry_after=0.2)
    sent = studies(480)
    with LocalEndpoint(faults=faults) as endpoint, client_for(endpoint) as client:
        result = run_batch(sent, client, progress=False, batch_size=1)
        log = endpoint.received()
        answered_once(endpoint, sent)
    assert result.ok == 480 and result.failed == 0
    assert result.peak_limit >= 16  # the default start (4) grew to the endpoint's level
    assert scoring_at_once(log) >= 16  # every instance was scoring at once
    assert result.limited_by and "endpoint" in result.limited_by


def test_an_endpoint_that_grows_from_4_to_16_instances_mid_run_is_used(tmp_path: Path) -> None:
    count = tmp_path / "instances"
    count.write_text("4")
    faults = FaultConfig(latency=0.2, instances=4, retry_after=0.2, instances_file=str(count))
    sent = studies(800)
    grown_at: list[float] = []

    def grow() -> None:
        import time

        time.sleep(3.0)
        grown_at.append(time.time())
        count.write_text("16")

    with LocalEndpoint(faults=faults, threads=48) as endpoint, client_for(endpoint) as client:
        grower = threading.Thread(target=grow)
        grower.start()
        result = run_batch(sent, client, progress=False, batch_size=1)
        grower.join()
        log = endpoint.received()
        answered_once(endpoint, sent)
    assert result.ok == 800
    before = [e for e in log if e["time"] + e["seconds"] < grown_at[0]]  # done before it grew
    assert admitted_at_once(before) <= 8  # 4 instances first: 2 x 4 held at most
    assert scoring_at_once(before) == 4  # all 4 instances were used, and no more
    assert scoring_at_once(log, after=grown_at[0] + 1.0) >= 16  # then all 16 were used
    assert result.peak_limit >= 16


def test_latency_that_grows_with_load_without_429_stops_the_growth() -> None:
    """4 instances and an endpoint that queues instead of refusing: never a 429."""
    faults = FaultConfig(latency=0.1, instances=4, pending_per_instance=1000)
    sent = studies(400)
    with LocalEndpoint(faults=faults, threads=96) as endpoint, client_for(endpoint) as client:
        result = run_batch(sent, client, progress=False, batch_size=1)
        answered_once(endpoint, sent)
    assert result.busy == 0 and result.ok == 400
    assert result.backoffs >= 1  # it stopped growing without being told 429
    assert result.peak_limit < 48  # far below the machine's cap, near the 4 served


def test_a_long_manifest_is_streamed_in_bounded_memory() -> None:
    """20,000 studies: prepared a few requests ahead, never all at once."""
    image = png(0, side=256)  # the same file content for all: prepared once
    sent = [Study(image, indication=f"row {i}", study_id=f"s{i}") for i in range(20_000)]
    one_row = len(encode_study(sent[0]).row[0])
    tracemalloc.start()
    try:
        result = run_batch(sent, DemoBackend(), progress=False, prepare_processes=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.ok == 20_000 and result.requests == 2_000
    all_at_once = 20_000 * one_row  # the base64 rows alone, had every study been prepared
    assert all_at_once > 1_500_000_000
    assert peak < all_at_once / 8, f"peak {peak / 1e6:.0f} MB"


def test_identical_content_is_prepared_once(tmp_path: Path) -> None:
    first, copy = tmp_path / "a.png", tmp_path / "copy-of-a.png"
    first.write_bytes(png(1))
    copy.write_bytes(png(1))
    with PreparePool(workers=2, processes=True) as pool:
        a = pool.encode(Study(first, indication="one"))
        b = pool.encode(Study(copy, indication="two"))
        c = pool.encode(Study(png(2)))
    assert pool.prepared == 2 and pool.reused == 1
    assert a.row[0] == b.row[0] != c.row[0]
    assert a.row[0] == encode_study(Study(first)).row[0]  # the same PNG as in-process


class _CountingDemo(DemoBackend):
    """The demo backend, counting how often each study (by row digest) is sent."""

    def __init__(self, latency: float) -> None:
        super().__init__(latency=latency)
        self.sent: list[str] = []
        self._lock = threading.Lock()

    def send(self, request):  # type: ignore[no-untyped-def]
        with self._lock:
            self.sent += [encoded.digest for encoded in request.studies]
        return super().send(request)


def test_ctrl_c_with_hundreds_in_flight_waits_for_them_nothing_lost_or_stored_twice(
    tmp_path: Path,
) -> None:
    from cxr_widgets.store import ResultStore

    sent = studies(1200)
    store = tmp_path / "r.sqlite"
    backend = _CountingDemo(latency=1.0)
    finished: list[int] = []

    def interrupt(index: int, report: object, failure: object) -> None:
        finished.append(index)
        if len(finished) == 320:
            raise KeyboardInterrupt  # what Ctrl-C does, with about 300 requests out

    first = run_batch(
        sent,
        backend,
        store=store,
        progress=False,
        batch_size=1,
        start_in_flight=300,
        on_result=interrupt,
    )
    assert first.interrupted and first.peak_limit >= 300
    with ResultStore(store) as opened:
        stored = opened.counts()["ok"]
    # Every request in flight was awaited and stored: nothing sent was lost.
    assert stored == first.ok == len(backend.sent) > 320
    second = run_batch(sent, backend, store=store, progress=False, batch_size=1)
    assert second.ok == 1200 and second.skipped == stored
    assert len(backend.sent) == len(set(backend.sent)) == 1200  # each study sent once in all


class _HeldDemo(_CountingDemo):
    """Answers the first request at once; later ones wait until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__(latency=0.0)
        self.release = threading.Event()

    def send(self, request):  # type: ignore[no-untyped-def]
        with self._lock:
            first = not self.sent
        if not first:
            self.release.wait(60)
        return super().send(request)


class _Announcer(io.StringIO):
    """stderr that sets ``seen`` once ``text`` has been written to it."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text, self.seen = text, threading.Event()

    def write(self, s: str) -> int:
        written = super().write(s)
        if self.text in self.getvalue():
            self.seen.set()
        return written


def test_second_ctrl_c_abandons_requests_in_flight_and_the_next_run_sends_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import signal

    from cxr_widgets.store import ResultStore

    sent = studies(24)
    store = tmp_path / "r.sqlite"
    backend = _HeldDemo()
    stderr = _Announcer("Ctrl-C again to abandon")
    monkeypatch.setattr("sys.stderr", stderr)

    def first_ctrl_c(index: int, report: object, failure: object) -> None:
        raise KeyboardInterrupt  # at the first answer; the other requests are held

    def second_ctrl_c() -> None:
        if stderr.seen.wait(60):
            time.sleep(0.3)  # the run is waiting for the held requests by now
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # type: ignore[arg-type]

    presser = threading.Thread(target=second_ctrl_c)
    presser.start()
    # The abandoned requests stay held until the end: an answer that arrived after the run
    # was abandoned would still be committed by its sender thread (nothing answered is
    # lost), and the counts below would depend on thread timing.
    try:
        try:
            first = run_batch(
                sent, backend, store=store, progress=False, batch_size=1, start_in_flight=8,
                on_result=first_ctrl_c,
            )  # fmt: skip
        finally:
            presser.join(70)
        assert stderr.seen.is_set(), stderr.getvalue()
        assert first.interrupted and first.ok == 1
        assert "Stopped. Everything answered is kept in" in stderr.getvalue()
        with ResultStore(store) as opened:
            assert opened.counts()["ok"] == 1  # the held requests were not waited for
        connection = sqlite3.connect(store)
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        connection.close()
        second = run_batch(sent, DemoBackend(), store=store, progress=False, batch_size=1)
        assert second.ok == 24 and second.skipped == 1 and not second.interrupted
    finally:
        backend.release.set()  # the abandoned requests end
