"""Reader reviews of a results store, and the reference sets they make.

A reader judges each finding of a stored report (agree, disagree, unsure),
may edit its text and boxes, add findings the model missed, write a note and
mark the study done. Reviews live in the results store's own SQLite file, in
tables of their own (``review_*``, with their own schema version); the
``results`` table, the model's answer, is only ever read.

Every change is one committed transaction (WAL, ``synchronous=FULL``), so a
method that returned has saved its change: a kernel restart or a killed
process loses nothing that was acknowledged. Each reviewer's work is kept
apart (reviewer name in every key), and every change is logged with the row
it replaced, so :meth:`ReviewStore.undo` restores the reviewer's last change.

A study counts as *reviewed* when every model finding has a verdict or the
reader marked it done. Its reference findings are the agreed model findings
(as edited) and the findings the reader added; disagreed and unsure ones are
left out of the reference set and listed apart in the JSON export. Boxes are
in the model's 0..1 frame (:class:`~cxr_widgets.report.Box`). The export
formats are documented in ``docs/reference-set.md``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import ReviewError, StoreError
from .report import Box, Finding, Report, csv_safe, validate_box

__all__ = [
    "EXPORT_FORMATS",
    "REVIEW_SCHEMA_VERSION",
    "VERDICTS",
    "ReviewError",
    "ReviewStore",
    "ReviewedFinding",
    "normalise_text",
    "store_for_review",
]

#: The layout of the ``review_*`` tables (stored in ``review_meta``).
REVIEW_SCHEMA_VERSION = 1
VERDICTS: tuple[str, ...] = ("agree", "disagree", "unsure")
SOURCES: tuple[str, ...] = ("model", "added")
EXPORT_FORMATS: tuple[str, ...] = ("json", "csv", "radfact")
#: The columns of :meth:`ReviewStore.to_dataframe` (and of the CSV export, per box).
DATAFRAME_COLUMNS: tuple[str, ...] = (
    "study_id",
    "reviewer",
    "finding_index",
    "source",
    "verdict",
    "text",
    "boxes",
    "edited",
    "in_reference",
    "reviewed",
    "note",
)
CSV_COLUMNS: tuple[str, ...] = (
    "study_id",
    "reviewer",
    "finding_index",
    "source",
    "verdict",
    "in_reference",
    "text",
    "box",
    "x_min",
    "y_min",
    "x_max",
    "y_max",
)
MAX_REVIEWER_CHARS = 100
_SPACES = re.compile(r"\s+")
_END_PUNCTUATION = ".,;:!?"


@lru_cache(maxsize=1 << 16)  # finding texts repeat across studies
def normalise_text(text: str) -> str:
    """A finding's text for comparing and counting: lower case, single spaces, no end
    punctuation (the browser's bars, the evaluation's exact judge).

    >>> normalise_text("  The heart  size is NORMAL. ")
    'the heart size is normal'
    """
    return _SPACES.sub(" ", text).strip().strip(_END_PUNCTUATION).strip().lower()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS review_meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS review_findings (
    reviewer TEXT NOT NULL,
    study_id TEXT NOT NULL,
    finding_index INTEGER NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('model', 'added')),
    verdict TEXT CHECK (verdict IN ('agree', 'disagree', 'unsure')),
    text TEXT,
    boxes TEXT,
    deleted INTEGER NOT NULL DEFAULT 0,
    updated TEXT NOT NULL,
    PRIMARY KEY (reviewer, study_id, finding_index)
);
CREATE TABLE IF NOT EXISTS review_studies (
    reviewer TEXT NOT NULL,
    study_id TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    done INTEGER NOT NULL DEFAULT 0,
    updated TEXT NOT NULL,
    PRIMARY KEY (reviewer, study_id)
);
CREATE TABLE IF NOT EXISTS review_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    reviewer TEXT NOT NULL,
    study_id TEXT NOT NULL,
    finding_index INTEGER,
    action TEXT NOT NULL,
    before TEXT,
    undone INTEGER NOT NULL DEFAULT 0,
    created TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS review_log_reviewer ON review_log(reviewer, undone, id);
"""

