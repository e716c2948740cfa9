"""Generated reports and references, read into one shape keyed by study id.

Generated: a ``BatchResult``, a results store (``ResultStore`` or the path of
its SQLite file), a JSONL export of a run, or a list of ``Report``.
References: a reference-set JSON file, a CSV file, a ``ReviewStore`` (or
:func:`from_reviews` to pick a reviewer), or a list of dicts
``{"study_id", "findings": [{"text", "boxes"}]}``. Whatever cannot be used is
recorded as a :class:`~cxr_widgets.evaluate.model.Problem`, never dropped
silently.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from ..errors import EvaluationError
from ..report import Box, Report, validate_box
from .model import VERDICTS, Problem, Sentence, Side

__all__ = ["References", "from_reviews", "load_generated", "load_references"]

#: Columns a reference CSV needs; the package's own report CSV has them.
CSV_REQUIRED = ("study_id", "text")
CSV_BOX_COLUMNS = ("x_min", "y_min", "x_max", "y_max")
STORE_SUFFIXES = (".sqlite", ".sqlite3", ".db")


# --- shared checks ------------------------------------------------------------------------


def _plainly_valid(values: Any) -> bool:
    """The common case, checked fast; anything else goes to ``validate_box`` for its reason."""
    if type(values) not in (list, tuple) or len(values) != 4:
        return False
    x0, y0, x1, y1 = values
    if not all(type(v) in (float, int) for v in values):
        return False
    return 0 <= x0 <= x1 <= 1 and 0 <= y0 <= y1 <= 1  # NaN fails every comparison


def _boxes(
    raw: Any, study_id: str, number: int, side: str, problems: list[Problem]
) -> tuple[tuple[float, float, float, float], ...] | None:
    """The finding's boxes, or None (and a problem) when one is invalid."""
    if raw is None:
        return ()
    if not isinstance(raw, (list, tuple)):
        problems.append(Problem(study_id, side, "boxes must be a list of boxes", number))
        return None
    out = []
    for box_number, values in enumerate(raw, start=1):
        if isinstance(values, Box):
            values = [values.x_min, values.y_min, values.x_max, values.y_max]
        elif isinstance(values, Mapping):
            try:
                values = [values[k] for k in CSV_BOX_COLUMNS]
            except KeyError:
                values = None
        if _plainly_valid(values):
            out.append((float(values[0]), float(values[1]), float(values[2]), float(values[3])))
            continue
        reason = validate_box(values)
        if reason:
            problems.append(Problem(study_id, side, f"box {box_number}: {reason}", number))
            return None
        out.append(tuple(float(v) for v in values))  # e.g. numpy numbers
    return tuple(out)  # type: ignore[return-value]


def _collect(
    entries: Iterable[tuple[str, Sequence[Sentence] | None]], side: str, problems: list[Problem]
) -> dict[str, tuple[Sentence, ...]]:
    """Study id -> sentences; duplicates and missing ids become problems."""
    seen: dict[str, tuple[Sentence, ...] | None] = {}
    counts: Counter[str] = Counter()
    for study_id, sentences in entries:
        if not study_id:
            problems.append(
                Problem(
                    "", side, "a study without a study_id cannot be matched; give every study an id"
                )
            )
            continue
        counts[study_id] += 1
        seen[study_id] = None if sentences is None else tuple(sentences)
    out = {}
    for study_id, sentences in seen.items():
        if counts[study_id] > 1:
            problems.append(
                Problem(
                    study_id,
                    side,
                    f"study_id appears {counts[study_id]} times; which one to use is ambiguous "
                    "(give each study once, e.g. one run per evaluation)",
                )
            )
        elif sentences is not None:
            out[study_id] = sentences
    return out


