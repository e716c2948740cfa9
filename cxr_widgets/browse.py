"""The study table of a results store: one row per study, sort, filters, search, counts.

The core of the study browser (no widget import). Rows are read straight
from the store's ``results`` table (read-only SQL, one JSON parse per new
row) into numpy columns, so filtering and sorting 10,000 studies takes
milliseconds. A study answered more than once (different image options or
endpoint) shows its latest answer; reviews (:mod:`cxr_widgets.review`) refer
to the same one.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import StoreError
from .review import normalise_text

__all__ = ["SORT_COLUMNS", "Filters", "StudySources", "StudyTable"]

#: Columns the table can be sorted by.
SORT_COLUMNS: tuple[str, ...] = (
    "row",
    "study_id",
    "status",
    "n_findings",
    "n_grounded",
    "n_boxes",
    "review",
)
REVIEW_STATES: tuple[str, ...] = ("", "started", "reviewed")
#: Bars in the summary chart of the most frequent findings.
TOP_FINDINGS = 12
#: Characters of an error message kept for the table (the full text is on the study).
ERROR_PREVIEW = 120


@dataclass
class Filters:
    """What the table shows. ``None`` means "do not filter on this"."""

    search: str = ""
    regex: bool = False
    has_boxes: bool | None = None
    no_findings: bool | None = None
    failed: bool | None = None
    reviewed: bool | None = None
    reviewer: str | None = None
    finding: str | None = None  # a normalised finding text (a bar of the chart)
    only: frozenset[str] | None = None  # these study ids only (e.g. Evaluation.disagreements)


@dataclass
class _Row:
    study_id: str
    key: str
    rowid: int
    ok: bool
    texts: list[str] = field(default_factory=list)
    grounded: int = 0
    boxes: int = 0
    error: str = ""


class StudyTable:
    """The studies of a results store as sortable, filterable columns.

    ``path``: the store's SQLite file (read only). :meth:`refresh` reads what
    a running batch added since the last call.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._conn = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro",
                uri=True,
                timeout=30.0,
                check_same_thread=False,
            )
            self._conn.execute("PRAGMA busy_timeout=30000")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot read the result store {self.path} ({exc}).") from None
        self._lock = threading.Lock()
        self._rows: dict[str, _Row] = {}
        self._seen = ""  # the latest "updated" read so far
        self._version = -1
        self.review_state: dict[str, str] = {}
        self.reviewers_of: dict[str, set[str]] = {}
        self.refresh(force=True)

    # --- reading ----------------------------------------------------------------------

    def data_version(self) -> int:
        with self._lock:
            return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def refresh(self, force: bool = False) -> bool:
        """Read results written since the last call; True when the table changed."""
        version = self.data_version()
        if not force and version == self._version:
            return False
        self._version = version
        with self._lock:
            try:
                rows = self._conn.execute(
                    "SELECT rowid, key, study_id, status, report, error_type, error_message, "
                    "updated FROM results WHERE updated >= ? ORDER BY updated, rowid",
                    (self._seen,),
                ).fetchall()
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"cannot read the results in {self.path} ({exc}).") from None
        changed = False
        for rowid, key, study_id, status, report, error_type, message, updated in rows:
            self._seen = max(self._seen, updated)
            study_id = study_id or key[:12]
            current = self._rows.get(study_id)
            if current is not None and current.ok and status != "ok":
                continue  # an answered study stays answered
            row = _Row(study_id, key, rowid if current is None else current.rowid, status == "ok")
            if row.ok:
                if not _fill(row, report):
                    continue
            else:
                row.error = f"{error_type or 'Error'}: {message or ''}"
            if current is None or _differs(current, row):
                self._rows[study_id] = row
                changed = True
        if changed or force:
            self._build()
        return changed

    def _build(self) -> None:
        rows = sorted(self._rows.values(), key=lambda r: r.rowid)
        self.rows = rows
        self.study_ids = [r.study_id for r in rows]
        self.index_of = {sid: i for i, sid in enumerate(self.study_ids)}
        self.ok = np.fromiter((r.ok for r in rows), dtype=bool, count=len(rows))
        self.n_findings = np.fromiter((len(r.texts) for r in rows), dtype=np.int32, count=len(rows))
        self.n_grounded = np.fromiter((r.grounded for r in rows), dtype=np.int32, count=len(rows))
        self.n_boxes = np.fromiter((r.boxes for r in rows), dtype=np.int32, count=len(rows))
        self._search_text = ["\n".join(r.texts).lower() for r in rows]
        self._normalised = [{normalise_text(t) for t in r.texts} for r in rows]
        self._id_rank = np.argsort(
            np.argsort(np.array(self.study_ids, dtype=object), kind="stable")
        )
        self.set_reviews(self.review_state, self.reviewers_of)

    def set_reviews(self, state: dict[str, str], reviewers_of: dict[str, set[str]]) -> None:
        """The review state of each study (``"started"``/``"reviewed"``) and who reviewed it."""
        self.review_state = dict(state)
        self.reviewers_of = {k: set(v) for k, v in reviewers_of.items()}
        codes = {name: code for code, name in enumerate(REVIEW_STATES)}
        self.review = np.fromiter(
            (codes.get(state.get(sid, ""), 0) for sid in self.study_ids),
            dtype=np.uint8,
            count=len(self.study_ids),
        )

    def set_review(self, study_id: str, state: str | None, reviewer: str | None) -> bool:
        """One study's state after a review change; True when its row changed."""
        row = self.index_of.get(study_id)
        if row is None:
            return False
        if state:
            self.review_state[study_id] = state
            if reviewer:
                self.reviewers_of.setdefault(study_id, set()).add(reviewer)
        else:
            self.review_state.pop(study_id, None)
        code = REVIEW_STATES.index(state) if state in REVIEW_STATES else 0
        if self.review[row] == code:
            return False
        self.review[row] = code
        return True

    def __len__(self) -> int:
        return len(self.study_ids)

    # --- views ------------------------------------------------------------------------

    def top_findings(self, n: int = TOP_FINDINGS) -> list[tuple[str, int]]:
        """The ``n`` most frequent normalised findings and how many studies have each."""
        counts: Counter[str] = Counter()
        for found in self._normalised:
            counts.update(found)
        return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:n]

    def summary(self) -> dict[str, Any]:
        """Studies, answered, failed, findings per answered study, grounded share."""
        answered = int(self.ok.sum())
        findings = int(self.n_findings.sum())
        return {
            "studies": len(self),
            "answered": answered,
            "failed": len(self) - answered,
            "findings": findings,
            "findings_per_study": round(findings / answered, 2) if answered else 0.0,
            "grounded": int(self.n_grounded.sum()),
            "boxes": int(self.n_boxes.sum()),
            "reviewed": int((self.review == 2).sum()),
        }

    def mask(self, filters: Filters) -> np.ndarray:
        """A boolean mask of the rows ``filters`` keeps."""
        keep = np.ones(len(self), dtype=bool)
        if filters.has_boxes is not None:
            keep &= (self.n_boxes > 0) == filters.has_boxes
        if filters.no_findings is not None:
            keep &= ((self.n_findings == 0) & self.ok) == filters.no_findings
        if filters.failed is not None:
            keep &= (~self.ok) == filters.failed
        if filters.reviewed is not None:
            keep &= (self.review == 2) == filters.reviewed
        if filters.reviewer:
            keep &= np.fromiter(
                (filters.reviewer in self.reviewers_of.get(sid, ()) for sid in self.study_ids),
                dtype=bool,
                count=len(self),
            )
        if filters.finding:
            wanted = filters.finding
            keep &= np.fromiter(
                (wanted in found for found in self._normalised), dtype=bool, count=len(self)
            )
        if filters.only is not None:
            keep &= np.fromiter(
                (sid in filters.only for sid in self.study_ids), dtype=bool, count=len(self)
            )
        if filters.search.strip():
            keep &= self._search(filters.search, filters.regex, keep)
        return keep

    def _search(self, text: str, regex: bool, within: np.ndarray) -> np.ndarray:
        texts = self._search_text  # lower case
        rows = np.flatnonzero(within).tolist()
        if regex:
            search = _compile(text).search
            rows = [i for i in rows if search(texts[i])]
        else:
            for word in text.lower().split():  # every word, anywhere in the study's findings
                rows = [i for i in rows if word in texts[i]]
        hits = np.zeros(len(self), dtype=bool)
        hits[rows] = True
        return hits

    def order(self, filters: Filters, sort: str = "row", descending: bool = False) -> np.ndarray:
        """Row indices kept by ``filters``, sorted by ``sort`` (a :data:`SORT_COLUMNS` name)."""
        if sort not in SORT_COLUMNS:
            raise ValueError(f"sort must be one of {', '.join(SORT_COLUMNS)}, got {sort!r}")
        rows = np.flatnonzero(self.mask(filters)).astype(np.int32)
        if sort == "row":
            keys = rows
        else:
            column = {
                "study_id": self._id_rank,
                "status": self.ok.astype(np.int8),
                "n_findings": self.n_findings,
                "n_grounded": self.n_grounded,
                "n_boxes": self.n_boxes,
                "review": self.review,
            }[sort]
            keys = column[rows]
        sequence = np.argsort(-keys.astype(np.int64) if descending else keys, kind="stable")
        return rows[sequence]

    def columns(self) -> dict[str, list[Any]]:
        """The table's columns as plain lists (sent to the browser once per change)."""
        return {
            "study_id": self.study_ids,
            "ok": self.ok.astype(int).tolist(),
            "n_findings": self.n_findings.tolist(),
            "n_grounded": self.n_grounded.tolist(),
            "n_boxes": self.n_boxes.tolist(),
            "error": [r.error[:ERROR_PREVIEW] for r in self.rows],
        }

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _compile(pattern: str) -> re.Pattern[str]:
    """``pattern`` for lower-cased text, case-insensitive.

    The texts are kept in lower case, so the pattern is lower-cased (escapes
    such as ``\\S`` and ``\\N{...}`` left as they are) and compiled without
    ``re.IGNORECASE``, which costs three times as much per character.
    """
    out, escape, named = [], False, False
    for char in pattern:
        if named:
            out.append(char)
            named = char != "}"
        elif escape:
            out.append(char)
            escape, named = False, char == "N"
        else:
            out.append(char.lower())
            escape = char == "\\"
    try:
        return re.compile("".join(out))
    except re.error:
        try:
            return re.compile(pattern, re.IGNORECASE)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression ({exc})") from None


