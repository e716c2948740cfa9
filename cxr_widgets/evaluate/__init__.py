"""Evaluate generated reports against references: RadFact-style grounded metrics,
box agreement, ROUGE-L and reader agreement, with bootstrap intervals.

    from cxr_widgets.evaluate import evaluate
    result = evaluate(batch_result, "references.json")   # judge="exact"
    result.summary["logical_precision"]    # {"value", "ci_low", "ci_high", "n"}

Definitions and sources: docs/evaluation.md. Research use only.
"""

from __future__ import annotations

from .agreement import reader_agreement
from .api import compare, evaluate
from .chat import ChatJudge
from .inputs import References, from_reviews, load_generated, load_references
from .judges import ExactJudge, Judge, ReviewJudge
from .model import Judgement, Sentence, StudyPair, normalise_text
from .result import Comparison, Evaluation

__all__ = [
    "ChatJudge",
    "Comparison",
    "Evaluation",
    "ExactJudge",
    "Judge",
    "Judgement",
    "References",
    "ReviewJudge",
    "Sentence",
    "StudyPair",
    "compare",
    "evaluate",
    "from_reviews",
    "load_generated",
    "load_references",
    "normalise_text",
    "reader_agreement",
]