_FINDING_COLUMNS = ("source", "verdict", "text", "boxes", "deleted", "updated")
_STUDY_COLUMNS = ("note", "done", "updated")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class ReviewedFinding:
    """One finding as a reviewer sees it: the model's (maybe edited) or an added one."""

    index: int
    source: str
    text: str
    boxes: list[Box]
    verdict: str | None = None
    edited: bool = False
    model_text: str | None = None
    model_boxes: list[Box] = field(default_factory=list)

    @property
    def in_reference(self) -> bool:
        """True for an agreed model finding or an added one."""
        return self.source == "added" or self.verdict == "agree"

    def to_reference(self) -> dict[str, Any]:
        return {"text": self.text, "boxes": [b.as_list() for b in self.boxes]}


def _check_boxes(boxes: Iterable[Any] | None, where: str) -> list[Box]:
    result = []
    for number, value in enumerate(boxes or [], start=1):
        values = value.as_list() if isinstance(value, Box) else value
        if isinstance(values, tuple):
            values = list(values)
        reason = validate_box(values)
        if reason:
            raise ReviewError(
                f"{where}, box {number}: {reason}. Give boxes as [x_min, y_min, x_max, y_max] "
                "in the model's 0..1 frame (Box.to_pixels maps them to an image)."
            )
        result.append(Box.from_list(values))
    return result


def _boxes_json(boxes: Sequence[Box]) -> str:
    return json.dumps([b.as_list() for b in boxes])


def _boxes_from_json(text: str | None) -> list[Box]:
    return [Box.from_list(v) for v in json.loads(text)] if text else []


def check_results_file(path: Path) -> None:
    """Raise StoreError unless ``path`` is an existing SQLite file with a ``results`` table.

    Opened read-only, so another program's database is left exactly as it was.
    """
    if not path.exists():
        raise StoreError(f"the result store {path} does not exist; check the path.")
    if path.is_dir():
        raise StoreError(
            f"{path} is a folder; give the results file inside it (e.g. {path / 'results.sqlite'})."
        )
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)
        try:
            tables = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise StoreError(
            f"{path} is not a cxr-widgets result store ({exc}); give the SQLite file that "
            "run_batch or `cxr-widgets run --store` wrote."
        ) from None
    if "results" not in tables:
        shown = ", ".join(sorted(tables)[:8]) or "none"
        raise StoreError(
            f"{path} is a SQLite file but not a cxr-widgets result store: it has no 'results' "
            f"table (its tables: {shown}). It was left unchanged; give the file that run_batch "
            "or `cxr-widgets run --store` wrote."
        )


