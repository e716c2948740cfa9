"""The evaluation's small data types: sentences, study pairs, judgements, problems."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# Owned by the review module; re-exported for the evaluation modules.
from ..review import VERDICTS as VERDICTS
from ..review import normalise_text as normalise_text

BoxTuple = tuple[float, float, float, float]


@dataclass(frozen=True)
class Sentence:
    """One finding: its text and boxes (0..1, ``x_min, y_min, x_max, y_max``).

    ``origin`` (references built from reviews only) is the index of the model
    finding the reader agreed with; None for a finding the reader added.
    """

    text: str
    boxes: tuple[BoxTuple, ...] = ()
    origin: int | None = None

    @property
    def grounded(self) -> bool:
        return bool(self.boxes)


@dataclass(frozen=True)
class StudyPair:
    """What a judge sees for one study: generated and reference sentences.

    ``verdicts`` (reviews only) maps a model finding's index to the reader's
    verdict; ``model_texts`` (reviews only) the model's text of the findings the
    reader did not edit, to check that the reviews are of this run.
    """

    study_id: str
    generated: tuple[Sentence, ...]
    reference: tuple[Sentence, ...]
    verdicts: Mapping[int, str] | None = None
    model_texts: Mapping[int, str] | None = None


@dataclass(frozen=True)
class Judgement:
    """A judge's answer for one study.

    For each generated sentence: entailed by the reference (True/False, or
    None when it is not judged, e.g. a finding the reader marked unsure) and
    the indices of the reference sentences that are its evidence; the same for
    each reference sentence against the generated report.
    """

    generated: tuple[bool | None, ...]
    generated_evidence: tuple[tuple[int, ...], ...]
    reference: tuple[bool | None, ...]
    reference_evidence: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class Problem:
    """Something wrong with one study's input; the study is listed, never silently dropped.

    ``side`` is "generated", "references" or "judge"; ``finding`` is 1-based
    (None for the whole study); ``excluded`` says whether the study was left
    out of the metrics because of it.
    """

    study_id: str
    side: str
    reason: str
    finding: int | None = None
    excluded: bool = True


@dataclass
class Side:
    """One side of an evaluation, keyed by study id, with its problems and provenance."""

    studies: dict[str, tuple[Sentence, ...]]
    problems: list[Problem] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)
    #: reviews only: study id -> {model finding index: verdict}
    verdicts: dict[str, dict[int, str]] | None = None
    #: reviews only: the DataFrame of every reviewer's verdicts, for reader agreement
    reviews_frame: object | None = None
    #: reviews only: study id -> {model finding index: the model's text, not edited}
    model_texts: dict[str, dict[int, str]] | None = None

    @property
    def excluded(self) -> set[str]:
        return {p.study_id for p in self.problems if p.excluded}
