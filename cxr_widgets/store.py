"""Persisted batch results: a SQLite file keyed by what was sent and where.

A result's ``key`` is the SHA-256 of the study's prepared content (the PNG
bytes of each image column, the text fields), the endpoint identity and the
image options. The same study sent to the same endpoint with the same options
always has the same key, so an interrupted run started again skips what is
already answered and sends only what is missing.

The file is in WAL mode and every write is one committed transaction (one
helper, :meth:`ResultStore._transaction`), so a process killed mid-write
(SIGKILL, kernel restart) leaves the file intact with every result committed
before the kill. A full or read-only disk is a :class:`StoreError` saying so;
what was committed stays. The store holds report text (your own results) and
each study's image paths as given (never pixels or DICOM tags), never a key
or token, and logs nothing of what it holds.

Before changing anything in an existing file the store checks that it is a
cxr-widgets store (its SQLite ``application_id``, or the schema-1 layout), so
another program's database is refused untouched.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import stat
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import CxrWidgetsError, StoreError
from .folders import writable_file
from .report import Report, records_to_csv, utc_now

__all__ = [
    "ResultStore",
    "StoreError",
    "StoredResult",
    "content_fingerprint",
    "load_jsonl",
    "study_key",
]

logger = logging.getLogger(__name__)

#: The layout of the file. 2 added ``sources`` and content-keyed image digests.
SCHEMA_VERSION = 2
#: Part of every study key; unchanged since schema 1, so older stores still resume.
KEY_VERSION = 1
#: ``PRAGMA application_id`` of a cxr-widgets store ("CXRW").
APPLICATION_ID = 0x43585257
#: The tables of a schema-1 store (which had no application_id yet).
_SCHEMA_1_TABLES = frozenset({"results", "image_digests", "meta"})
#: Bytes read at a time when hashing an image file.
_CHUNK = 1 << 20

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
CREATE TABLE IF NOT EXISTS sources (
    study_id TEXT NOT NULL,
    column_name TEXT NOT NULL,
    path TEXT NOT NULL,
    PRIMARY KEY (study_id, column_name)
);
"""

_UPSERT_OK = (
    "INSERT INTO results(key, study_id, status, report, request_id, created, updated) "
    "VALUES (?1, ?2, 'ok', ?3, ?4, ?5, ?5) "
    "ON CONFLICT(key) DO UPDATE SET status='ok', study_id=excluded.study_id, "
    "report=excluded.report, error_type=NULL, error_message=NULL, "
    "attempts=results.attempts + 1, request_id=excluded.request_id, "
    "updated=excluded.updated WHERE results.status != 'ok'"
)
_UPSERT_ERROR = (
    "INSERT INTO results(key, study_id, status, error_type, error_message, request_id, "
    "created, updated) VALUES (?1, ?2, 'error', ?3, ?4, ?5, ?6, ?6) "
    "ON CONFLICT(key) DO UPDATE SET study_id=excluded.study_id, "
    "error_type=excluded.error_type, error_message=excluded.error_message, "
    "attempts=results.attempts + 1, request_id=excluded.request_id, "
    "updated=excluded.updated WHERE results.status != 'ok'"
)

