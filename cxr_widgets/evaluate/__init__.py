"""Evaluate generated reports against references: RadFact-style grounded metrics,
box agreement, ROUGE-L and reader agreement, with bootstrap intervals.

    from cxr_widgets.evaluate import evaluate
    result = evaluate(batch_result, "references.json")   # judge="exact"
    result.summary["logical_precision"]    # {"value", "ci_low", "ci_high", "n"}

Definitions and sources: docs/evaluation.md. Research use only. Names load on
first use, so ``cxr-widgets --help`` does not import numpy or pandas.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY: dict[str, str] = {
    "ChatJudge": "chat",
    "Comparison": "result",
    "Evaluation": "result",
    "ExactJudge": "judges",
    "Judge": "judges",
    "Judgement": "model",
    "References": "inputs",
    "ReviewJudge": "judges",
    "Sentence": "model",
    "StudyPair": "model",
    "compare": "api",
    "evaluate": "api",
    "from_reviews": "inputs",
    "load_generated": "inputs",
    "load_references": "inputs",
    "normalise_text": "model",
    "reader_agreement": "agreement",
}

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


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'cxr_widgets.evaluate' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module_name}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:
    from .agreement import reader_agreement
    from .api import compare, evaluate
    from .chat import ChatJudge
    from .inputs import References, from_reviews, load_generated, load_references
    from .judges import ExactJudge, Judge, ReviewJudge
    from .model import Judgement, Sentence, StudyPair, normalise_text
    from .result import Comparison, Evaluation
