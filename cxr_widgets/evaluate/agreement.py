"""Reader agreement: Cohen's kappa and raw agreement of two readers' verdicts."""

from __future__ import annotations

from typing import Any

from ..errors import EvaluationError
from .stats import cohen_kappa

__all__ = ["reader_agreement"]


def reader_agreement(
    reviews: Any, first: str | None = None, second: str | None = None
) -> dict[str, Any]:
    """Agreement of two readers on the model findings both gave a verdict for.

    ``reviews``: a ``ReviewStore`` or its ``to_dataframe()``. With exactly two
    reviewers they need not be named. Returns ``{"reviewers", "n",
    "raw_agreement", "kappa", "table"}``; ``table`` is the confusion table
    (first reader's verdicts in rows) as a DataFrame.
    """
    from ..extras import require

    require("pandas", "reader_agreement()")
    import pandas as pd

    frame = reviews.to_dataframe() if hasattr(reviews, "to_dataframe") else reviews
    model = frame[(frame["source"] == "model") & frame["verdict"].notna()]
    reviewers = sorted({str(r) for r in model["reviewer"].dropna().unique()})
    if first is None and second is None:
        if len(reviewers) != 2:
            raise EvaluationError(
                f"reader agreement needs two reviewers; the reviews hold {len(reviewers)} "
                f"({', '.join(reviewers) or 'none'}): name them, reader_agreement(reviews, a, b)"
            )
        first, second = reviewers
    for name in (first, second):
        if name not in reviewers:
            raise EvaluationError(
                f"no verdicts by {name!r}; reviewers: {', '.join(reviewers) or 'none'}"
            )
    keys = ["study_id", "finding_index"]
    a = model[model["reviewer"] == first][[*keys, "verdict"]].drop_duplicates(keys, keep="last")
    b = model[model["reviewer"] == second][[*keys, "verdict"]].drop_duplicates(keys, keep="last")
    both = a.merge(b, on=keys, suffixes=("_a", "_b"))
    result = cohen_kappa(list(both["verdict_a"]), list(both["verdict_b"]))
    table = pd.crosstab(both["verdict_a"].rename(str(first)), both["verdict_b"].rename(str(second)))
    return {"reviewers": [first, second], **result, "table": table}
