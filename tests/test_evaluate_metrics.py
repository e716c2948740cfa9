"""Evaluation metrics: hand-computed cases, properties, and independent implementations.

IoU is checked against pycocotools (COCO's own C implementation), ROUGE-L
against rouge-score's scorer, spatial entailment against a full 224 x 224
mask drawn the way RadFact's ``get_mask_from_boxes`` draws it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cxr_widgets.evaluate.boxes import (
    MASK_SIZE,
    iou,
    iou_matrix,
    match_boxes,
    pixel_precision,
    spatially_entailed,
)
from cxr_widgets.evaluate.metrics import RougeL, box_agreement, lcs_length, radfact
from cxr_widgets.evaluate.model import Judgement, Sentence, normalise_text
from cxr_widgets.evaluate.stats import cohen_kappa, paired_difference, summarise


@st.composite
def boxes(draw: st.DrawFn, min_size: int = 0) -> tuple[float, float, float, float]:
    """A valid box on the 1/100 grid; with ``min_size`` at least 1/100 wide and high."""
    x0 = draw(st.integers(0, 100 - min_size))
    y0 = draw(st.integers(0, 100 - min_size))
    x1 = draw(st.integers(x0 + min_size, 100))
    y1 = draw(st.integers(y0 + min_size, 100))
    return (x0 / 100, y0 / 100, x1 / 100, y1 / 100)


# --- text ----------------------------------------------------------------------------------


def test_normalise_text_ignores_case_spacing_and_end_punctuation() -> None:
    assert normalise_text("  The heart  size\tis NORMAL. ") == "the heart size is normal"
    assert normalise_text("No pneumothorax!") == normalise_text("no pneumothorax")
    assert normalise_text("Effusion, left.") == "effusion, left"  # inner punctuation stays
    assert normalise_text("Left effusion") != normalise_text("Right effusion")


# --- IoU -----------------------------------------------------------------------------------


def test_iou_hand_computed() -> None:
    """(0,0,.5,.5) vs (.25,.25,.75,.75): intersection .0625, union .4375, IoU 1/7."""
    assert iou((0, 0, 0.5, 0.5), (0.25, 0.25, 0.75, 0.75)) == pytest.approx(1 / 7)
    # (0,0,.5,.5) vs (0,0,.5,.25): intersection .125 = the smaller box, union .25 -> 0.5
    assert iou((0, 0, 0.5, 0.5), (0, 0, 0.5, 0.25)) == pytest.approx(0.5)
    assert iou((0, 0, 0.5, 0.5), (0.5, 0, 1, 0.5)) == 0.0  # touching edges
    assert iou((0.2, 0.2, 0.2, 0.6), (0.2, 0.2, 0.2, 0.6)) == 0.0  # zero area


@settings(max_examples=200, deadline=None)
@given(boxes(), boxes())
def test_iou_is_symmetric_and_bounded(a: tuple, b: tuple) -> None:
    assert iou(a, b) == pytest.approx(iou(b, a))
    assert 0.0 <= iou(a, b) <= 1.0


@settings(max_examples=100, deadline=None)
@given(boxes(min_size=1))
def test_iou_of_a_box_with_itself_is_one(a: tuple) -> None:
    assert iou(a, a) == pytest.approx(1.0)


@settings(max_examples=100, deadline=None)
@given(boxes(min_size=1), boxes(min_size=1))
def test_iou_of_disjoint_boxes_is_zero(a: tuple, b: tuple) -> None:
    # move b wholly to the right of a (scaled into the space left over)
    shift = a[2]
    width = (1 - shift) * (b[2] - b[0])
    moved = (shift, b[1], shift + width, b[3])
    assert iou(a, moved) == 0.0


def test_iou_matrix_matches_pycocotools() -> None:
    mask_utils = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(7)
    corners = rng.random((40, 2, 2))
    a = np.concatenate([corners[:20].min(axis=1), corners[:20].max(axis=1)], axis=1)
    b = np.concatenate([corners[20:].min(axis=1), corners[20:].max(axis=1)], axis=1)

    def xywh(x: np.ndarray) -> np.ndarray:
        return np.column_stack([x[:, 0], x[:, 1], x[:, 2] - x[:, 0], x[:, 3] - x[:, 1]])

    expected = mask_utils.iou(xywh(a), xywh(b), [0] * len(b))
    ours = iou_matrix([tuple(r) for r in a], [tuple(r) for r in b])
    assert expected.shape == ours.shape == (20, 20)
    np.testing.assert_allclose(ours, expected, atol=1e-12)
    assert (ours > 0).sum() > 20  # the sample really has overlaps
    # the plain-Python pairs used by matching give the same values
    for i, j, value in match_boxes([tuple(r) for r in a], [tuple(r) for r in b]):
        assert value == pytest.approx(expected[i, j])


def test_matching_is_one_to_one_and_greedy_by_iou() -> None:
    """Generated g0 = (0,0,.4,.4), g1 = (0,0,.5,.5); reference r0 = (0,0,.5,.5).

    Both overlap r0: IoU(g0, r0) = .16/.25 = .64, IoU(g1, r0) = 1. One-to-one
    matching takes the highest pair (g1, r0) and leaves g0 unmatched.
    """
    pairs = match_boxes([(0, 0, 0.4, 0.4), (0, 0, 0.5, 0.5)], [(0, 0, 0.5, 0.5)])
    assert pairs == [(1, 0, 1.0)]
    assert match_boxes([], [(0, 0, 1, 1)]) == []


# --- spatial entailment --------------------------------------------------------------------


def _radfact_mask(boxes: list[tuple], size: int = MASK_SIZE) -> np.ndarray:
    """A mask exactly as RadFact's get_mask_from_boxes draws it (x on the first axis)."""
    mask = np.zeros((size, size), dtype=bool)
    for box in boxes:
        x1, y1, x2, y2 = (np.array(box) * size).astype(int)
        mask[x1:x2, y1:y2] = True
    return mask


