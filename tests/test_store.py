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
from cxr_widgets.store import (
    APPLICATION_ID,
    ResultStore,
    content_fingerprint,
    load_jsonl,
    study_key,
)


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
    store.put_many_ok([("k1", report, "a")])
    store.put_error("k2", RuntimeError("the endpoint said no"), study_id="b", request_id="r-2")
    got = store.get("k1")
    assert got is not None and got.ok and got.report == report
    assert got.study_id == "a" and got.request_id == "r-1" and got.attempts == 1
    failed = store.get("k2")
    assert failed is not None and not failed.ok
    assert (failed.error_type, failed.error_message) == ("RuntimeError", "the endpoint said no")
    assert failed.study_id == "b" and failed.request_id == "r-2"
    assert store.get("missing") is None
    assert store.counts() == {"ok": 1, "error": 1, "total": 2}
    assert store.ok_keys() == {"k1"}


def test_error_then_ok_replaces_and_counts_attempts(store: ResultStore) -> None:
    store.put_many_errors([("k", "a")], ("EndpointServerError", "503"))
    store.put_many_errors([("k", "a")], ("EndpointServerError", "503 again"))
    assert store.get("k").attempts == 2  # type: ignore[union-attr]
    store.put_many_ok([("k", make_report("a"), "")])
    got = store.get("k")
    assert got is not None and got.ok and got.error_message is None and got.attempts == 3


def test_a_stored_report_is_never_overwritten(store: ResultStore) -> None:
    first = make_report("first")
    store.put_many_ok([("k", first, "")])
    store.put_many_ok([("k", make_report("second", n=5), "")])
    store.put_many_errors([("k", "")], ("EndpointServerError", "late failure"))
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
        assert again.digests() == {"fp": "d1"}


def test_export_jsonl_and_csv_load_back(store: ResultStore, tmp_path: Path) -> None:
    reports = [make_report(f"s{i}", n=i) for i in range(4)]
    for i, report in enumerate(reports):
        store.put_many_ok([(f"k{i}", report, report.study_id)])
    store.put_many_errors([("bad", "s-bad")], ("ModelError", "424"))
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
    with pytest.raises(StoreError, match=r"cannot open the result store .*not a SQLite database"):
        ResultStore(junk)
    other = tmp_path / "other.sqlite"
    ResultStore(other).close()
    with sqlite3.connect(other) as conn:
        conn.execute("UPDATE meta SET value='99' WHERE name='schema'")
    with pytest.raises(StoreError, match="schema 99"):
        ResultStore(other)
    assert issubclass(StoreError, CxrWidgetsError)


def test_another_programs_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "app.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
        conn.execute("INSERT INTO users VALUES ('x')")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match=r"another program's SQLite database .*users"):
        ResultStore(path)
    assert path.read_bytes() == before  # no table added, not switched to WAL
    assert not Path(f"{path}-wal").exists()


