"""``evaluate`` and ``compare``: generated reports against references, study by study."""

from __future__ import annotations

import math
import warnings
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from .. import __version__
from ..errors import EvaluationError, JudgeError
from .inputs import load_generated, load_references
from .judges import ReviewJudge, resolve_judge
from .metrics import METRICS, RougeL, box_agreement, radfact
from .model import Problem, Side, StudyPair, normalise_text
from .result import Comparison, Evaluation

__all__ = ["compare", "evaluate"]

#: Per-study count columns, in order, after study_id.
COUNT_COLUMNS: tuple[str, ...] = (
    "n_generated",
    "n_reference",
    "n_generated_judged",
    "n_generated_entailed",
    "n_reference_entailed",
    "n_generated_grounded",
    "n_reference_grounded",
    "n_generated_boxes",
    "n_reference_boxes",
)


@dataclass
class _FindingTally:
    generated: int = 0
    generated_judged: int = 0
    generated_entailed: int = 0
    generated_grounded: int = 0
    generated_spatial: int = 0
    reference: int = 0
    reference_entailed: int = 0
    reference_grounded: int = 0
    reference_spatial: int = 0
    studies: set = field(default_factory=set)


def _judge_all(judge: Any, pairs: list[StudyPair]) -> list[Any]:
    if hasattr(judge, "judge_many"):
        results = list(judge.judge_many(pairs))
        if len(results) != len(pairs):
            raise EvaluationError(
                f"the judge's judge_many answered {len(results)} studies of {len(pairs)}"
            )
        return results
    out: list[Any] = []
    for pair in pairs:
        try:
            out.append(judge.judge(pair))
        except JudgeError as exc:
            out.append(exc)
    return out


def _check_judgement(pair: StudyPair, result: Any) -> str | None:
    """Why a judge's answer cannot be used for this study, or None."""
    try:
        shapes = (
            len(result.generated) == len(pair.generated) == len(result.generated_evidence),
            len(result.reference) == len(pair.reference) == len(result.reference_evidence),
        )
        bad_index = any(
            not 0 <= j < len(pair.reference) for e in result.generated_evidence for j in e
        ) or any(not 0 <= i < len(pair.generated) for e in result.reference_evidence for i in e)
    except (AttributeError, TypeError):
        return f"the judge returned {type(result).__name__}, not a Judgement"
    if not all(shapes):
        return "the judge's answer does not have one verdict per sentence"
    if bad_index:
        return "the judge cited evidence outside the other report"
    return None


def evaluate(
    generated: Any,
    references: Any,
    *,
    judge: Any = "exact",
    bootstrap: int = 1000,
    seed: int = 0,
) -> Evaluation:
    """Evaluate generated reports against references (RadFact-style, boxes, ROUGE-L).

    ``generated``: a ``BatchResult``, a results store (path or ``ResultStore``),
    a ``.jsonl`` export or a list of ``Report`` (matched by ``study_id``).
    ``references``: a reference-set ``.json`` or ``.csv`` path, a
    ``ReviewStore`` (or :func:`~cxr_widgets.evaluate.from_reviews`), or a list
    of ``{"study_id", "findings": [{"text", "boxes"}]}`` with boxes in the
    model's 0..1 frame. ``judge``: ``"exact"``, ``"review"`` or a judge object
    (e.g. :class:`~cxr_widgets.evaluate.ChatJudge`). ``bootstrap`` resamples of
    the studies give 95 % intervals (0: none), seeded by ``seed``.

    Studies on one side only are listed in ``missing``; studies whose input
    is unusable, or that the judge could not judge, are listed in
    ``problems``; all are counted in ``counts`` -- none is dropped silently.
    """
    if not isinstance(bootstrap, int) or isinstance(bootstrap, bool) or bootstrap < 0:
        raise EvaluationError(f"bootstrap must be a whole number >= 0, got {bootstrap!r}")
    gen = load_generated(generated)
    ref = load_references(references)
    the_judge = resolve_judge(judge)
    if isinstance(the_judge, ReviewJudge) and ref.verdicts is None:
        raise EvaluationError(
            'judge="review" needs references read from reviews (store.reviews or '
            'from_reviews(...)); with a reference file use judge="exact" or a chat judge'
        )
    return _evaluate_sides(gen, ref, the_judge, bootstrap=bootstrap, seed=seed)