def test_pixel_precision_hand_computed() -> None:
    """At size 10: (0,0,.4,.5) covers 4 x 5 = 20 pixels; evidence (.2,0,1,1) covers
    columns 2..9, so 2 x 5 = 10 of them: precision 0.5, which is not above 0.5."""
    assert pixel_precision([(0, 0, 0.4, 0.5)], [(0.2, 0, 1, 1)], size=10) == 0.5
    assert pixel_precision([(0, 0, 0.4, 0.5)], [(0.1, 0, 1, 1)], size=10) == 0.75
    assert math.isnan(pixel_precision([(0.5, 0.5, 0.5, 0.9)], [(0, 0, 1, 1)]))
    assert not spatially_entailed([(0, 0, 0.5, 0.5)], [(0.25, 0, 1, 1)])  # exactly 0.5
    assert spatially_entailed([(0, 0, 0.5, 0.5)], [(0.24, 0, 1, 1)])  # 0.52
    assert not spatially_entailed([(0, 0, 0.5, 0.5)], [])


@settings(max_examples=150, deadline=None)
@given(st.lists(boxes(), min_size=1, max_size=4), st.lists(boxes(), min_size=1, max_size=4))
def test_pixel_precision_equals_radfact_masks(mine: list, evidence: list) -> None:
    m, e = _radfact_mask(mine), _radfact_mask(evidence)
    expected = (m & e).sum() / m.sum() if m.sum() else math.nan
    got = pixel_precision(mine, evidence)
    if math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(expected)


# --- RadFact fractions --------------------------------------------------------------------