class ReviewStore:
    """Reader reviews in a results store's SQLite file.

    ``source``: the store's path or a :class:`~cxr_widgets.store.ResultStore`.
    ``reviewer``: the default reviewer name for every method (each method
    also takes ``reviewer=``). Safe to share between threads; any number of
    ReviewStores (browsers, processes) may work on one file at once.
    """

    def __init__(self, source: Any, *, reviewer: str | None = None) -> None:
        path = Path(getattr(source, "path", source))
        check_results_file(path)
        self.path = path
        self.reviewer = self.check_reviewer(reviewer) if reviewer is not None else None
        self._lock = threading.RLock()
        self._reports: dict[str, list[Finding]] = {}
        try:
            self._conn = sqlite3.connect(
                str(path), timeout=30.0, check_same_thread=False, isolation_level=None
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA busy_timeout=30000")
            self._open_schema()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open the reviews in {path} ({exc}).") from None

    @classmethod
    def for_store(cls, store: Any) -> ReviewStore:
        """The ReviewStore of a ResultStore (one per store object)."""
        reviews = getattr(store, "_review_store", None)
        if reviews is None:
            reviews = cls(store)
            store._review_store = reviews
        return reviews

    def _open_schema(self) -> None:
        with self._lock:
            row = None
            tables = {
                r[0]
                for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            if "review_meta" in tables:
                row = self._conn.execute(
                    "SELECT value FROM review_meta WHERE name='schema'"
                ).fetchone()
            if row is not None and row[0] != str(REVIEW_SCHEMA_VERSION):
                raise StoreError(
                    f"the reviews in {self.path} have layout {row[0]}; this version of "
                    f"cxr-widgets reads layout {REVIEW_SCHEMA_VERSION}. Nothing was changed; "
                    "open the file with the cxr-widgets version that wrote the reviews."
                )
            if row is None:
                with self._transaction() as conn:
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute(
                        "INSERT OR IGNORE INTO review_meta(name, value) VALUES ('schema', ?)",
                        (str(REVIEW_SCHEMA_VERSION),),
                    )

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    # --- checks -------------------------------------------------------------------------

    @staticmethod
    def check_reviewer(reviewer: Any) -> str:
        """The stripped reviewer name; ReviewError when it is empty or too long."""
        if not isinstance(reviewer, str) or not reviewer.strip():
            raise ReviewError(
                "name the reviewer: ReviewStore(..., reviewer='initials') or reviewer='...' in "
                "each call (two readers' reviews are kept apart by this name)."
            )
        name = reviewer.strip()
        if len(name) > MAX_REVIEWER_CHARS:
            raise ReviewError(
                f"the reviewer name has {len(name)} characters; use at most {MAX_REVIEWER_CHARS}."
            )
        return name

    def _who(self, reviewer: str | None) -> str:
        return self.check_reviewer(reviewer if reviewer is not None else self.reviewer)

    def model_findings(self, study_id: str) -> list[Finding]:
        """The model's findings for ``study_id`` (its latest stored report), never modified."""
        cached = self._reports.get(study_id)
        if cached is not None:
            return cached
        rows = self._read(
            "SELECT report FROM results WHERE study_id=? AND status='ok' AND report IS NOT NULL "
            "ORDER BY updated DESC, rowid DESC LIMIT 1",
            (study_id,),
        )
        if not rows:
            raise ReviewError(
                f"no stored report for study {study_id!r} in {self.path}; review a study the "
                "run answered (failed studies have no findings to review)."
            )
        findings = Report.from_json(rows[0][0]).findings
        self._reports[study_id] = findings
        return findings

    # --- writing ------------------------------------------------------------------------

    def _finding_row(self, reviewer: str, study_id: str, index: int) -> dict[str, Any] | None:
        rows = self._conn.execute(
            f"SELECT {', '.join(_FINDING_COLUMNS)} FROM review_findings "
            "WHERE reviewer=? AND study_id=? AND finding_index=?",
            (reviewer, study_id, index),
        ).fetchall()
        return dict(zip(_FINDING_COLUMNS, rows[0], strict=True)) if rows else None

    def _study_row(self, reviewer: str, study_id: str) -> dict[str, Any] | None:
        rows = self._conn.execute(
            f"SELECT {', '.join(_STUDY_COLUMNS)} FROM review_studies "
            "WHERE reviewer=? AND study_id=?",
            (reviewer, study_id),
        ).fetchall()
        return dict(zip(_STUDY_COLUMNS, rows[0], strict=True)) if rows else None

    def _put_finding(
        self, conn: sqlite3.Connection, reviewer: str, study_id: str, index: int, row: dict | None
    ) -> None:
        conn.execute(
            "DELETE FROM review_findings WHERE reviewer=? AND study_id=? AND finding_index=?",
            (reviewer, study_id, index),
        )
        if row is not None:
            conn.execute(
                "INSERT INTO review_findings(reviewer, study_id, finding_index, "
                f"{', '.join(_FINDING_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (reviewer, study_id, index, *(row[c] for c in _FINDING_COLUMNS)),
            )

    def _put_study(
        self, conn: sqlite3.Connection, reviewer: str, study_id: str, row: dict | None
    ) -> None:
        conn.execute(
            "DELETE FROM review_studies WHERE reviewer=? AND study_id=?", (reviewer, study_id)
        )
        if row is not None:
            conn.execute(
                "INSERT INTO review_studies(reviewer, study_id, note, done, updated) "
                "VALUES (?, ?, ?, ?, ?)",
                (reviewer, study_id, row["note"], row["done"], row["updated"]),
            )

    def _log(
        self,
        conn: sqlite3.Connection,
        reviewer: str,
        study_id: str,
        index: int | None,
        action: str,
        before: dict | None,
    ) -> None:
        conn.execute(
            "INSERT INTO review_log(reviewer, study_id, finding_index, action, before, created) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (reviewer, study_id, index, action, json.dumps(before), _now()),
        )

    def _check_index(self, reviewer: str, study_id: str, index: int) -> str:
        """``"model"`` or ``"added"`` for an existing finding; ReviewError otherwise."""
        if isinstance(index, bool) or not isinstance(index, int):
            raise ReviewError(f"finding_index must be an integer, got {type(index).__name__}")
        count = len(self.model_findings(study_id))
        if 0 <= index < count:
            return "model"
        row = self._finding_row(reviewer, study_id, index)
        if row is not None and row["source"] == "added" and not row["deleted"]:
            return "added"
        raise ReviewError(
            f"study {study_id!r} has no finding {index}: the model gave {count} findings "
            f"(0..{count - 1}) and findings added by {reviewer!r} have the indices "
            "add_finding returned."
        )

    def _change_finding(
        self, study_id: str, index: int, reviewer: str | None, action: str, **changes: Any
    ) -> None:
        who = self._who(reviewer)
        study_id = str(study_id)
        source = self._check_index(who, study_id, index)
        with self._transaction() as conn:
            before = self._finding_row(who, study_id, index)
            row = (
                dict(before)
                if before
                else {"source": source, "verdict": None, "text": None, "boxes": None, "deleted": 0}
            )
            row.update(changes, updated=_now())
            self._put_finding(conn, who, study_id, index, row)
            self._log(conn, who, study_id, index, action, before)

    def set_verdict(
        self, study_id: str, finding_index: int, verdict: str | None, *, reviewer: str | None = None
    ) -> None:
        """Agree, disagree or unsure about a finding (None clears the verdict)."""
        if verdict is not None and verdict not in VERDICTS:
            raise ReviewError(
                f"verdict must be one of {', '.join(VERDICTS)} or None, got {verdict!r}"
            )
        self._change_finding(study_id, finding_index, reviewer, "verdict", verdict=verdict)

    def set_text(
        self, study_id: str, finding_index: int, text: str | None, *, reviewer: str | None = None
    ) -> None:
        """Replace a finding's text (None restores the model's text)."""
        if text is not None and (not isinstance(text, str) or not text.strip()):
            raise ReviewError("a finding's text must be non-empty; use None to restore the model's")
        self._change_finding(
            study_id, finding_index, reviewer, "text", text=None if text is None else text.strip()
        )

    def set_boxes(
        self,
        study_id: str,
        finding_index: int,
        boxes: Iterable[Box | Sequence[float]] | None,
        *,
        reviewer: str | None = None,
    ) -> None:
        """Replace a finding's boxes (model's 0..1 frame; [] for none; None restores the model's)."""
        where = f"study {study_id!r}, finding {finding_index}"
        value = None if boxes is None else _boxes_json(_check_boxes(boxes, where))
        self._change_finding(study_id, finding_index, reviewer, "boxes", boxes=value)

    def add_finding(
        self,
        study_id: str,
        text: str,
        boxes: Iterable[Box | Sequence[float]] = (),
        *,
        reviewer: str | None = None,
    ) -> int:
        """Add a finding the model missed; returns its ``finding_index``."""
        who = self._who(reviewer)
        study_id = str(study_id)
        if not isinstance(text, str) or not text.strip():
            raise ReviewError("an added finding needs its text (a sentence of the report)")
        count = len(self.model_findings(study_id))
        checked = _check_boxes(boxes, f"study {study_id!r}, added finding")
        with self._transaction() as conn:
            (highest,) = conn.execute(
                "SELECT MAX(finding_index) FROM review_findings WHERE reviewer=? AND study_id=?",
                (who, study_id),
            ).fetchone()
            index = max(count, (highest + 1) if highest is not None else 0)
            row = {
                "source": "added",
                "verdict": None,
                "text": text.strip(),
                "boxes": _boxes_json(checked),
                "deleted": 0,
                "updated": _now(),
            }
            self._put_finding(conn, who, study_id, index, row)
            self._log(conn, who, study_id, index, "add", None)
        return index

    def delete_finding(
        self, study_id: str, finding_index: int, *, reviewer: str | None = None
    ) -> None:
        """Delete a finding the reader added (a model finding is judged, not deleted)."""
        who = self._who(reviewer)
        if self._check_index(who, str(study_id), finding_index) == "model":
            raise ReviewError(
                f"finding {finding_index} of {study_id!r} is the model's; the model's answer is "
                "kept. Mark it 'disagree' to leave it out of the reference set."
            )
        self._change_finding(study_id, finding_index, who, "delete", deleted=1)

    def _change_study(
        self, study_id: str, reviewer: str | None, action: str, **changes: Any
    ) -> None:
        who = self._who(reviewer)
        study_id = str(study_id)
        self.model_findings(study_id)  # the study must exist
        with self._transaction() as conn:
            before = self._study_row(who, study_id)
            row = dict(before) if before else {"note": "", "done": 0}
            row.update(changes, updated=_now())
            self._put_study(conn, who, study_id, row)
            self._log(conn, who, study_id, None, action, before)

    def set_note(self, study_id: str, note: str, *, reviewer: str | None = None) -> None:
        """The reader's free-text note on a study."""
        if not isinstance(note, str):
            raise ReviewError(f"a note is text, not {type(note).__name__}")
        self._change_study(study_id, reviewer, "note", note=note)

    def mark_done(self, study_id: str, done: bool = True, *, reviewer: str | None = None) -> None:
        """Mark a study reviewed (findings without a verdict stay out of the reference set)."""
        self._change_study(study_id, reviewer, "done", done=int(bool(done)))

    def undo(self, *, reviewer: str | None = None) -> dict[str, Any] | None:
        """Undo ``reviewer``'s last change; what was undone, or None when nothing is left."""
        who = self._who(reviewer)
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT id, study_id, finding_index, action, before FROM review_log "
                "WHERE reviewer=? AND undone=0 ORDER BY id DESC LIMIT 1",
                (who,),
            ).fetchone()
            if row is None:
                return None
            log_id, study_id, index, action, before_text = row
            before = json.loads(before_text) if before_text else None
            if index is None:
                self._put_study(conn, who, study_id, before)
            else:
                self._put_finding(conn, who, study_id, index, before)
            conn.execute("UPDATE review_log SET undone=1 WHERE id=?", (log_id,))
        return {"study_id": study_id, "finding_index": index, "action": action}

    # --- reading ------------------------------------------------------------------------

    def reviewers(self) -> list[str]:
        """Everyone who reviewed something in this file, sorted."""
        rows = self._read(
            "SELECT reviewer FROM review_findings UNION SELECT reviewer FROM review_studies"
        )
        return sorted(r[0] for r in rows)

    def findings(self, study_id: str, *, reviewer: str | None = None) -> list[ReviewedFinding]:
        """The model's findings as ``reviewer`` left them, then the ones they added."""
        who = self._who(reviewer)
        model = self.model_findings(str(study_id))
        rows = {
            r[0]: dict(zip(_FINDING_COLUMNS, r[1:], strict=True))
            for r in self._read(
                f"SELECT finding_index, {', '.join(_FINDING_COLUMNS)} FROM review_findings "
                "WHERE reviewer=? AND study_id=? ORDER BY finding_index",
                (who, str(study_id)),
            )
        }
        return merge_findings(model, rows)

    def study(self, study_id: str, *, reviewer: str | None = None) -> dict[str, Any]:
        """``{"note", "done", "reviewed", "findings"}`` of one study for ``reviewer``."""
        who = self._who(reviewer)
        findings = self.findings(study_id, reviewer=who)
        with self._lock:
            row = self._study_row(who, str(study_id)) or {"note": "", "done": 0}
        n_model = sum(f.source == "model" for f in findings)
        return {
            "note": row["note"],
            "done": bool(row["done"]),
            "reviewed": _reviewed(findings, n_model, bool(row["done"])),
            "findings": findings,
        }

    def status(self, reviewer: str | None = None) -> dict[str, str]:
        """``study_id -> "reviewed" | "started"`` for every study ``reviewer`` touched.

        ``reviewer=None``: any reviewer (reviewed when one of them finished it).
        """
        states: dict[str, str] = {}
        for (_, study_id), (findings, done) in self._all(reviewer).items():
            n_model = sum(f.source == "model" for f in findings)
            state = "reviewed" if _reviewed(findings, n_model, done) else "started"
            if states.get(study_id) != "reviewed":
                states[study_id] = state
        return states

    def _all(
        self, reviewer: str | None
    ) -> dict[tuple[str, str], tuple[list[ReviewedFinding], bool]]:
        """Every (reviewer, study) with its merged findings and done flag."""
        where, params = ("WHERE reviewer=?", (reviewer,)) if reviewer else ("", ())
        finding_rows: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
        for r in self._read(
            f"SELECT reviewer, study_id, finding_index, {', '.join(_FINDING_COLUMNS)} "
            f"FROM review_findings {where}",
            params,
        ):
            finding_rows.setdefault((r[0], r[1]), {})[r[2]] = dict(
                zip(_FINDING_COLUMNS, r[3:], strict=True)
            )
        done: dict[tuple[str, str], tuple[bool, str]] = {
            (r[0], r[1]): (bool(r[2]), r[3])
            for r in self._read(
                f"SELECT reviewer, study_id, done, note FROM review_studies {where}", params
            )
        }
        result = {}
        for pair in sorted(set(finding_rows) | set(done)):
            try:
                model = self.model_findings(pair[1])
            except ReviewError:
                continue  # the study's report is gone from the results table
            result[pair] = (
                merge_findings(model, finding_rows.get(pair, {})),
                done.get(pair, (False, ""))[0],
            )
        return result

    def _notes(self, reviewer: str | None) -> dict[tuple[str, str], str]:
        where, params = ("WHERE reviewer=?", (reviewer,)) if reviewer else ("", ())
        return {
            (r[0], r[1]): r[2]
            for r in self._read(
                f"SELECT reviewer, study_id, note FROM review_studies {where}", params
            )
        }

    def to_dataframe(self, reviewer: str | None = None) -> Any:
        """One row per finding of every study a reviewer touched (every reviewer by default).

        Columns: ``study_id, reviewer, finding_index, source ("model"|"added"),
        verdict, text, boxes`` (lists of ``[x_min, y_min, x_max, y_max]`` in the
        model's frame, as edited), then ``edited, in_reference, reviewed, note``.
        """
        import pandas as pd

        notes = self._notes(reviewer)
        rows = []
        for (who, study_id), (findings, done) in self._all(reviewer).items():
            n_model = sum(f.source == "model" for f in findings)
            reviewed = _reviewed(findings, n_model, done)
            for f in findings:
                rows.append(
                    {
                        "study_id": study_id,
                        "reviewer": who,
                        "finding_index": f.index,
                        "source": f.source,
                        "verdict": f.verdict,
                        "text": f.text,
                        "boxes": [b.as_list() for b in f.boxes],
                        "edited": f.edited,
                        "in_reference": f.in_reference,
                        "reviewed": reviewed,
                        "note": notes.get((who, study_id), ""),
                    }
                )
        return pd.DataFrame(rows, columns=list(DATAFRAME_COLUMNS))

    def _one_reviewer(self, reviewer: str | None) -> str | None:
        if reviewer is not None:
            return self.check_reviewer(reviewer)
        if self.reviewer is not None:
            return self.reviewer
        names = self.reviewers()
        if len(names) > 1:
            raise ReviewError(
                f"{len(names)} readers reviewed this store ({', '.join(names)}); a reference "
                "set is one reader's: pass reviewer='...'."
            )
        return names[0] if names else None

    def _reviewed_studies(
        self, reviewer: str | None
    ) -> list[tuple[str, str, list[ReviewedFinding]]]:
        who = self._one_reviewer(reviewer)
        if who is None:
            return []
        out = []
        for (name, study_id), (findings, done) in self._all(who).items():
            n_model = sum(f.source == "model" for f in findings)
            if _reviewed(findings, n_model, done):
                out.append((name, study_id, findings))
        return sorted(out, key=lambda item: item[1])

    def reference_set(self, reviewer: str | None = None) -> list[dict[str, Any]]:
        """The reviewed studies as references: ``[{"study_id", "findings": [{"text", "boxes"}]}]``.

        Agreed model findings (as edited) and added findings; boxes in the
        model's 0..1 frame. ``reviewer=None`` uses the store's default
        reviewer, or the only one; with several, name one.
        """
        return [
            {
                "study_id": study_id,
                "findings": [f.to_reference() for f in findings if f.in_reference],
            }
            for _, study_id, findings in self._reviewed_studies(reviewer)
        ]

    def export(
        self, path: str | os.PathLike[str], format: str = "json", *, reviewer: str | None = None
    ) -> int:
        """Write the reference set of the reviewed studies; returns the number of studies.

        ``format``: ``"json"`` (the documented reference-set layout, with the
        left-out findings listed apart), ``"csv"`` (one row per finding and
        box, every verdict), or ``"radfact"`` (RadFact's grounded-report
        layout: per study the model's findings as ``prediction`` and the
        reference as ``target``). See ``docs/reference-set.md``.
        """
        if format not in EXPORT_FORMATS:
            raise ReviewError(f"format must be one of {', '.join(EXPORT_FORMATS)}, got {format!r}")
        studies = self._reviewed_studies(reviewer)
        notes = self._notes(None)
        if format == "json":
            data: Any = [
                {
                    "study_id": study_id,
                    "reviewer": who,
                    "findings": [
                        {**f.to_reference(), "source": f.source, "finding_index": f.index}
                        for f in findings
                        if f.in_reference
                    ],
                    "excluded": [
                        {**f.to_reference(), "verdict": f.verdict, "finding_index": f.index}
                        for f in findings
                        if not f.in_reference
                    ],
                    "note": notes.get((who, study_id), ""),
                }
                for who, study_id, findings in studies
            ]
            _write_json(path, data)
        elif format == "radfact":
            data = [
                {
                    "example_id": study_id,
                    "prediction": [
                        _radfact_phrase(f.model_text or "", f.model_boxes)
                        for f in findings
                        if f.source == "model"
                    ],
                    "target": [
                        _radfact_phrase(f.text, f.boxes) for f in findings if f.in_reference
                    ],
                }
                for _, study_id, findings in studies
            ]
            _write_json(path, data)
        else:
            _write_csv(path, studies)
        return len(studies)

    def data_version(self) -> int:
        """Changes when another connection commits to the file (for polling)."""
        return int(self._read("PRAGMA data_version")[0][0])

    # --- lifetime -----------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> ReviewStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ReviewStore({str(self.path)!r})"


def _answer_digest(report: Report) -> str:
    wire = json.dumps([f.to_wire() for f in report.findings], sort_keys=True)
    return hashlib.sha256(wire.encode("utf-8")).hexdigest()


def store_for_review(
    store: Any, report: Report, sources: Mapping[str, str | os.PathLike[str]] | None = None
) -> str:
    """Store one study's ``report`` in a results store so it can be reviewed; its study id.

    ``store``: a :class:`~cxr_widgets.store.ResultStore`. The id is the study's
    own (``report.study_id``), else ``study-`` and 12 hex digits of the digest
    of the study as sent (from the report's provenance), so the same study gets
    the same id in every session. When the store already holds a different
    answer under that id (another model version, another endpoint), this
    answer is reviewed apart under the id with ``-`` and 8 hex digits of the
    answer's digest added. The model's answer is never overwritten.
    ``sources``: the study's image paths ``{column: path}``, recorded so
    :class:`~cxr_widgets.StudyBrowser` can show the study from the same file.
    """
    answer = _answer_digest(report)
    digest = report.provenance.study_digest if report.provenance else ""
    base = report.study_id or f"study-{(digest or answer)[:12]}"
    reviews = ReviewStore.for_store(store)
    study_id = base
    try:
        stored = reviews.model_findings(base)
    except ReviewError:
        stored = None
    if stored is not None and [f.to_wire() for f in stored] != [
        f.to_wire() for f in report.findings
    ]:
        study_id = f"{base}-{answer[:8]}"
        try:
            reviews.model_findings(study_id)
            return study_id  # stored in an earlier session
        except ReviewError:
            stored = None
    if stored is None:
        key = hashlib.sha256(f"review|{study_id}|{answer}".encode()).hexdigest()
        store.put_many_ok(
            [(key, report, study_id)], sources={study_id: dict(sources)} if sources else None
        )
    return study_id


def merge_findings(model: list[Finding], rows: dict[int, dict[str, Any]]) -> list[ReviewedFinding]:
    """The model's findings with a reviewer's rows applied, then the added findings."""
    merged = []
    for index, finding in enumerate(model):
        row = rows.get(index) or {}
        text = row.get("text")
        boxes = row.get("boxes")
        merged.append(
            ReviewedFinding(
                index=index,
                source="model",
                text=text if text is not None else finding.text,
                boxes=_boxes_from_json(boxes) if boxes is not None else list(finding.boxes),
                verdict=row.get("verdict"),
                edited=text is not None or boxes is not None,
                model_text=finding.text,
                model_boxes=list(finding.boxes),
            )
        )
    for index in sorted(i for i, r in rows.items() if r["source"] == "added" and not r["deleted"]):
        row = rows[index]
        merged.append(
            ReviewedFinding(
                index=index,
                source="added",
                text=row["text"] or "",
                boxes=_boxes_from_json(row["boxes"]),
                verdict=row.get("verdict"),
                edited=True,
            )
        )
    return merged


def _reviewed(findings: list[ReviewedFinding], n_model: int, done: bool) -> bool:
    if done:
        return True
    model = [f for f in findings if f.source == "model"]
    return n_model > 0 and all(f.verdict is not None for f in model)


def _radfact_phrase(text: str, boxes: Sequence[Box]) -> dict[str, Any]:
    # RadFact's GroundedPhrase: "boxes" is null for an ungrounded phrase, never an empty list.
    return {
        "text": text,
        "boxes": [
            {"x_min": b.x_min, "y_min": b.y_min, "x_max": b.x_max, "y_max": b.y_max} for b in boxes
        ]
        or None,
    }


def _write_json(path: str | os.PathLike[str], data: Any) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, ensure_ascii=False)
        handle.write("\n")


def _write_csv(
    path: str | os.PathLike[str], studies: list[tuple[str, str, list[ReviewedFinding]]]
) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
        writer.writeheader()
        for who, study_id, findings in studies:
            for f in findings:
                base = {
                    "study_id": study_id,
                    "reviewer": who,
                    "finding_index": f.index,
                    "source": f.source,
                    "verdict": f.verdict or "",
                    "in_reference": f.in_reference,
                    "text": f.text,
                }
                for number, box in enumerate(f.boxes or [None], start=1):
                    row = dict(base, box=number if box else "")
                    if box is not None:
                        row.update(
                            x_min=box.x_min, y_min=box.y_min, x_max=box.x_max, y_max=box.y_max
                        )
                    writer.writerow({k: csv_safe(row.get(k, "")) for k in CSV_COLUMNS})