def _evaluate_sides(gen: Side, ref: Side, judge: Any, *, bootstrap: int, seed: int) -> Evaluation:
    problems: list[Problem] = [*gen.problems, *ref.problems]
    excluded = gen.excluded | ref.excluded
    gen_ids, ref_ids = set(gen.studies), set(ref.studies)
    missing = {
        "generated_only": sorted(gen_ids - ref_ids - excluded),
        "reference_only": sorted(ref_ids - gen_ids - excluded),
    }
    common = sorted((gen_ids & ref_ids) - excluded)  # sorted: results do not depend on input order
    pairs = [
        StudyPair(
            sid,
            gen.studies[sid],
            ref.studies[sid],
            None if ref.verdicts is None else ref.verdicts.get(sid, {}),
            None if ref.model_texts is None else ref.model_texts.get(sid, {}),
        )
        for sid in common
    ]
    results = _judge_all(judge, pairs)
    rouge = RougeL()
    rows: list[dict[str, Any]] = []
    ious: list[float] = []
    tallies: dict[str, _FindingTally] = {}
    judge_failed = 0
    for pair, result in zip(pairs, results, strict=True):
        reason = str(result) if isinstance(result, JudgeError) else _check_judgement(pair, result)
        if reason:
            judge_failed += 1
            problems.append(Problem(pair.study_id, "judge", reason))
            continue
        scores = radfact(pair.generated, pair.reference, result)
        boxes, study_ious = box_agreement(pair.generated, pair.reference)
        ious.extend(study_ious)
        row: dict[str, Any] = {"study_id": pair.study_id}
        for name in COUNT_COLUMNS[:7]:
            row[name] = scores[name]
        row["n_generated_boxes"] = sum(len(s.boxes) for s in pair.generated)
        row["n_reference_boxes"] = sum(len(s.boxes) for s in pair.reference)
        for name in METRICS[:6]:
            row[name] = scores[name]
        row.update(boxes)
        row["rouge_l"] = rouge.score(
            rouge.report_tokens(pair.reference), rouge.report_tokens(pair.generated)
        )
        rows.append(row)
        _tally(tallies, pair, result, scores)
    values = np.array([[row[m] for m in METRICS] for row in rows], dtype=float).reshape(
        len(rows), len(METRICS)
    )
    summary = _summary(values, bootstrap=bootstrap, seed=seed)
    counts = {
        "generated_studies": len(gen.studies),
        "reference_studies": len(ref.studies),
        "evaluated": len(rows),
        "generated_only": len(missing["generated_only"]),
        "reference_only": len(missing["reference_only"]),
        "excluded_generated": len({p.study_id for p in gen.problems if p.excluded}),
        "excluded_references": len({p.study_id for p in ref.problems if p.excluded}),
        "judge_failed": judge_failed,
        "empty_generated": sum(r["n_generated"] == 0 for r in rows),
        "empty_reference": sum(r["n_reference"] == 0 for r in rows),
        "generated_not_judged": sum(r["n_generated"] - r["n_generated_judged"] for r in rows),
        "problems": len(problems),
    }
    _warn(counts, problems)
    provenance = {
        "generated": gen.provenance,
        "references": ref.provenance,
        "judge": judge.describe() if hasattr(judge, "describe") else {"name": repr(judge)},
        "bootstrap": bootstrap,
        "seed": seed,
        "package": f"cxr-widgets {__version__}",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    agreement = None
    if ref.reviews_frame is not None:
        agreement = _maybe_agreement(ref.reviews_frame)
    return Evaluation(
        summary=summary,
        rows=rows,
        values=values,
        missing=missing,
        problems=problems,
        counts=counts,
        provenance=provenance,
        ious=np.asarray(ious, dtype=float),
        findings=_finding_rows(tallies),
        agreement=agreement,
    )


def _summary(values: np.ndarray, *, bootstrap: int, seed: int) -> dict[str, dict[str, Any]]:
    from .stats import summarise

    return summarise(values, METRICS, bootstrap=bootstrap, seed=seed)


def _tally(tallies: dict[str, _FindingTally], pair: StudyPair, result: Any, scores: dict) -> None:
    for sentence, status, spatial in zip(
        pair.generated, result.generated, scores["_generated_spatial"], strict=True
    ):
        t = tallies.setdefault(normalise_text(sentence.text), _FindingTally())
        t.studies.add(pair.study_id)
        t.generated += 1
        if status is not None:
            t.generated_judged += 1
            t.generated_entailed += bool(status)
            t.generated_grounded += sentence.grounded
            t.generated_spatial += spatial
    for sentence, status, spatial in zip(
        pair.reference, result.reference, scores["_reference_spatial"], strict=True
    ):
        t = tallies.setdefault(normalise_text(sentence.text), _FindingTally())
        t.studies.add(pair.study_id)
        t.reference += 1
        t.reference_entailed += bool(status)
        t.reference_grounded += sentence.grounded
        t.reference_spatial += spatial


def _finding_rows(tallies: dict[str, _FindingTally]) -> list[dict[str, Any]]:
    rows = []
    for text, t in tallies.items():
        rows.append(
            {
                "finding": text,
                "studies": len(t.studies),
                "generated": t.generated,
                "generated_entailed": t.generated_entailed,
                "precision": t.generated_entailed / t.generated_judged
                if t.generated_judged
                else math.nan,
                "reference": t.reference,
                "reference_entailed": t.reference_entailed,
                "recall": t.reference_entailed / t.reference if t.reference else math.nan,
                "generated_grounded": t.generated_grounded,
                "generated_spatially_entailed": t.generated_spatial,
                "reference_grounded": t.reference_grounded,
                "reference_spatially_entailed": t.reference_spatial,
            }
        )
    rows.sort(key=lambda r: (-(r["generated"] + r["reference"]), r["finding"]))
    return rows


def _maybe_agreement(frame: Any) -> dict[str, Any] | None:
    from .agreement import reader_agreement

    try:
        return reader_agreement(frame)
    except EvaluationError:
        return None  # not exactly two readers


def _warn(counts: dict[str, int], problems: list[Problem]) -> None:
    parts = []
    if counts["generated_only"] or counts["reference_only"]:
        parts.append(
            f"{counts['generated_only']} studies only generated and "
            f"{counts['reference_only']} only in the references (see .missing)"
        )
    reasons = Counter(p.side for p in problems)
    if reasons:
        listed = ", ".join(f"{n} on the {side} side" for side, n in sorted(reasons.items()))
        parts.append(f"{sum(reasons.values())} problems ({listed}; see .problems)")
    if parts:
        warnings.warn("evaluation: " + "; ".join(parts), UserWarning, stacklevel=4)


def compare(
    first: Any,
    second: Any,
    references: Any = None,
    *,
    judge: Any = "exact",
    bootstrap: int = 1000,
    seed: int = 0,
    labels: tuple[str, str] = ("a", "b"),
) -> Comparison:
    """Paired comparison of two runs on the studies both evaluated, with CIs of the difference.

    ``first``/``second``: two :class:`Evaluation` objects, or two generated
    inputs evaluated against ``references`` with ``judge``. The difference
    is first minus second; every bootstrap resample draws the same studies
    for both runs.
    """
    from .stats import paired_difference

    if not isinstance(first, Evaluation) or not isinstance(second, Evaluation):
        if references is None:
            raise EvaluationError("compare(generated_a, generated_b, references): give references")
        first = (
            first
            if isinstance(first, Evaluation)
            else evaluate(first, references, judge=judge, bootstrap=0, seed=seed)
        )
        second = (
            second
            if isinstance(second, Evaluation)
            else evaluate(second, references, judge=judge, bootstrap=0, seed=seed)
        )
    ids_a = {r["study_id"]: k for k, r in enumerate(first.rows)}
    ids_b = {r["study_id"]: k for k, r in enumerate(second.rows)}
    common = sorted(set(ids_a) & set(ids_b))
    a = first.values[[ids_a[s] for s in common]] if common else np.empty((0, len(METRICS)))
    b = second.values[[ids_b[s] for s in common]] if common else np.empty((0, len(METRICS)))
    summary = paired_difference(a, b, METRICS, bootstrap=bootstrap, seed=seed)
    return Comparison(
        summary=summary,
        labels=labels,
        studies=common,
        missing={
            f"{labels[0]}_only": sorted(set(ids_a) - set(ids_b)),
            f"{labels[1]}_only": sorted(set(ids_b) - set(ids_a)),
        },
        provenance={labels[0]: first.provenance, labels[1]: second.provenance},
        bootstrap=bootstrap,
        seed=seed,
    )
