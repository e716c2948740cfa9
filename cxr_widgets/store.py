"""Persisted batch results: a SQLite file keyed by what was sent and where.

A result's ``key`` is the SHA-256 of the study's prepared content (the PNG
bytes of each image column, the text fields), the endpoint identity and the
image options. The same study sent to the same endpoint with the same options
always has the same key, so an interrupted run started again skips what is
already answered and sends only what is missing.

The file is in WAL mode and every write is one committed transaction, so a
process killed mid-write (SIGKILL, kernel restart) leaves the file intact with
every result committed before the kill. The store holds report text (your own
results) but never a key or token, and logs nothing of what it holds.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import StoreError
from .report import Report, records_to_csv

__all__ = [
    "ResultStore",
    "StoreError",
    "StoredResult",
    "load_jsonl",
    "source_fingerprint",
    "study_key",
]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,
    study_id TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL CHECK (status IN ('ok', 'error')),
    report TEXT,
    error_type TEXT,
    error_message TEXT,
    attempts INTEGER NOT NULL DEFAULT 1,
    request_id TEXT,
    created TEXT NOT NULL,
    updated TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS image_digests (
    fingerprint TEXT PRIMARY KEY,
    digest TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _options_text(image_options: Mapping[str, Any] | None) -> str:
    return json.dumps(dict(image_options or {}), sort_keys=True, default=str)


def study_key(
    columns: Mapping[str, str],
    identity: str,
    image_options: Mapping[str, Any] | None = None,
) -> str:
    """The store key of a study.

    ``columns`` maps each request column the study fills to the SHA-256 hex
    digest of its prepared PNG (image columns) or to its text (text columns).
    """
    material = json.dumps(
        {
            "v": SCHEMA_VERSION,
            "endpoint": identity,
            "image_options": json.loads(_options_text(image_options)),
            "columns": dict(columns),
        },
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def source_fingerprint(source: Any, image_options: Mapping[str, Any] | None = None) -> str | None:
    """A cheap fingerprint of an image source, or None when there is none.

    Paths: resolved path, size and modification time (no reading); bytes:
    their SHA-256. Together with the image options and the package version it
    names the prepared PNG, so a resumed run can find a study's key without
    decoding and resizing the image again. PIL images, arrays and datasets
    have no cheap fingerprint and are always prepared.
    """
    from . import __version__

    if isinstance(source, (str, os.PathLike)):
        try:
            path = Path(source).resolve()
            stat = path.stat()
        except OSError:
            return None
        what = f"path:{path}:{stat.st_size}:{stat.st_mtime_ns}"
    elif isinstance(source, (bytes, bytearray, memoryview)):
        what = "bytes:" + hashlib.sha256(source).hexdigest()
    else:
        return None
    text = f"{__version__}|{_options_text(image_options)}|{what}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class StoredResult:
    """One row of the store."""

    key: str
    study_id: str
    status: str
    report: Report | None
    error_type: str | None
    error_message: str | None
    attempts: int
    request_id: str | None
    created: str
    updated: str

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class ResultStore:
    """Batch results in a SQLite file (created when missing).

    Safe to share between threads (one connection behind a lock) and to kill
    at any moment: each ``put_*`` is one committed transaction.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise StoreError(
                f"the result store {self.path} is a folder; give a file name such as "
                f"{self.path / 'results.sqlite'}"
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                str(self.path), timeout=30.0, check_same_thread=False, isolation_level=None
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.executescript(_SCHEMA)
            row = self._conn.execute("SELECT value FROM meta WHERE name='schema'").fetchone()
            if row is None:
                self._conn.execute(
                    "INSERT OR IGNORE INTO meta(name, value) VALUES ('schema', ?)",
                    (str(SCHEMA_VERSION),),
                )
            elif row[0] != str(SCHEMA_VERSION):
                raise StoreError(
                    f"{self.path} is a result store of schema {row[0]}; this version of "
                    f"cxr-widgets reads schema {SCHEMA_VERSION}. Use a new --store file."
                )
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"cannot open the result store {self.path} ({exc}); is it a cxr-widgets "
                "store (SQLite)? Give another file name to start a new one."
            ) from None
        self._lock = threading.RLock()

    # --- writing ------------------------------------------------------------------------

    def put_ok(self, key: str, report: Report, *, study_id: str = "") -> None:
        """Store a report (replacing an earlier error for the same key)."""
        self.put_many_ok([(key, report, study_id)])

    def put_many_ok(self, items: list[tuple[str, Report, str]]) -> None:
        """Store several reports in one transaction (one request's answer)."""
        now = _now()
        rows = [
            (key, study_id or report.study_id, report.to_json(indent=None), report.request_id, now)
            for key, report, study_id in items
        ]
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    "INSERT INTO results(key, study_id, status, report, request_id, created, "
                    "updated) VALUES (?1, ?2, 'ok', ?3, ?4, ?5, ?5) "
                    "ON CONFLICT(key) DO UPDATE SET status='ok', study_id=excluded.study_id, "
                    "report=excluded.report, error_type=NULL, error_message=NULL, "
                    "attempts=results.attempts + 1, request_id=excluded.request_id, "
                    "updated=excluded.updated WHERE results.status != 'ok'",
                    rows,
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def put_error(
        self,
        key: str,
        error: BaseException | tuple[str, str],
        *,
        study_id: str = "",
        request_id: str | None = None,
    ) -> None:
        """Record a failure (never overwrites a stored report)."""
        self.put_many_errors([(key, study_id)], error, request_id=request_id)

    def put_many_errors(
        self,
        items: list[tuple[str, str]],
        error: BaseException | tuple[str, str],
        *,
        request_id: str | None = None,
    ) -> None:
        """Record the same failure for several studies (key, study_id) in one transaction."""
        if isinstance(error, BaseException):
            error_type, message = type(error).__name__, str(error)
            request_id = request_id or getattr(error, "request_id", None)
        else:
            error_type, message = error
        now = _now()
        rows = [(key, study_id, error_type, message, request_id, now) for key, study_id in items]
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    "INSERT INTO results(key, study_id, status, error_type, error_message, "
                    "request_id, created, updated) VALUES (?1, ?2, 'error', ?3, ?4, ?5, ?6, ?6) "
                    "ON CONFLICT(key) DO UPDATE SET study_id=excluded.study_id, "
                    "error_type=excluded.error_type, error_message=excluded.error_message, "
                    "attempts=results.attempts + 1, request_id=excluded.request_id, "
                    "updated=excluded.updated WHERE results.status != 'ok'",
                    rows,
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    # --- the image digest cache ----------------------------------------------------------

    def get_digest(self, fingerprint: str) -> str | None:
        """The prepared-PNG digest recorded for a source fingerprint."""
        with self._lock:
            row = self._conn.execute(
                "SELECT digest FROM image_digests WHERE fingerprint=?", (fingerprint,)
            ).fetchone()
        return row[0] if row else None

    def digests(self) -> dict[str, str]:
        """Every recorded source fingerprint and its prepared-PNG digest."""
        with self._lock:
            return dict(
                self._conn.execute("SELECT fingerprint, digest FROM image_digests").fetchall()
            )

    def put_digests(self, pairs: Mapping[str, str]) -> None:
        """Remember prepared-PNG digests by source fingerprint."""
        if not pairs:
            return
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    "INSERT OR REPLACE INTO image_digests(fingerprint, digest) VALUES (?, ?)",
                    list(pairs.items()),
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    # --- reading ------------------------------------------------------------------------

    def _rows(self, where: str = "", params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(
                "SELECT key, study_id, status, report, error_type, error_message, attempts, "
                f"request_id, created, updated FROM results {where} ORDER BY rowid",
                params,
            ).fetchall()

    @staticmethod
    def _result(row: tuple[Any, ...]) -> StoredResult:
        key, study_id, status, report, error_type, message, attempts, rid, created, updated = row
        return StoredResult(
            key=key,
            study_id=study_id,
            status=status,
            report=Report.from_json(report) if report else None,
            error_type=error_type,
            error_message=message,
            attempts=attempts,
            request_id=rid,
            created=created,
            updated=updated,
        )

    def get(self, key: str) -> StoredResult | None:
        """The stored result for ``key``, or None."""
        rows = self._rows("WHERE key=?", (key,))
        return self._result(rows[0]) if rows else None

    def ok_keys(self) -> set[str]:
        """Keys that have a stored report."""
        with self._lock:
            return {r[0] for r in self._conn.execute("SELECT key FROM results WHERE status='ok'")}

    def has_ok(self, key: str) -> bool:
        with self._lock:
            row = self._conn.execute(
                "SELECT 1 FROM results WHERE key=? AND status='ok'", (key,)
            ).fetchone()
        return row is not None

    def results(self, status: str | None = None) -> Iterator[StoredResult]:
        """Every stored result in the order written (``status``: "ok" or "error")."""
        rows = self._rows("WHERE status=?", (status,)) if status else self._rows()
        for row in rows:
            yield self._result(row)

    def iter_reports(self) -> Iterator[tuple[str, Report]]:
        """``(key, report)`` for every stored report, in the order written."""
        for result in self.results("ok"):
            assert result.report is not None
            yield result.key, result.report

    def load_reports(self) -> list[Report]:
        """Every stored report, in the order written."""
        return [report for _, report in self.iter_reports()]

    def counts(self) -> dict[str, int]:
        """``{"ok": n, "error": n, "total": n}``."""
        with self._lock:
            rows = dict(self._conn.execute("SELECT status, COUNT(*) FROM results GROUP BY status"))
        ok, error = int(rows.get("ok", 0)), int(rows.get("error", 0))
        return {"ok": ok, "error": error, "total": ok + error}

    def __len__(self) -> int:
        return self.counts()["total"]

    # --- export -------------------------------------------------------------------------

    def export_jsonl(self, path: str | os.PathLike[str], *, include_errors: bool = True) -> int:
        """One JSON object per line and study; returns the number of lines.

        Reports: ``{"key", "study_id", "status": "ok", "report": {...}}``;
        failures: ``{"key", "study_id", "status": "error", "error": {"type",
        "message"}, "attempts"}``. :func:`load_jsonl` reads the reports back.
        """
        lines = [result_line(r) for r in self.results() if include_errors or r.status == "ok"]
        return write_jsonl(path, lines)

    def export_csv(self, path: str | os.PathLike[str]) -> int:
        """One row per finding and box of every stored report; returns the row count."""
        records = [rec for report in self.load_reports() for rec in report.to_records()]
        records_to_csv(records, path)
        return len(records)

    # --- lifetime -----------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ResultStore({str(self.path)!r})"


def result_line(result: StoredResult) -> dict[str, Any]:
    """The JSONL object for one stored result."""
    line: dict[str, Any] = {"key": result.key, "study_id": result.study_id}
    line["status"] = result.status
    if result.report is not None:
        line["report"] = result.report.to_dict()
    else:
        line["error"] = {"type": result.error_type, "message": result.error_message}
        line["attempts"] = result.attempts
    return line


def write_jsonl(path: str | os.PathLike[str], lines: list[dict[str, Any]]) -> int:
    with open(path, "w", encoding="utf-8") as handle:
        for line in lines:
            handle.write(json.dumps(line, ensure_ascii=False) + "\n")
    return len(lines)


def load_jsonl(path: str | os.PathLike[str]) -> list[Report]:
    """The reports in a JSONL export (lines without a report are skipped)."""
    reports = []
    with open(path, encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
            except json.JSONDecodeError:
                raise StoreError(f"{path}, line {number}: not JSON") from None
            data = line.get("report") if isinstance(line, dict) else None
            if data is None and isinstance(line, dict) and "findings" in line:
                data = line
            if data is not None:
                reports.append(Report.from_dict(data))
    return reports