def _sentences_from_findings(
    study_id: str, findings: Any, side: str, problems: list[Problem]
) -> list[Sentence] | None:
    """Sentences from ``[{"text", "boxes"}, ...]`` (or ``[text, boxes]`` pairs); None if invalid."""
    if findings is None:
        findings = []
    if not isinstance(findings, (list, tuple)):
        problems.append(Problem(study_id, side, "findings must be a list"))
        return None
    sentences = []
    for number, item in enumerate(findings, start=1):
        if isinstance(item, Mapping):
            text, raw_boxes = item.get("text"), item.get("boxes")
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            text, raw_boxes = item
        else:
            problems.append(
                Problem(study_id, side, 'a finding must be {"text": ..., "boxes": [...]}', number)
            )
            return None
        if not isinstance(text, str) or not text.strip():
            problems.append(Problem(study_id, side, "finding has no text", number))
            return None
        boxes = _boxes(raw_boxes, study_id, number, side, problems)
        if boxes is None:
            return None
        sentences.append(Sentence(text.strip(), boxes))
    return sentences


def _report_sentences(report: Report, problems: list[Problem]) -> list[Sentence] | None:
    sentences = []
    for number, finding in enumerate(report.findings, start=1):
        if not finding.text.strip():
            problems.append(Problem(report.study_id, "generated", "finding has no text", number))
            return None
        boxes = _boxes(finding.boxes, report.study_id, number, "generated", problems)
        if boxes is None:
            return None
        sentences.append(Sentence(finding.text.strip(), boxes))
    return sentences


