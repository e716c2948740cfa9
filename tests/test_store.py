"""The SQLite result store: keys, writes that survive SIGKILL, exports that load back."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from cxr_widgets.errors import CxrWidgetsError, StoreError
from cxr_widgets.report import Box, Finding, Report
from cxr_widgets.store import ResultStore, load_jsonl, source_fingerprint, study_key


def make_report(study_id: str, n: int = 2) -> Report:
    findings = [Finding(f"finding {i} of {study_id}", []) for i in range(n)]
    findings.append(Finding("boxed", [Box(0.105, 0.205, 0.405, 0.505), Box(0.5, 0.5, 0.6, 0.7)]))
    return Report(findings=findings, image_size=(100, 80), study_id=study_id, request_id="r-1")


@pytest.fixture
def store(tmp_path: Path) -> ResultStore:
    with ResultStore(tmp_path / "results.sqlite") as opened:
        yield opened


def test_put_get_and_counts(store: ResultStore) -> None:
    report = make_report("a")
    store.put_ok("k1", report, study_id="a")
    store.put_error("k2", RuntimeError("the endpoint said no"), study_id="b")
    got = store.get("k1")
    assert got is not None and got.ok and got.report == report
    assert got.study_id == "a" and got.request_id == "r-1" and got.attempts == 1
    failed = store.get("k2")
    assert failed is not None and not failed.ok
    assert (failed.error_type, failed.error_message) == ("RuntimeError", "the endpoint said no")
    assert store.get("missing") is None
    assert store.counts() == {"ok": 1, "error": 1, "total": 2}
    assert store.ok_keys() == {"k1"}
    assert store.has_ok("k1") and not store.has_ok("k2")


def test_error_then_ok_replaces_and_counts_attempts(store: ResultStore) -> None:
    store.put_error("k", ("EndpointServerError", "503"), study_id="a")
    store.put_error("k", ("EndpointServerError", "503 again"), study_id="a")
    assert store.get("k").attempts == 2  # type: ignore[union-attr]
    store.put_ok("k", make_report("a"))
    got = store.get("k")
    assert got is not None and got.ok and got.error_message is None and got.attempts == 3


def test_a_stored_report_is_never_overwritten(store: ResultStore) -> None:
    first = make_report("first")
    store.put_ok("k", first)
    store.put_ok("k", make_report("second", n=5))
    store.put_error("k", ("EndpointServerError", "late failure"))
    got = store.get("k")
    assert got is not None and got.ok and got.report == first and got.attempts == 1
    assert store.counts()["total"] == 1


def test_persists_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "r.sqlite"
    with ResultStore(path) as first:
        first.put_many_ok([("a", make_report("a"), "a"), ("b", make_report("b"), "b")])
        first.put_digests({"fp": "d1"})
    with ResultStore(path) as again:
        assert [r.study_id for r in again.load_reports()] == ["a", "b"]
        assert again.get_digest("fp") == "d1" and again.get_digest("nope") is None


def test_export_jsonl_and_csv_load_back(store: ResultStore, tmp_path: Path) -> None:
    reports = [make_report(f"s{i}", n=i) for i in range(4)]
    for i, report in enumerate(reports):
        store.put_ok(f"k{i}", report, study_id=report.study_id)
    store.put_error("bad", ("ModelError", "424"), study_id="s-bad")
    jsonl = tmp_path / "out.jsonl"
    assert store.export_jsonl(jsonl) == 5
    assert load_jsonl(jsonl) == reports
    lines = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert lines[-1]["status"] == "error" and lines[-1]["error"]["type"] == "ModelError"
    assert store.export_jsonl(jsonl, include_errors=False) == 4
    csv_path = tmp_path / "out.csv"
    rows = store.export_csv(csv_path)
    assert rows == sum(len(r.to_records()) for r in reports)
    text = csv_path.read_text().splitlines()
    assert text[0].startswith("study_id,finding,text")
    assert len(text) == rows + 1
    assert sum(line.startswith("s3,") for line in text) == len(reports[3].to_records())


def test_bad_store_paths_give_store_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="is a folder"):
        ResultStore(tmp_path)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="cannot open the result store"):
        ResultStore(junk)
    other = tmp_path / "other.sqlite"
    ResultStore(other).close()
    with sqlite3.connect(other) as conn:
        conn.execute("UPDATE meta SET value='99' WHERE name='schema'")
    with pytest.raises(StoreError, match="schema 99"):
        ResultStore(other)
    assert issubclass(StoreError, CxrWidgetsError)


def test_study_key_depends_on_everything_sent() -> None:
    base = study_key({"frontal_image": "d1", "indication": "cough"}, "http://x/score", {})
    assert base == study_key({"indication": "cough", "frontal_image": "d1"}, "http://x/score", {})
    assert len(base) == 64
    others = {
        study_key({"frontal_image": "d2", "indication": "cough"}, "http://x/score", {}),
        study_key({"frontal_image": "d1", "indication": "fever"}, "http://x/score", {}),
        study_key({"frontal_image": "d1"}, "http://x/score", {}),
        study_key({"frontal_image": "d1", "indication": "cough"}, "http://y/score", {}),
        study_key(
            {"frontal_image": "d1", "indication": "cough"}, "http://x/score", {"shortest_side": 518}
        ),
    }
    assert base not in others and len(others) == 5


def test_source_fingerprint(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(b"one")
    first = source_fingerprint(path)
    assert first == source_fingerprint(str(path))
    assert first != source_fingerprint(path, {"shortest_side": 518})
    os.utime(path, ns=(1, 1))
    assert source_fingerprint(path) != first  # a changed file is prepared again
    assert source_fingerprint(b"one") == source_fingerprint(bytearray(b"one"))
    assert source_fingerprint(b"one") != source_fingerprint(b"two")
    assert source_fingerprint(tmp_path / "missing.png") is None
    assert source_fingerprint(Image.new("L", (4, 4))) is None


WRITER = """
import sys
from cxr_widgets.report import Finding, Report
from cxr_widgets.store import ResultStore
store = ResultStore(sys.argv[1])
n = 0
while True:
    batch = [(f"k{n}-{i}", Report(findings=[Finding("x" * 2000, [])] * 20), f"s{n}") for i in range(10)]
    store.put_many_ok(batch)
    n += 1
    if n == 20:
        open(sys.argv[2], "w").close()
"""


def test_sigkill_mid_write_leaves_a_consistent_store(tmp_path: Path) -> None:
    path, flag = tmp_path / "r.sqlite", tmp_path / "flag"
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(flag)])
    try:
        deadline = time.monotonic() + 60
        while not flag.exists():
            assert child.poll() is None, "the writer stopped early"
            assert time.monotonic() < deadline, "the writer did not get going"
            time.sleep(0.05)
        time.sleep(0.3)  # let it be somewhere in the middle of a transaction
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with ResultStore(path) as store:
        counts = store.counts()
        assert counts["ok"] >= 200 and counts["ok"] % 10 == 0  # whole requests only
        assert len(store.load_reports()) == counts["ok"]