#: What a damaged report row is turned into, so the study is sent again.
DAMAGED_ROW = "the stored report could not be read (a damaged row); the study is sent again"


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
            "v": KEY_VERSION,
            "endpoint": identity,
            "image_options": json.loads(_options_text(image_options)),
            "columns": dict(columns),
        },
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def file_digest(path: str | os.PathLike[str]) -> str | None:
    """SHA-256 of a regular file's bytes, or None (missing, not a regular file, unreadable).

    Never opens a FIFO or device (it could block or never end).
    """
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            return None
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def content_fingerprint(source: Any, image_options: Mapping[str, Any] | None = None) -> str | None:
    """What names an image source's prepared PNG: its bytes, the options, the package version.

    Paths are read and hashed (a file replaced under the same name, size and
    modification time gets a new fingerprint); bytes are hashed. PIL images,
    arrays and datasets have none (None) and are always prepared.
    """
    from . import __version__

    if isinstance(source, (str, os.PathLike)):
        content = file_digest(source)
        if content is None:
            return None
    elif isinstance(source, (bytes, bytearray, memoryview)):
        content = hashlib.sha256(source).hexdigest()
    else:
        return None
    text = f"{__version__}|{_options_text(image_options)}|content:{content}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _sqlite_problem(exc: sqlite3.Error) -> str:
    """What a SQLite error means for the user, in words."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc).lower()
    if name == "SQLITE_FULL" or "disk is full" in text:
        return "the disk is full"
    if name.startswith("SQLITE_READONLY") or "readonly" in text or "read-only" in text:
        return "the file or its folder is read-only"
    if name.startswith("SQLITE_IOERR") or "disk i/o error" in text:
        return "the disk reported an I/O error"
    if name == "SQLITE_NOTADB" or "not a database" in text:
        return "it is not a SQLite database"
    if name == "SQLITE_CORRUPT" or "malformed" in text:
        return "the file is damaged"
    if name == "SQLITE_CANTOPEN" or "unable to open" in text:
        return "it cannot be opened (check that its folder exists and is writable)"
    if name.startswith("SQLITE_BUSY") or "locked" in text:
        return "another process holds it locked"
    return f"SQLite said: {exc}"


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
    at any moment: each write is one committed transaction. Every SQLite
    problem (a full or read-only disk, a damaged file, another program's
    database) is a :class:`StoreError` naming the file and what to do.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._check_path()
        existed = self.path.exists() and self.path.stat().st_size > 0
        try:
            self._conn = sqlite3.connect(
                str(self.path), timeout=30.0, check_same_thread=False, isolation_level=None
            )
        except sqlite3.Error as exc:
            raise self._open_error(exc) from None
        try:
            schema = self._identify() if existed else None
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            if schema != SCHEMA_VERSION:
                self._create_or_upgrade(schema)
        except StoreError:
            self._conn.close()
            raise
        except sqlite3.Error as exc:
            self._conn.close()
            raise self._open_error(exc) from None

    # --- opening ------------------------------------------------------------------------

    def _check_path(self) -> None:
        path = self.path
        if path.is_dir():
            raise StoreError(
                f"the result store {path} is a folder; give a file name such as "
                f"{path / 'results.sqlite'}"
            )
        if path.exists() and not path.is_file():
            raise StoreError(
                f"the result store {path} is not a regular file (a device, FIFO or socket); "
                "give the name of a new or existing .sqlite file."
            )
        writable_file(
            path,
            purpose="the result store",
            fix="give --store a path in a folder you can write to.",
            error=StoreError,
            note=" (SQLite also keeps journal files beside the store)",
        )

    def _identify(self) -> int | None:
        """The schema of an existing file, after checking (read only) that it is ours."""
        conn = self._conn
        application_id = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        if application_id == 0 and not tables:
            return None  # an empty SQLite file: a new store
        schema: str | None = None
        if "meta" in tables:
            row = conn.execute("SELECT value FROM meta WHERE name='schema'").fetchone()
            schema = row[0] if row else None
        legacy = application_id == 0 and tables >= _SCHEMA_1_TABLES and schema == "1"
        if application_id != APPLICATION_ID and not legacy:
            shown = ", ".join(sorted(tables)[:6]) or "none"
            raise StoreError(
                f"{self.path} is not a cxr-widgets result store: it is another program's "
                f"SQLite database (tables: {shown}). Nothing in it was changed. Give --store "
                "a new file name (or the store an earlier run made)."
            )
        try:
            version = int(schema or "")
        except ValueError:
            raise StoreError(
                f"{self.path} is a damaged cxr-widgets result store (no schema version); "
                "move it aside and give --store a new file name."
            ) from None
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} is a result store of schema {version}; this version of "
                f"cxr-widgets reads schema {SCHEMA_VERSION} and older. Upgrade cxr-widgets "
                "or use a new --store file."
            )
        return version

    def _create_or_upgrade(self, schema: int | None) -> None:
        with self._transaction("create the tables") as conn:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            if schema == 1:
                # Schema 1 cached prepared-image digests by path, size and time: never reuse.
                conn.execute("DELETE FROM image_digests")
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            conn.execute(
                "INSERT OR REPLACE INTO meta(name, value) VALUES ('schema', ?)",
                (str(SCHEMA_VERSION),),
            )

    def _open_error(self, exc: sqlite3.Error) -> StoreError:
        return StoreError(
            f"cannot open the result store {self.path}: {_sqlite_problem(exc)}. Is it a "
            "cxr-widgets store (SQLite)? Give --store another file name to start a new one; "
            "move a damaged file aside rather than deleting it."
        )

    # --- the one transaction helper -------------------------------------------------------

    @contextmanager
    def _transaction(self, action: str) -> Iterator[sqlite3.Connection]:
        """One committed write; any SQLite failure rolls back and becomes a StoreError."""
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    # SQLite may already have rolled back (a full disk does): only roll
                    # back what is still open, so the real error is the one reported.
                    if conn.in_transaction:
                        with suppress(sqlite3.Error):
                            conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise StoreError(
                    f"could not {action} in the result store {self.path}: "
                    f"{_sqlite_problem(exc)}. Everything stored before is kept; fix that "
                    "and run again to resume."
                ) from None

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(
                    f"cannot read the result store {self.path}: {_sqlite_problem(exc)}. "
                    "Move it aside and give --store a new file name; nothing was changed."
                ) from None

    # --- writing ------------------------------------------------------------------------

    def put_many_ok(
        self,
        items: list[tuple[str, Report, str]],
        *,
        sources: Mapping[str, Mapping[str, str | os.PathLike[str]]] | None = None,
    ) -> None:
        """Store reports ``(key, report, study_id)`` in one transaction (one request's
        answer), with the studies' image ``sources`` (study_id -> {column: path}).

        A stored report is never overwritten; an earlier error for the key is.
        """
        now = utc_now("milliseconds")
        rows = [
            (key, study_id or report.study_id, report.to_json(indent=None), report.request_id, now)
            for key, report, study_id in items
        ]
        with self._transaction("store reports") as conn:
            conn.executemany(_UPSERT_OK, rows)
            _write_sources(conn, sources or {})

    def put_many_errors(
        self,
        items: list[tuple[str, str]],
        error: BaseException | tuple[str, str],
        *,
        request_id: str | None = None,
        sources: Mapping[str, Mapping[str, str | os.PathLike[str]]] | None = None,
    ) -> None:
        """Record the same failure for studies ``(key, study_id)`` in one transaction.

        ``error``: the exception, or ``(type name, message)``. Never overwrites a
        stored report.
        """
        if isinstance(error, BaseException):
            error_type, message = type(error).__name__, str(error)
            request_id = request_id or getattr(error, "request_id", None)
        else:
            error_type, message = error
        now = utc_now("milliseconds")
        rows = [(key, study_id, error_type, message, request_id, now) for key, study_id in items]
        with self._transaction("record failures") as conn:
            conn.executemany(_UPSERT_ERROR, rows)
            _write_sources(conn, sources or {})

    def put_error(
        self,
        key: str,
        error: BaseException | tuple[str, str],
        *,
        study_id: str = "",
        request_id: str | None = None,
    ) -> None:
        """Record one study's failure (see :meth:`put_many_errors`); the public way to
        mark a study as failed, e.g. by a tool that ran it elsewhere."""
        self.put_many_errors([(key, study_id)], error, request_id=request_id)

    def put_sources(self, study_id: str, sources: Mapping[str, str | os.PathLike[str]]) -> None:
        """Record a study's image sources, ``{column: path as given}`` (replacing earlier ones)."""
        with self._transaction("record image sources") as conn:
            _write_sources(conn, {study_id: sources})

    def get_sources(self, study_id: str) -> dict[str, str]:
        """A study's image sources, ``{column: path}`` ({} when none were recorded)."""
        rows = self._read(
            "SELECT column_name, path FROM sources WHERE study_id=? ORDER BY column_name",
            (study_id,),
        )
        return dict(rows)

    # --- the image digest cache ----------------------------------------------------------

    def digests(self) -> dict[str, str]:
        """Every content fingerprint (:func:`content_fingerprint`) and its prepared-PNG digest."""
        return dict(self._read("SELECT fingerprint, digest FROM image_digests"))  # type: ignore[arg-type]

    def put_digests(self, pairs: Mapping[str, str]) -> None:
        """Remember prepared-PNG digests by content fingerprint."""
        if not pairs:
            return
        with self._transaction("cache image digests") as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO image_digests(fingerprint, digest) VALUES (?, ?)",
                list(pairs.items()),
            )

    # --- reading ------------------------------------------------------------------------

    def _rows(self, where: str = "", params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self._read(
            "SELECT key, study_id, status, report, error_type, error_message, attempts, "
            f"request_id, created, updated FROM results {where} ORDER BY rowid",
            params,
        )

    def _result(self, row: tuple[Any, ...]) -> StoredResult:
        key, study_id, status, report, error_type, message, attempts, rid, created, updated = row
        parsed = None
        if report:
            try:
                parsed = Report.from_json(report)
            except (CxrWidgetsError, TypeError, ValueError):
                parsed = None
            if parsed is None:
                # One damaged row must not stop a run: it becomes a failure, sent again.
                logger.warning("result store %s: a damaged report row was set aside", self.path)
                self._mark_damaged(key)
                status, error_type, message = "error", "StoreError", DAMAGED_ROW
        return StoredResult(
            key=key,
            study_id=study_id,
            status=status,
            report=parsed,
            error_type=error_type,
            error_message=message,
            attempts=attempts,
            request_id=rid,
            created=created,
            updated=updated,
        )

    def _mark_damaged(self, key: str) -> None:
        try:
            with self._transaction("set aside a damaged row") as conn:
                conn.execute(
                    "UPDATE results SET status='error', report=NULL, error_type='StoreError', "
                    "error_message=?, updated=? WHERE key=?",
                    (DAMAGED_ROW, utc_now("milliseconds"), key),
                )
        except StoreError:  # a read-only store: the row stays, the study is still resent
            logger.warning("result store %s: could not set aside a damaged row", self.path)

    def get(self, key: str) -> StoredResult | None:
        """The stored result for ``key``, or None."""
        rows = self._rows("WHERE key=?", (key,))
        return self._result(rows[0]) if rows else None

    def ok_keys(self) -> set[str]:
        """Keys that have a stored report."""
        return {row[0] for row in self._read("SELECT key FROM results WHERE status='ok'")}

    def results(self, status: str | None = None) -> Iterator[StoredResult]:
        """Every stored result in the order written (``status``: "ok" or "error").

        A damaged report row comes back as a failure (and is sent again by the next run).
        """
        rows = self._rows("WHERE status=?", (status,)) if status else self._rows()
        for row in rows:
            result = self._result(row)
            if status is None or result.status == status:
                yield result

    def load_reports(self) -> list[Report]:
        """Every readable stored report, in the order written."""
        return [r.report for r in self.results("ok") if r.report is not None]

    def counts(self) -> dict[str, int]:
        """``{"ok": n, "error": n, "total": n}``."""
        rows = dict(self._read("SELECT status, COUNT(*) FROM results GROUP BY status"))  # type: ignore[arg-type]
        ok, error = int(rows.get("ok", 0)), int(rows.get("error", 0))
        return {"ok": ok, "error": error, "total": ok + error}

    def __len__(self) -> int:
        return self.counts()["total"]

    @property
    def reviews(self) -> Any:
        """Reader reviews in this file (:class:`cxr_widgets.review.ReviewStore`)."""
        from .review import ReviewStore

        return ReviewStore.for_store(self)

    # --- export -------------------------------------------------------------------------

    def export_jsonl(self, path: str | os.PathLike[str], *, include_errors: bool = True) -> int:
        """One JSON object per line and study; returns the number of lines.

        Reports: ``{"key", "study_id", "status": "ok", "report": {...}}``;
        failures: ``{"key", "study_id", "status": "error", "error": {"type",
        "message"}, "attempts"}``. :func:`load_jsonl` reads the reports back.
        """
        lines = [result_line(r) for r in self.results() if include_errors or r.ok]
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


def _write_sources(
    conn: sqlite3.Connection, sources: Mapping[str, Mapping[str, str | os.PathLike[str]]]
) -> None:
    for study_id, columns in sources.items():
        conn.execute("DELETE FROM sources WHERE study_id=?", (study_id,))
        conn.executemany(
            "INSERT INTO sources(study_id, column_name, path) VALUES (?, ?, ?)",
            [(study_id, column, os.fspath(path)) for column, path in columns.items()],
        )


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