def _fill(row: _Row, report: str | None) -> bool:
    """Fill a row from its report JSON; False when the JSON cannot be read."""
    try:
        findings = json.loads(report or "")["findings"]
        for text, boxes in findings:
            row.texts.append(str(text))
            if boxes:
                row.grounded += 1
                row.boxes += len(boxes)
    except (ValueError, KeyError, TypeError):
        return False
    return True


def _differs(old: _Row, new: _Row) -> bool:
    return (old.key, old.ok, old.texts, old.error) != (new.key, new.ok, new.texts, new.error)


class StudySources:
    """Where each study's images are: the store's records, else the manifest.

    Paths are used as recorded (never pixels). Files that moved are listed
    by :meth:`missing`; :meth:`relocate` looks for them by name in a new
    folder. A manifest that does not match the store is reported in
    :attr:`warnings` with how many studies match.
    """

    def __init__(
        self,
        get_sources: Callable[[str], dict[str, str]] | None,
        study_ids: list[str],
        manifest: Any = None,
    ) -> None:
        self.warnings: list[str] = []
        self.studies: dict[str, Any] = {}  # study_id -> Study from the manifest
        self._get_sources = get_sources
        self._recorded: dict[str, dict[str, str]] = {}
        self._moved: dict[str, str] = {}
        if manifest is not None:
            from .manifest import read_manifest

            for study in read_manifest(manifest, check_files=False):
                self.studies[study.study_id] = study
            self.check_match(study_ids, str(manifest))

    def check_match(self, study_ids: list[str], where: str) -> int:
        """How many of the store's studies the manifest lists (a warning when not all)."""
        matched = len(set(study_ids) & set(self.studies))
        if study_ids and matched < len(study_ids):
            self.warnings.append(
                f"the manifest {where} lists {len(self.studies)} studies and the store "
                f"{len(study_ids)}; {matched} match by study_id. Studies without a match show "
                "no images unless the store recorded their paths; check that the manifest "
                "belongs to this store."
            )
        return matched

    def paths(self, study_id: str) -> dict[str, str]:
        """``{column: path}`` for the study (recorded first, then the manifest)."""
        if study_id not in self._recorded:
            recorded = self._get_sources(study_id) if self._get_sources else {}
            self._recorded[study_id] = {k: str(v) for k, v in (recorded or {}).items()}
        found = dict(self._recorded[study_id])
        study = self.studies.get(study_id)
        if study is not None:
            for column in ("frontal_image", "lateral_image", "prior_image"):
                value = getattr(study, column)
                if column not in found and isinstance(value, (str, Path)):
                    found[column] = str(value)
        return {column: self._moved.get(path, path) for column, path in found.items()}

    def missing(self, study_ids: list[str]) -> dict[str, list[str]]:
        """Studies whose image files are not where they were recorded."""
        gone: dict[str, list[str]] = {}
        checked: dict[str, bool] = {}
        for sid in study_ids:
            for path in self.paths(sid).values():
                if path not in checked:
                    checked[path] = Path(path).is_file()
                if not checked[path]:
                    gone.setdefault(sid, []).append(path)
        return gone

    def relocate(self, folder: str | Path, study_ids: list[str]) -> int:
        """Find moved images by file name (and parent folders) under ``folder``; how many."""
        root = Path(folder).expanduser()
        if not root.is_dir():
            raise StoreError(f"{root} is not a folder; give the folder the images moved to.")
        by_name: dict[str, list[Path]] = {}
        for path in root.rglob("*"):
            if path.is_file():
                by_name.setdefault(path.name, []).append(path)
        found = 0
        for paths in self.missing(study_ids).values():
            for old in paths:
                original = next((k for k, v in self._moved.items() if v == old), old)
                candidates = by_name.get(Path(original).name, [])
                best = _best_match(Path(original), candidates)
                if best is not None:
                    self._moved[original] = str(best)
                    found += 1
        return found


def _best_match(old: Path, candidates: list[Path]) -> Path | None:
    """The candidate sharing the most trailing path parts with ``old``."""

    def shared(path: Path) -> int:
        count = 0
        for a, b in zip(reversed(old.parts), reversed(path.parts), strict=False):
            if a != b:
                break
            count += 1
        return count

    return max(candidates, key=shared) if candidates else None
