"""Per-study metrics: RadFact-style logical, grounding and spatial precision/recall,
box agreement, and ROUGE-L.

RadFact (microsoft/RadFact ``src/radfact/metric/radfact.py``, the MAIRA-2
paper), for the generated side (precision) and, the same way, for the
reference side (recall):

- logical precision = entailed generated sentences / generated sentences;
- grounding precision = among entailed generated sentences with boxes, the
  fraction whose boxes are spatially entailed by their evidence's boxes;
- spatial precision = among all generated sentences with boxes, the fraction
  both logically and spatially entailed.

A fraction with a zero denominator is NaN for that study, and cohort values
are means over studies ignoring NaN, as RadFact aggregates.

Worked example (``tests/test_evaluate_metrics.py`` checks it): generated
``A`` (box ``(0, 0, .5, .5)``), ``B`` (no box), ``C`` (box); reference ``A``
(box ``(0, 0, .5, .4)``), ``D``. Entailed generated: ``A`` only, so logical
precision 1/3; reference: ``A`` entailed, ``D`` not, logical recall 1/2. ``A``'s
mask (112 x 112 pixels at 224) has 112 x 89 pixels inside the evidence's
(89 = int(0.4 x 224)), a pixel precision of 0.79, above 0.5, so
grounding precision 1/1 and spatial precision 1/2 (``A`` and ``C`` have boxes).
The reference ``A``'s mask lies wholly inside the generated ``A``'s: grounding
recall 1/1, spatial recall 1/1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .boxes import IOU_THRESHOLDS, match_boxes, spatially_entailed
from .model import Judgement, Sentence

#: The per-study columns, in order (besides study_id).
RADFACT_METRICS: tuple[str, ...] = (
    "logical_precision",
    "logical_recall",
    "grounding_precision",
    "grounding_recall",
    "spatial_precision",
    "spatial_recall",
)
BOX_METRICS: tuple[str, ...] = (
    "box_iou",
    *(f"box_{kind}@{t:g}" for t in IOU_THRESHOLDS for kind in ("precision", "recall")),
)
METRICS: tuple[str, ...] = (*RADFACT_METRICS, *BOX_METRICS, "rouge_l")


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan


def one_way(
    sentences: Sequence[Sentence],
    entailed: Sequence[bool | None],
    evidence: Sequence[Sequence[int]],
    other: Sequence[Sentence],
) -> dict[str, Any]:
    """RadFact's fractions for one direction (generated -> reference, or back).

    Sentences not judged (None) are left out of every count.
    """
    judged = entailed_n = boxed = entailed_boxed = spatial = 0
    flags: list[bool] = []
    for sentence, status, where in zip(sentences, entailed, evidence, strict=True):
        ok = False
        if status is not None:
            judged += 1
            entailed_n += bool(status)
            if sentence.boxes:
                boxed += 1
                if status:
                    entailed_boxed += 1
                    evidence_boxes = [b for j in where for b in other[j].boxes]
                    ok = spatially_entailed(sentence.boxes, evidence_boxes)
                    spatial += ok
        flags.append(ok)
    return {
        "logical": _ratio(entailed_n, judged),
        "grounding": _ratio(spatial, entailed_boxed),
        "spatial": _ratio(spatial, boxed),
        "judged": judged,
        "entailed": entailed_n,
        "grounded": boxed,
        "spatially_entailed": spatial,
        "flags": flags,
    }


def radfact(
    generated: Sequence[Sentence], reference: Sequence[Sentence], judgement: Judgement
) -> dict[str, Any]:
    """The six RadFact fractions of one study, with the counts behind them."""
    g = one_way(generated, judgement.generated, judgement.generated_evidence, reference)
    r = one_way(reference, judgement.reference, judgement.reference_evidence, generated)
    return {
        "logical_precision": g["logical"],
        "logical_recall": r["logical"],
        "grounding_precision": g["grounding"],
        "grounding_recall": r["grounding"],
        "spatial_precision": g["spatial"],
        "spatial_recall": r["spatial"],
        "n_generated": len(generated),
        "n_reference": len(reference),
        "n_generated_judged": g["judged"],
        "n_generated_entailed": g["entailed"],
        "n_reference_entailed": r["entailed"],
        "n_generated_grounded": g["grounded"],
        "n_reference_grounded": r["grounded"],
        "_generated_spatial": g["flags"],
        "_reference_spatial": r["flags"],
    }


def box_agreement(
    generated: Sequence[Sentence], reference: Sequence[Sentence]
) -> tuple[dict[str, float], list[float]]:
    """Box agreement of one study, and the IoUs of its matched pairs.

    All generated boxes of the study are matched one-to-one with all reference
    boxes (:func:`~cxr_widgets.evaluate.boxes.match_boxes`). ``box_iou`` is the
    mean IoU of the matched pairs (0 when no box overlaps); precision at a
    threshold t = matched pairs with IoU >= t / generated boxes; recall = the
    same / reference boxes. NaN where a side has no boxes.

    Worked example: generated boxes ``(0, 0, .5, .5)`` and ``(.6, .6, .9, .9)``;
    reference ``(0, 0, .5, .25)``. One pair, IoU 0.125/0.25 = 0.5: box_iou 0.5;
    at 0.5 precision 1/2, recall 1/1; at 0.75 precision 0, recall 0.
    """
    gen_boxes = [b for s in generated for b in s.boxes]
    ref_boxes = [b for s in reference for b in s.boxes]
    out: dict[str, float] = dict.fromkeys(BOX_METRICS, math.nan)
    if not gen_boxes or not ref_boxes:
        return out, []
    pairs = match_boxes(gen_boxes, ref_boxes)
    ious = [value for _, _, value in pairs]
    out["box_iou"] = sum(ious) / len(ious) if ious else 0.0
    for t in IOU_THRESHOLDS:
        hits = sum(value >= t for value in ious)
        out[f"box_precision@{t:g}"] = hits / len(gen_boxes)
        out[f"box_recall@{t:g}"] = hits / len(ref_boxes)
    return out, ious


# --- ROUGE-L ------------------------------------------------------------------------------


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists.

    Bit-parallel (Allison and Dix, 1986; Hyyrö, 2004): one big-integer step per
    token of ``b`` instead of a table of ``len(a) x len(b)`` cells; the tests
    check it against rouge-score's own table.
    """
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for i, token in enumerate(a):
        masks[token] = masks.get(token, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for token in b:
        u = v & masks.get(token, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - bin(v).count("1")


class RougeL:
    """ROUGE-L F-measure of report texts, with rouge-score's tokenizer (no stemming).

    The result equals ``rouge_score.rouge_scorer.RougeScorer(["rougeL"]).score(
    reference, generated).fmeasure``; only the LCS is computed faster.
    Worked example: reference "the heart is normal", generated "heart is
    enlarged": LCS "heart is" = 2, precision 2/3, recall 2/4, F = 4/7.
    """

    def __init__(self) -> None:
        from ..extras import require

        require("evaluate", "ROUGE-L")
        from rouge_score import tokenizers

        self._tokenizer = tokenizers.DefaultTokenizer(use_stemmer=False)
        self._tokens: dict[str, list[str]] = {}

    def tokens(self, text: str) -> list[str]:
        cached = self._tokens.get(text)
        if cached is None:
            cached = self._tokens[text] = self._tokenizer.tokenize(text)
        return cached

    def report_tokens(self, sentences: Sequence[Sentence]) -> list[str]:
        """Tokens of the sentences joined by spaces (tokenised sentence by sentence, cached:
        the tokenizer splits at every space, so the result is the same)."""
        return [t for s in sentences for t in self.tokens(s.text)]

    def __call__(self, reference: str, generated: str) -> float:
        return self.score(self.tokens(reference), self.tokens(generated))

    def score(self, ref: list[str], gen: list[str]) -> float:
        """ROUGE-L F-measure of two token lists."""
        if not ref or not gen:
            return 0.0
        lcs = lcs_length(ref, gen)
        precision, recall = lcs / len(gen), lcs / len(ref)
        if precision + recall == 0:
            return 0.0
        return 2 * precision * recall / (precision + recall)


def report_text(sentences: Sequence[Sentence]) -> str:
    """The sentences as one paragraph (as ``Report.text`` joins findings)."""
    return " ".join(s.text for s in sentences)