def test_a_schema_1_store_is_upgraded_and_resumes(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(
            "CREATE TABLE results (key TEXT PRIMARY KEY, study_id TEXT NOT NULL DEFAULT '', "
            "status TEXT NOT NULL, report TEXT, error_type TEXT, error_message TEXT, "
            "attempts INTEGER NOT NULL DEFAULT 1, request_id TEXT, created TEXT NOT NULL, "
            "updated TEXT NOT NULL);"
            "CREATE TABLE image_digests (fingerprint TEXT PRIMARY KEY, digest TEXT NOT NULL);"
            "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);"
            "INSERT INTO meta VALUES ('schema', '1');"
            "INSERT INTO image_digests VALUES ('path-keyed', 'd');"
        )
        conn.execute(
            "INSERT INTO results VALUES ('k', 'a', 'ok', ?, NULL, NULL, 1, NULL, 't', 't')",
            (make_report("a").to_json(),),
        )
    conn.close()
    with ResultStore(path) as store:
        assert store.ok_keys() == {"k"} and store.get("k").report == make_report("a")  # type: ignore[union-attr]
        assert store.digests() == {}  # path-keyed digests are never reused
        store.put_sources("a", {"frontal_image": "x.png"})
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    conn.close()


def test_a_damaged_report_row_is_set_aside_not_fatal(store: ResultStore) -> None:
    store.put_many_ok([("good", make_report("g"), "g"), ("bad", make_report("b"), "b")])
    with store._transaction("damage a row") as conn:
        conn.execute("UPDATE results SET report='{not json' WHERE key='bad'")
    results = {r.key: r for r in store.results()}
    assert results["good"].ok and not results["bad"].ok
    assert results["bad"].error_type == "StoreError" and "damaged" in results["bad"].error_message
    assert store.ok_keys() == {"good"}  # the next run sends the damaged one again
    store.put_many_ok([("bad", make_report("b"), "b")])
    assert store.get("bad").report == make_report("b")  # type: ignore[union-attr]


def test_a_damaged_file_is_a_store_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    with ResultStore(path) as store:
        store.put_many_ok([(f"k{i}", make_report(f"s{i}", n=30), f"s{i}") for i in range(50)])
    data = bytearray(path.read_bytes())
    data[4096:8192] = b"\xff" * 4096  # overwrite a page in the middle
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=str(path)), ResultStore(path) as store:
        list(store.results())


def test_a_full_disk_is_a_store_error_and_keeps_what_was_committed(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    with ResultStore(path) as store:
        store.put_many_ok([("k0", make_report("s0"), "s0")])
        store._conn.execute(f"PRAGMA max_page_count={_pages(store)}")  # the disk is full now
        big = [(f"k{i}", make_report(f"s{i}", n=200), f"s{i}") for i in range(1, 20)]
        with pytest.raises(StoreError, match=r"the disk is full.*Everything stored before is kept"):
            store.put_many_ok(big)
        assert store.ok_keys() == {"k0"}  # rolled back whole; the store still works
        assert store.counts()["ok"] == 1
    with ResultStore(path) as again:
        assert again.ok_keys() == {"k0"}


def _pages(store: ResultStore) -> int:
    return store._conn.execute("PRAGMA page_count").fetchone()[0] + 1


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a read-only tmpfs needs root")
def test_a_store_in_a_read_only_folder_says_so(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)]
    ).returncode:
        pytest.skip("mount is not allowed here")
    try:
        with pytest.raises(StoreError, match=r"the folder .*ro is read-only"):
            ResultStore(folder / "results.sqlite")
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_sources_are_recorded_per_study(store: ResultStore, tmp_path: Path) -> None:
    assert store.get_sources("a") == {}
    store.put_sources("a", {"frontal_image": tmp_path / "f.dcm", "prior_image": "p.png"})
    assert store.get_sources("a") == {
        "frontal_image": str(tmp_path / "f.dcm"),
        "prior_image": "p.png",
    }
    store.put_many_ok([("k", make_report("a"), "a")], sources={"a": {"frontal_image": "new.png"}})
    assert store.get_sources("a") == {"frontal_image": "new.png"}  # replaced, not merged


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


def test_content_fingerprint_follows_the_bytes_not_the_name(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(b"one")
    first = content_fingerprint(path)
    assert first == content_fingerprint(str(path))
    assert first != content_fingerprint(path, {"shortest_side": 518})
    stat = path.stat()
    path.write_bytes(b"two")  # same name, size and modification time: new content
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert content_fingerprint(path) != first
    assert content_fingerprint(b"one") == content_fingerprint(bytearray(b"one")) == first
    assert content_fingerprint(b"one") != content_fingerprint(b"two")
    assert content_fingerprint(tmp_path / "missing.png") is None
    assert content_fingerprint(Image.new("L", (4, 4))) is None
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert content_fingerprint(fifo) is None  # never opened: it would block


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
