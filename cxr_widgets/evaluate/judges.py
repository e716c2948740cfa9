"""Entailment judges: one interface, three kinds.

A judge answers, for one study, which generated sentences are entailed by the
reference and which reference sentences are entailed by the generated report,
each with its evidence (the sentences on the other side that entail it). The
evidence's boxes decide spatial entailment, as in RadFact.

- :class:`ExactJudge` (``judge="exact"``): entailed when the other side has a
  sentence with the same normalised text (case, spacing, end punctuation
  ignored); those sentences are the evidence.
- :class:`ReviewJudge` (``judge="review"``): the reader's verdicts. A model
  finding marked agree is entailed, with the reader's version of it as
  evidence; disagree is not entailed; unsure or no verdict is not judged (left
  out of the denominators, counted). Reference sentences the reader agreed
  with are entailed by the model finding they came from; sentences the reader
  added are findings the model missed.
- :class:`~cxr_widgets.evaluate.chat.ChatJudge`: an OpenAI-compatible chat
  endpoint decides (Azure OpenAI or a local model server).

A judge raises :class:`~cxr_widgets.errors.JudgeError` when it cannot judge a
study; the evaluation lists that study and goes on.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from ..errors import EvaluationError, JudgeError
from .model import Judgement, StudyPair, normalise_text

__all__ = ["ExactJudge", "Judge", "ReviewJudge", "resolve_judge"]


@runtime_checkable
class Judge(Protocol):
    """What every judge offers."""

    name: str

    def judge(self, pair: StudyPair) -> Judgement:
        """The judgement for one study (raise JudgeError when it cannot judge)."""
        ...

    def describe(self) -> dict[str, Any]:
        """Secret-free settings for the provenance of an evaluation."""
        ...


class ExactJudge:
    """Entailment by normalised text equality (see the module docstring)."""

    name = "exact"

    def judge(self, pair: StudyPair) -> Judgement:
        gen = [normalise_text(s.text) for s in pair.generated]
        ref = [normalise_text(s.text) for s in pair.reference]
        ref_at: dict[str, list[int]] = {}
        for j, text in enumerate(ref):
            ref_at.setdefault(text, []).append(j)
        gen_at: dict[str, list[int]] = {}
        for i, text in enumerate(gen):
            gen_at.setdefault(text, []).append(i)
        gen_evidence = tuple(tuple(ref_at.get(t, ())) for t in gen)
        ref_evidence = tuple(tuple(gen_at.get(t, ())) for t in ref)
        return Judgement(
            tuple(bool(e) for e in gen_evidence),
            gen_evidence,
            tuple(bool(e) for e in ref_evidence),
            ref_evidence,
        )

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "rule": "normalised text equality"}

    def __repr__(self) -> str:
        return "ExactJudge()"


class ReviewJudge:
    """Entailment from the reader's verdicts (see the module docstring)."""

    name = "review"

    def judge(self, pair: StudyPair) -> Judgement:
        if pair.verdicts is None:
            raise EvaluationError(
                'judge="review" needs references read from reviews (a ReviewStore or '
                'from_reviews(...)); with a reference file use judge="exact" or a chat judge'
            )
        n_reviewed = max(pair.verdicts, default=-1) + 1
        if n_reviewed > len(pair.generated):
            raise JudgeError(
                f"the reviews cover {n_reviewed} model findings but this report has "
                f"{len(pair.generated)}: the reviews belong to another run"
            )
        for i, text in (pair.model_texts or {}).items():
            if i < len(pair.generated) and normalise_text(pair.generated[i].text) != normalise_text(
                text
            ):
                raise JudgeError(
                    f"finding {i + 1} differs from the reviewed one: the reviews belong to "
                    'another run (judge it with judge="exact" or a chat judge)'
                )
        from_model: dict[int, list[int]] = {}
        for j, sentence in enumerate(pair.reference):
            if sentence.origin is not None:
                from_model.setdefault(sentence.origin, []).append(j)
        generated: list[bool | None] = []
        evidence: list[tuple[int, ...]] = []
        for i in range(len(pair.generated)):
            verdict = pair.verdicts.get(i)
            generated.append(None if verdict not in ("agree", "disagree") else verdict == "agree")
            evidence.append(tuple(from_model.get(i, ())) if verdict == "agree" else ())
        reference = tuple(s.origin is not None for s in pair.reference)
        ref_evidence = tuple((s.origin,) if s.origin is not None else () for s in pair.reference)
        return Judgement(tuple(generated), tuple(evidence), reference, ref_evidence)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "rule": "reader verdicts (agree = entailed)"}

    def __repr__(self) -> str:
        return "ReviewJudge()"


def resolve_judge(judge: Any) -> Judge:
    """A judge object from ``"exact"``, ``"review"`` or an object with ``judge()``."""
    if judge == "exact":
        return ExactJudge()
    if judge == "review":
        return ReviewJudge()
    if isinstance(judge, str):
        raise EvaluationError(
            f'unknown judge {judge!r}: use "exact", "review", or a judge object such as '
            "ChatJudge(...)"
        )
    if not callable(getattr(judge, "judge", None)):
        raise EvaluationError(
            f"{type(judge).__name__} is not a judge: it needs a judge(pair) -> Judgement method"
        )
    return judge