def test_radfact_worked_example() -> None:
    """Generated A (box (0,0,.5,.5)), B (no box), C (box); reference A (box (0,0,.5,.4)), D.

    Exact judge: generated A is entailed by reference A; B, C are not. Reference
    A is entailed by generated A, D is not.
    - logical precision 1/3 (A of A, B, C); logical recall 1/2 (A of A, D).
    - generated A's mask: 112 x 112 pixels, of which 112 x 89 (89 = int(.4 x 224))
      lie in the evidence mask: 0.79 > 0.5, spatially entailed. Grounding
      precision = 1 of 1 entailed grounded; spatial precision = 1 of 2 grounded (A, C).
    - reference A's mask lies inside generated A's: grounding recall 1/1, spatial
      recall 1/1 (D has no box).
    """
    gen = (
        Sentence("A", ((0, 0, 0.5, 0.5),)),
        Sentence("B"),
        Sentence("C", ((0.6, 0.6, 0.9, 0.9),)),
    )
    ref = (Sentence("A", ((0, 0, 0.5, 0.4),)), Sentence("D"))
    judgement = Judgement((True, False, False), ((0,), (), ()), (True, False), ((0,), ()))
    scores = radfact(gen, ref, judgement)
    assert scores["logical_precision"] == pytest.approx(1 / 3)
    assert scores["logical_recall"] == pytest.approx(1 / 2)
    assert scores["grounding_precision"] == 1.0
    assert scores["spatial_precision"] == 0.5
    assert scores["grounding_recall"] == 1.0
    assert scores["spatial_recall"] == 1.0


def test_radfact_not_judged_sentences_leave_the_denominators() -> None:
    """Three generated: agree (entailed), disagree (not), unsure (None): precision 1/2."""
    gen = (Sentence("a"), Sentence("b"), Sentence("c"))
    judgement = Judgement((True, False, None), ((), (), ()), (), ())
    scores = radfact(gen, (), judgement)
    assert scores["logical_precision"] == 0.5
    assert math.isnan(scores["logical_recall"])  # no reference sentences
    assert math.isnan(scores["spatial_precision"])  # no boxes


def test_box_agreement_worked_example() -> None:
    """Generated (0,0,.5,.5), (.6,.6,.9,.9); reference (0,0,.5,.25): one pair, IoU 0.5.

    box_iou 0.5; at 0.5: precision 1/2, recall 1/1; at 0.75: 0 and 0."""
    gen = (Sentence("x", ((0, 0, 0.5, 0.5), (0.6, 0.6, 0.9, 0.9))),)
    ref = (Sentence("y", ((0, 0, 0.5, 0.25),)),)
    scores, ious = box_agreement(gen, ref)
    assert ious == [pytest.approx(0.5)]
    assert scores["box_iou"] == pytest.approx(0.5)
    assert scores["box_precision@0.5"] == 0.5 and scores["box_recall@0.5"] == 1.0
    assert scores["box_precision@0.75"] == 0.0 and scores["box_recall@0.75"] == 0.0
    empty, _ = box_agreement((Sentence("x"),), ref)
    assert math.isnan(empty["box_iou"])


# --- ROUGE-L -------------------------------------------------------------------------------


def test_rouge_l_hand_computed() -> None:
    """ "the heart is normal" vs "heart is enlarged": LCS 2, P 2/3, R 2/4, F 4/7."""
    assert RougeL()("the heart is normal", "heart is enlarged") == pytest.approx(4 / 7)
    assert RougeL()("", "anything") == 0.0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from("abcde"), max_size=30),
    st.lists(st.sampled_from("abcde"), max_size=30),
)
def test_lcs_equals_rouge_scores_table(a: list, b: list) -> None:
    from rouge_score.rouge_scorer import _lcs_table

    expected = _lcs_table(a, b)[-1][-1] if a and b else 0
    assert lcs_length(a, b) == expected


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.sampled_from(["The", "heart", "is", "normal.", "no", "effusion,", "left"]), max_size=25
    ),
    st.lists(st.sampled_from(["the", "Heart", "is", "enlarged", "effusion", "left."]), max_size=25),
)
def test_rouge_l_equals_rouge_score(ref: list, gen: list) -> None:
    from rouge_score.rouge_scorer import RougeScorer

    reference, generated = " ".join(ref), " ".join(gen)
    expected = RougeScorer(["rougeL"]).score(reference, generated)["rougeL"].fmeasure
    assert RougeL()(reference, generated) == pytest.approx(expected)


# --- statistics ----------------------------------------------------------------------------


