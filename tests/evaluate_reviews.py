"""A minimal in-test ReviewStore with the agreed API, for the evaluation tests.

The study browser's real ``ReviewStore`` (``cxr_widgets.review``) is built on
another branch at the same time; until it is on main, the evaluation is tested
against this object, which keeps reviews in memory with the same methods and
the same ``to_dataframe()`` columns. Tests that can use the real one do so
when it is importable (see ``review_stores`` in test_evaluate.py).
"""

from __future__ import annotations

from typing import Any

from cxr_widgets.report import Report

COLUMNS = ["study_id", "reviewer", "finding_index", "source", "verdict", "text", "boxes", "edited"]


class InTestReviews:
    """Reviews of ``reports`` (by study id): verdicts, edits, added findings, done flags."""

    def __init__(self, reports: list[Report]) -> None:
        self._reports = {r.study_id: r for r in reports}
        self._rows: dict[tuple[str, str, int], dict[str, Any]] = {}
        self._done: set[tuple[str, str]] = set()

    def _row(self, study_id: str, index: int, reviewer: str) -> dict[str, Any]:
        key = (reviewer, study_id, index)
        if key not in self._rows:
            finding = self._reports[study_id].findings[index]
            self._rows[key] = {
                "source": "model",
                "verdict": None,
                "text": finding.text,
                "boxes": [b.as_list() for b in finding.boxes],
                "edited": False,
            }
        return self._rows[key]

    def set_verdict(
        self, study_id: str, finding_index: int, verdict: str | None, *, reviewer: str
    ) -> None:
        self._row(study_id, finding_index, reviewer)["verdict"] = verdict

    def set_text(self, study_id: str, finding_index: int, text: str, *, reviewer: str) -> None:
        row = self._row(study_id, finding_index, reviewer)
        row["text"], row["edited"] = text, True

    def set_boxes(
        self, study_id: str, finding_index: int, boxes: list[list[float]], *, reviewer: str
    ) -> None:
        row = self._row(study_id, finding_index, reviewer)
        row["boxes"], row["edited"] = [list(b) for b in boxes], True

    def add_finding(self, study_id: str, text: str, boxes: Any = (), *, reviewer: str) -> int:
        used = [i for (who, sid, i) in self._rows if who == reviewer and sid == study_id]
        index = max([*used, len(self._reports[study_id].findings) - 1]) + 1
        self._rows[(reviewer, study_id, index)] = {
            "source": "added",
            "verdict": None,
            "text": text,
            "boxes": [list(b) for b in boxes],
            "edited": False,
        }
        return index

    def mark_done(self, study_id: str, *, reviewer: str) -> None:
        self._done.add((reviewer, study_id))

    def _reviewed(self, reviewer: str, study_id: str) -> bool:
        if (reviewer, study_id) in self._done:
            return True
        n_model = len(self._reports[study_id].findings)
        given = {
            i
            for (who, sid, i), row in self._rows.items()
            if who == reviewer and sid == study_id and row["source"] == "model" and row["verdict"]
        }
        return len(given) == n_model

    def to_dataframe(self) -> Any:
        import pandas as pd

        rows = []
        touched = sorted({(who, sid) for (who, sid, _) in self._rows} | self._done)
        for who, sid in touched:
            for index in range(len(self._reports[sid].findings)):
                self._row(sid, index, who)
            for (w, s, i), row in sorted(self._rows.items()):
                if (w, s) == (who, sid):
                    rows.append({"study_id": s, "reviewer": w, "finding_index": i, **row})
        return pd.DataFrame(rows, columns=COLUMNS)

    def reference_set(self, reviewer: str | None = None) -> list[dict[str, Any]]:
        out = []
        studies = sorted(
            {sid for (who, sid, _) in self._rows if who == reviewer}
            | {sid for (who, sid) in self._done if who == reviewer}
        )
        for sid in studies:
            if not self._reviewed(reviewer, sid):
                continue
            findings = [
                {"text": row["text"], "boxes": row["boxes"]}
                for (w, s, _), row in sorted(self._rows.items())
                if w == reviewer
                and s == sid
                and (row["source"] == "added" or row["verdict"] == "agree")
            ]
            out.append({"study_id": sid, "findings": findings})
        return out