def _file_provenance(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return {"path": str(path), "sha256": digest}


# --- generated ----------------------------------------------------------------------------


def _report_provenance(reports: Sequence[Report]) -> dict[str, Any]:
    """What produced the reports (endpoints, models, options), counted; no patient text."""
    sources = Counter(r.source or "unknown" for r in reports)
    details: Counter[str] = Counter()
    for report in reports:
        prov = getattr(report, "provenance", None)
        if prov is None:
            continue
        if callable(getattr(prov, "to_dict", None)):
            data = prov.to_dict()
        else:
            data = asdict(prov) if is_dataclass(prov) else dict(prov)
        for volatile in ("time", "created", "request_digest", "study_digest", "request_id"):
            data.pop(volatile, None)
        details[json.dumps(data, sort_keys=True, default=str)] += 1
    return {
        "reports": len(reports),
        "demo": sum(bool(r.demo) for r in reports),
        "sources": dict(sources),
        "provenance": [{"count": n, **json.loads(k)} for k, n in details.most_common(10)],
    }


def load_generated(generated: Any) -> Side:
    """The generated reports as a :class:`Side` (see the module docstring for what is accepted)."""
    problems: list[Problem] = []
    provenance: dict[str, Any]
    if hasattr(generated, "reports") and hasattr(generated, "failures"):  # BatchResult
        reports = [r for r in generated.reports if r is not None]
        provenance = {"kind": "BatchResult", "store": getattr(generated, "store_path", None)}
        for failure in generated.failures:
            problems.append(
                Problem(
                    failure.study_id,
                    "generated",
                    f"generation failed in the run ({failure.error_type})",
                )
            )
    elif isinstance(generated, (str, os.PathLike)) or hasattr(generated, "load_reports"):
        reports, provenance = _reports_from_path_or_store(generated, problems)
    elif isinstance(generated, Sequence) and all(isinstance(r, Report) for r in generated):
        reports = list(generated)
        provenance = {"kind": "list of Report"}
    else:
        raise EvaluationError(
            f"cannot read generated reports from {type(generated).__name__}: give a "
            "BatchResult, a ResultStore or the path of its .sqlite file, a .jsonl export, "
            "or a list of Report"
        )
    provenance.update(_report_provenance(reports))
    entries = [(r.study_id, _report_sentences(r, problems)) for r in reports]
    return Side(_collect(entries, "generated", problems), problems, provenance)


def _reports_from_path_or_store(source: Any, problems: list[Problem]) -> tuple[list[Report], dict]:
    from ..store import ResultStore, load_jsonl

    if hasattr(source, "load_reports"):
        store = source
        reports = store.load_reports()
        failed = list(store.results("error"))
        provenance = {"kind": "ResultStore", "path": str(store.path)}
    else:
        path = Path(source)
        if not path.is_file():
            raise EvaluationError(
                f"no generated reports at {path}: give a results store (.sqlite) or a "
                ".jsonl export of a run"
            )
        if path.suffix.lower() in (".jsonl", ".ndjson"):
            return load_jsonl(path), {"kind": "jsonl", **_file_provenance(path)}
        if path.suffix.lower() not in STORE_SUFFIXES:
            raise EvaluationError(
                f"{path.name}: generated reports are read from a results store (.sqlite) "
                "or a .jsonl export; for references give the file as the second argument"
            )
        with ResultStore(path) as store:
            reports = store.load_reports()
            failed = list(store.results("error"))
        provenance = {"kind": "ResultStore", "path": str(path)}
    answered = {r.study_id for r in reports}
    for result in failed:
        if result.study_id not in answered:  # else another key of the store answered it
            problems.append(
                Problem(result.study_id, "generated", f"generation failed ({result.error_type})")
            )
    return reports, provenance


# --- references ---------------------------------------------------------------------------


class References:
    """References read from reviews (a :class:`Side` with verdicts); see :func:`from_reviews`."""

    def __init__(self, side: Side) -> None:
        self.side = side

    @property
    def study_ids(self) -> list[str]:
        return sorted(self.side.studies)

    def __len__(self) -> int:
        return len(self.side.studies)

    def __repr__(self) -> str:
        kind = self.side.provenance.get("kind", "references")
        return f"<References {kind}: {len(self)} studies, {len(self.side.problems)} problems>"


def load_references(references: Any) -> Side:
    """The references as a :class:`Side` (see the module docstring for what is accepted)."""
    if isinstance(references, References):
        return references.side
    if hasattr(references, "to_dataframe") and hasattr(references, "reference_set"):
        return from_reviews(references).side
    if isinstance(references, (str, os.PathLike)):
        return _references_from_path(Path(references))
    if isinstance(references, Sequence) and not isinstance(references, (str, bytes)):
        side = _references_from_dicts(references, "references")
        side.provenance = {"kind": "list", "studies": len(references)}
        return side
    raise EvaluationError(
        f"cannot read references from {type(references).__name__}: give a reference-set "
        ".json or .csv file, a ReviewStore (store.reviews), or a list of "
        '{"study_id": ..., "findings": [{"text": ..., "boxes": [...]}]}'
    )


def _references_from_dicts(items: Sequence[Any], side_name: str) -> Side:
    """Studies ``{"study_id", "findings"}``; the study browser's JSON export (with
    ``excluded`` and ``finding_index``) also gives the verdicts; RadFact's layout
    ``{"example_id", "target"}`` is read as well."""
    problems: list[Problem] = []
    entries = []
    verdicts: dict[str, dict[int, str]] = {}
    with_verdicts = bool(items) and all(
        isinstance(item, Mapping) and isinstance(item.get("excluded"), list) for item in items
    )
    for number, item in enumerate(items, start=1):
        if isinstance(item, Mapping) and "example_id" in item and "target" in item:
            item = {"study_id": item["example_id"], "findings": item["target"]}
        if not isinstance(item, Mapping) or "study_id" not in item:
            raise EvaluationError(
                f"reference {number} is not a study: expected "
                '{"study_id": ..., "findings": [{"text": ..., "boxes": [...]}]}'
            )
        study_id = str(item["study_id"] or "")
        sentences = _sentences_from_findings(study_id, item.get("findings"), side_name, problems)
        if with_verdicts and sentences is not None:
            sentences, verdicts[study_id] = _reviewed_export(item, sentences)
        entries.append((study_id, sentences))
    return Side(
        _collect(entries, side_name, problems),
        problems,
        verdicts=verdicts if with_verdicts else None,
    )


def _reviewed_export(
    item: Mapping[str, Any], sentences: list[Sentence]
) -> tuple[list[Sentence], dict[int, str]]:
    """Origins and verdicts from one study of the browser's JSON export."""
    verdicts: dict[int, str] = {}
    out = []
    for finding, sentence in zip(item["findings"], sentences, strict=True):
        origin = None
        if finding.get("source") == "model" and finding.get("finding_index") is not None:
            origin = int(finding["finding_index"])
            verdicts[origin] = "agree"
        out.append(Sentence(sentence.text, sentence.boxes, origin))
    for left_out in item["excluded"]:
        if left_out.get("verdict") in VERDICTS and left_out.get("finding_index") is not None:
            verdicts[int(left_out["finding_index"])] = left_out["verdict"]
    return out, verdicts


def _references_from_path(path: Path) -> Side:
    if path.suffix.lower() in STORE_SUFFIXES and path.is_file():
        from ..store import ResultStore

        store = ResultStore(path)
        reviews = getattr(store, "reviews", None)
        if reviews is None:
            raise EvaluationError(
                f"{path.name} is a results store but this version has no reviews in it; "
                "give a reference-set .json or .csv file"
            )
        return from_reviews(reviews).side
    if not path.is_file():
        raise EvaluationError(f"no reference file at {path}: give a .json or .csv reference set")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        side = _references_from_csv(path)
    elif suffix == ".json":
        side = _references_from_json(path)
    else:
        raise EvaluationError(
            f"{path.name}: references are read from .json (reference-set schema) or .csv files"
        )
    side.provenance = {"kind": suffix.lstrip("."), **_file_provenance(path)}
    return side


def _references_from_json(path: Path) -> Side:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EvaluationError(f"{path.name} is not JSON ({exc})") from None
    if isinstance(data, Mapping) and isinstance(data.get("studies"), list):
        data = data["studies"]
    elif isinstance(data, Mapping) and all(isinstance(v, list) for v in data.values()):
        # RadFact's grounded-report layout: {study_id: [{"text", "boxes"}, ...]}
        data = [{"study_id": k, "findings": v} for k, v in data.items()]
    if not isinstance(data, list):
        raise EvaluationError(
            f"{path.name}: expected a list of studies or {{'studies': [...]}} "
            "(see docs/evaluation.md, reference-set schema)"
        )
    return _references_from_dicts(data, "references")


def _references_from_csv(path: Path) -> Side:
    """One row per finding and box: cxr-widgets' report CSV (``finding``) or the study
    browser's CSV export (``finding_index``, ``reviewer``, ``in_reference``)."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        missing = [c for c in CSV_REQUIRED if c not in columns]
        if missing:
            raise EvaluationError(
                f"{path.name} lacks the column(s) {', '.join(missing)}; a reference CSV has "
                "study_id, text and optionally finding, x_min, y_min, x_max, y_max "
                "(one row per box, as cxr-widgets' report CSV)"
            )
        rows = list(reader)
    if "reviewer" in columns:
        reviewers = sorted({(r.get("reviewer") or "").strip() for r in rows} - {""})
        if len(reviewers) > 1:
            raise EvaluationError(
                f"{path.name} holds {len(reviewers)} reviewers ({', '.join(reviewers)}); a "
                "reference set is one reader's: export one reviewer"
            )
    index_column = "finding" if "finding" in columns else "finding_index"
    has_boxes = all(c in columns for c in CSV_BOX_COLUMNS)
    problems: list[Problem] = []
    order: list[str] = []
    studies: dict[str, dict[str, dict[str, Any]]] = {}
    for row_number, row in enumerate(rows, start=2):
        study_id = (row.get("study_id") or "").strip()
        if not study_id:
            problems.append(Problem("", "references", f"row {row_number} has no study_id"))
            continue
        if study_id not in studies:
            studies[study_id] = {}
            order.append(study_id)
        text = (row.get("text") or "").strip()
        if not text:
            continue  # a study with no findings (a "normal" reference)
        if (row.get("in_reference") or "True").strip().lower() in ("false", "0"):
            continue  # the browser's export lists disagreed/unsure findings too
        key = (row.get(index_column) or "").strip() or f"row{row_number}"
        finding = studies[study_id].setdefault(key, {"text": text, "boxes": []})
        if has_boxes and any((row.get(c) or "").strip() for c in CSV_BOX_COLUMNS):
            try:
                finding["boxes"].append([float(row[c]) for c in CSV_BOX_COLUMNS])
            except ValueError:
                finding["boxes"].append(["not a number"] * 4)
    items = [{"study_id": s, "findings": list(studies[s].values())} for s in order]
    side = _references_from_dicts(items, "references")
    side.problems[:0] = problems
    return side


def from_reviews(reviews: Any, reviewer: str | None = None) -> References:
    """References from a ``ReviewStore`` (the study browser's reviews), with the verdicts.

    The reference sentences of a study are the findings the reader agreed with
    (as edited, with the reader's boxes) and those the reader added; the
    verdicts let ``judge="review"`` judge the reviewed run. With several
    reviewers, name one.
    """
    frame = reviews.to_dataframe()
    reviewers = sorted({str(r) for r in frame["reviewer"].dropna().unique()}) if len(frame) else []
    if reviewer is None:
        if len(reviewers) > 1:
            raise EvaluationError(
                f"the reviews hold {len(reviewers)} reviewers ({', '.join(reviewers)}); choose "
                "one: references=from_reviews(store.reviews, reviewer=...)"
            )
        reviewer = reviewers[0] if reviewers else None
    elif reviewer not in reviewers:
        raise EvaluationError(
            f"no reviews by {reviewer!r}; reviewers: {', '.join(reviewers) or 'none'}"
        )
    reviewed = {str(s["study_id"]) for s in reviews.reference_set(reviewer=reviewer)}
    mine = frame[frame["reviewer"] == reviewer] if reviewer is not None else frame.iloc[0:0]
    problems: list[Problem] = []
    studies: dict[str, list[Sentence]] = {s: [] for s in sorted(reviewed)}
    verdicts: dict[str, dict[int, str]] = {s: {} for s in studies}
    model_texts: dict[str, dict[int, str]] = {s: {} for s in studies}
    has_edited = "edited" in frame.columns
    for row in mine.itertuples(index=False):
        study_id = str(row.study_id)
        if study_id not in studies:
            continue  # not (yet) reviewed: not a reference
        verdict = row.verdict if isinstance(row.verdict, str) else None
        if verdict is not None and verdict not in VERDICTS:
            problems.append(Problem(study_id, "references", f"unknown verdict {verdict!r}"))
            continue
        index = int(row.finding_index)
        if row.source == "model":
            if verdict is not None:
                verdicts[study_id][index] = verdict
            if has_edited and not bool(row.edited):
                model_texts[study_id][index] = str(row.text)
            if verdict != "agree":
                continue
        boxes = _boxes(_as_list(row.boxes), study_id, index + 1, "references", problems)
        if boxes is None:
            continue
        origin = index if row.source == "model" else None
        studies[study_id].append(Sentence(str(row.text).strip(), boxes, origin))
    side = Side(
        {k: tuple(v) for k, v in studies.items()},
        problems,
        {
            "kind": "reviews",
            "path": str(getattr(reviews, "path", "")) or None,
            "reviewer": reviewer,
            "reviewers": reviewers,
            "studies": len(studies),
        },
        verdicts,
        frame,
        model_texts if has_edited else None,
    )
    return References(side)


def _as_list(boxes: Any) -> Any:
    """Review boxes may be a list, a JSON string, or missing (NaN/None)."""
    if boxes is None or (isinstance(boxes, float) and boxes != boxes):
        return None
    if isinstance(boxes, str):
        try:
            return json.loads(boxes) if boxes.strip() else None
        except json.JSONDecodeError:
            return [boxes]
    return list(boxes)