def test_cohen_kappa_hand_computed() -> None:
    """A = agree, agree, disagree, agree; B = agree, disagree, disagree, agree.

    p_o = 3/4; p_e = P(both agree) + P(both disagree) = (3/4)(2/4) + (1/4)(2/4) = 1/2;
    kappa = (3/4 - 1/2) / (1 - 1/2) = 0.5."""
    result = cohen_kappa(
        ["agree", "agree", "disagree", "agree"], ["agree", "disagree", "disagree", "agree"]
    )
    assert result == {"n": 4, "raw_agreement": 0.75, "kappa": pytest.approx(0.5)}
    assert cohen_kappa(["agree", "unsure"], ["agree", "unsure"])["kappa"] == 1.0
    assert cohen_kappa(["agree", "agree"], ["agree", "agree"])["kappa"] is None


def test_summary_means_ignore_nan_and_bootstrap_is_seeded() -> None:
    values = np.array([[1.0, np.nan], [0.0, 0.5], [0.5, 1.0], [1.0, np.nan]])
    names = ["logical_precision", "logical_recall"]
    first = summarise(values, names, bootstrap=500, seed=3)
    assert first["logical_precision"]["value"] == pytest.approx(2.5 / 4)
    assert first["logical_precision"]["n"] == 4
    assert first["logical_recall"]["value"] == pytest.approx(0.75)
    assert first["logical_recall"]["n"] == 2
    # F1 from the cohort precision and recall: 2 * .625 * .75 / 1.375
    assert first["logical_f1"]["value"] == pytest.approx(2 * 0.625 * 0.75 / 1.375)
    entry = first["logical_precision"]
    assert 0.0 <= entry["ci_low"] <= entry["value"] <= entry["ci_high"] <= 1.0
    assert entry["ci_low"] < entry["ci_high"]
    assert summarise(values, names, bootstrap=500, seed=3) == first
    assert summarise(values, names, bootstrap=500, seed=4) != first
    none = summarise(values, names, bootstrap=0, seed=0)["logical_precision"]
    assert none["ci_low"] is None and none["value"] == pytest.approx(0.625)


def test_bootstrap_interval_matches_a_plain_resampling_loop() -> None:
    """The count-matrix bootstrap equals drawing indices and taking nanmeans one by one."""
    rng = np.random.default_rng(0)
    values = rng.random((50, 1))
    values[::7] = np.nan
    got = summarise(values, ["box_iou"], bootstrap=300, seed=11)["box_iou"]
    draws = np.random.default_rng(11)
    means = []
    for _ in range(3):  # the same generator stream: blocks of up to 100 resamples
        block = draws.integers(0, 50, size=(100, 50))
        means.extend(np.nanmean(values[row, 0]) for row in block)
    low, high = np.quantile(means, [0.025, 0.975])
    assert got["ci_low"] == pytest.approx(low) and got["ci_high"] == pytest.approx(high)


def test_paired_difference() -> None:
    rng = np.random.default_rng(1)
    a = rng.random((40, 2))
    same = paired_difference(a, a, ["box_iou", "rouge_l"], bootstrap=200, seed=0)
    assert same["box_iou"]["difference"] == 0.0
    assert same["box_iou"]["ci_low"] == 0.0 and same["box_iou"]["ci_high"] == 0.0
    shifted = paired_difference(a, a - 0.1, ["box_iou", "rouge_l"], bootstrap=200, seed=0)
    assert shifted["rouge_l"]["difference"] == pytest.approx(0.1)
    # a constant per-study difference has no spread: the paired interval is the point
    assert shifted["rouge_l"]["ci_low"] == pytest.approx(0.1)
    assert shifted["rouge_l"]["ci_high"] == pytest.approx(0.1)
    b = a.copy()
    b[0, 0] = np.nan  # only studies both runs define count
    partial = paired_difference(a, b, ["box_iou", "rouge_l"], bootstrap=0, seed=0)
    assert partial["box_iou"]["n"] == 39
    assert partial["box_iou"]["a"] == pytest.approx(a[1:, 0].mean())


def test_without_rouge_score_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from cxr_widgets.errors import MissingDependencyError

    real = importlib.util.find_spec

    def find_spec(name: str, *args: object, **kwargs: object) -> object:
        return None if name.split(".")[0] == "rouge_score" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(MissingDependencyError, match=r"pip install 'cxr-widgets\[evaluate\]'"):
        RougeL()
