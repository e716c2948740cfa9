"""evaluate(): inputs, references, judges, summaries, comparisons, reviews and bad input.

The generated reports come from a real demo run (``run_batch`` with
``DemoBackend`` into a results store). Reviews are made with the agreed
ReviewStore API: the in-test object of ``tests/evaluate_reviews.py`` (the study
browser's ReviewStore is built on another branch at the same time), and the
real ``cxr_widgets.review.ReviewStore`` as well once it is importable.
"""

from __future__ import annotations

import io
import json
import math
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from evaluate_reviews import InTestReviews
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cxr_widgets import DemoBackend, Study, run_batch
from cxr_widgets.errors import EvaluationError, JudgeError
from cxr_widgets.evaluate import (
    Evaluation,
    ExactJudge,
    compare,
    evaluate,
    from_reviews,
    normalise_text,
    reader_agreement,
)
from cxr_widgets.report import Box, Finding, Report
from cxr_widgets.store import ResultStore

RADFACT = (
    "logical_precision",
    "logical_recall",
    "grounding_precision",
    "grounding_recall",
    "spatial_precision",
    "spatial_recall",
)


def png_bytes(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(64, 72), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """A real demo run of 12 studies, stored in a results store."""
    folder = tmp_path_factory.mktemp("demo-run")
    store = folder / "results.sqlite"
    studies = [Study(png_bytes(i), study_id=f"d{i:02d}") for i in range(12)]
    result = run_batch(studies, DemoBackend(), store=store, progress=False)
    assert result.ok == 12
    return result, store


def as_references(reports: list[Report]) -> list[dict[str, Any]]:
    return [
        {
            "study_id": r.study_id,
            "findings": [
                {"text": f.text, "boxes": [b.as_list() for b in f.boxes]} for f in r.findings
            ],
        }
        for r in reports
    ]


def quiet_evaluate(*args: Any, **kwargs: Any) -> Evaluation:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return evaluate(*args, **kwargs)


# --- inputs --------------------------------------------------------------------------------


def test_a_run_against_itself_scores_one_from_every_kind_of_input(
    demo_run: tuple[Any, Path], tmp_path: Path
) -> None:
    result, store_path = demo_run
    reports = [r for r in result.reports if r is not None]
    refs = as_references(reports)
    jsonl = tmp_path / "run.jsonl"
    result.export_jsonl(jsonl)
    summaries = []
    with ResultStore(store_path) as store:
        for generated in (result, store_path, str(store_path), store, jsonl, reports):
            evaluation = evaluate(generated, refs, bootstrap=50)
            assert evaluation.counts["evaluated"] == 12
            summaries.append({k: v["value"] for k, v in evaluation.summary.items()})
    assert all(s == summaries[0] for s in summaries)
    first = summaries[0]
    for name in (*RADFACT, "box_iou", "box_precision@0.75", "box_recall@0.75", "rouge_l"):
        assert first[name] == pytest.approx(1.0), name
    assert evaluation.missing == {"generated_only": [], "reference_only": []}
    assert evaluation.problems == []


def test_hand_computed_cohort() -> None:
    """Three studies; per-study values worked out by hand, cohort = mean over defined studies.

    s1: generated "Heart normal." / "Left effusion." (box (0,.5,.5,1)); reference
        "heart normal" / "Left effusion" (box (0,.5,.5,.9)) / "Cardiomegaly".
        Logical precision 2/2, recall 2/3. The generated box's mask has 112 x 100
        of its 112 x 112 pixels in the reference box's (y from 112 to int(.9 x 224)
        = 201 vs 224): 0.89 > 0.5, so grounding and spatial precision 1/1; the
        reference box lies inside the generated one: grounding/spatial recall 1/1.
        Boxes: IoU = (.5 x .4) / (.5 x .5) = 0.8.
    s2: generated "No pneumothorax." ; reference "Small pneumothorax." (box).
        Precision 0/1, recall 0/1; spatial recall 0/1 (grounded, not entailed);
        grounding recall undefined (no entailed grounded reference sentence);
        no generated boxes: box metrics undefined.
    s3: generated (nothing); reference (nothing): every fraction undefined;
        ROUGE-L of two empty texts is 0.
    Cohort: logical precision (1 + 0) / 2 = 0.5; recall (2/3 + 0) / 2 = 1/3;
    spatial recall (1 + 0) / 2 = 0.5 (n = 2); grounding recall 1 (n = 1);
    box_iou 0.8 (n = 1).
    """
    generated = [
        Report(
            findings=[Finding("Heart normal."), Finding("Left effusion.", [Box(0, 0.5, 0.5, 1)])],
            study_id="s1",
        ),
        Report(findings=[Finding("No pneumothorax.")], study_id="s2"),
        Report(findings=[], study_id="s3"),
    ]
    references = [
        {
            "study_id": "s1",
            "findings": [
                {"text": "heart normal", "boxes": []},
                {"text": "Left effusion", "boxes": [[0, 0.5, 0.5, 0.9]]},
                {"text": "Cardiomegaly"},
            ],
        },
        {
            "study_id": "s2",
            "findings": [{"text": "Small pneumothorax.", "boxes": [[0.6, 0, 1, 0.3]]}],
        },
        {"study_id": "s3", "findings": []},
    ]
    evaluation = evaluate(generated, references, bootstrap=200)
    s = evaluation.summary
    assert (
        s["logical_precision"]["value"] == pytest.approx(0.5) and s["logical_precision"]["n"] == 2
    )
    assert s["logical_recall"]["value"] == pytest.approx(1 / 3)
    assert s["spatial_recall"]["value"] == pytest.approx(0.5) and s["spatial_recall"]["n"] == 2
    assert s["grounding_recall"]["value"] == 1.0 and s["grounding_recall"]["n"] == 1
    assert s["grounding_precision"]["value"] == 1.0 and s["spatial_precision"]["value"] == 1.0
    assert s["box_iou"]["value"] == pytest.approx(0.8) and s["box_iou"]["n"] == 1
    assert s["rouge_l"]["n"] == 3
    per_study = evaluation.per_study.set_index("study_id")
    assert per_study.loc["s1", "logical_recall"] == pytest.approx(2 / 3)
    assert math.isnan(per_study.loc["s3", "logical_precision"])
    assert evaluation.counts["empty_generated"] == 1 and evaluation.counts["empty_reference"] == 1
    assert evaluation.disagreements == ["s1", "s2"]
    table = evaluation.per_finding.set_index("finding")
    assert table.loc["cardiomegaly", "reference"] == 1 and table.loc["cardiomegaly", "recall"] == 0
    assert table.loc["heart normal", "precision"] == 1.0
    for name in ("logical_precision", "logical_recall", "spatial_recall"):
        assert s[name]["ci_low"] <= s[name]["value"] <= s[name]["ci_high"]


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.randoms(use_true_random=False))
def test_metrics_do_not_depend_on_the_order_of_studies(demo_run: tuple, rnd: random.Random) -> None:
    result, _ = demo_run
    reports = [r for r in result.reports if r is not None]
    refs = as_references(reports)
    # perturb the references so the metrics are not all 1
    for k, ref in enumerate(refs):
        if k % 3 == 0:
            ref["findings"] = ref["findings"][1:]
        if k % 4 == 1 and ref["findings"] and ref["findings"][-1]["boxes"]:
            ref["findings"][-1]["boxes"] = [[0.0, 0.0, 0.1, 0.1]]
    base = evaluate(reports, refs, bootstrap=100, seed=5)
    shuffled_reports, shuffled_refs = reports[:], refs[:]
    rnd.shuffle(shuffled_reports)
    rnd.shuffle(shuffled_refs)
    again = evaluate(shuffled_reports, shuffled_refs, bootstrap=100, seed=5)
    assert again.summary == base.summary
    assert again.per_study.equals(base.per_study)


def test_studies_on_one_side_are_listed_counted_and_warned(demo_run: tuple) -> None:
    result, _ = demo_run
    reports = [r for r in result.reports if r is not None]
    refs = [*as_references(reports[2:]), {"study_id": "elsewhere", "findings": []}]
    with pytest.warns(UserWarning, match="2 studies only generated and 1 only in the references"):
        evaluation = evaluate(reports, refs, bootstrap=0)
    assert evaluation.missing == {"generated_only": ["d00", "d01"], "reference_only": ["elsewhere"]}
    assert evaluation.counts["evaluated"] == 10
    assert evaluation.counts["generated_only"] == 2 and evaluation.counts["reference_only"] == 1


# --- bad input -----------------------------------------------------------------------------

GOOD = {"study_id": "s1", "findings": [{"text": "Heart normal.", "boxes": []}]}


def _one_report() -> list[Report]:
    return [
        Report(findings=[Finding("Heart normal.")], study_id="s1"),
        Report(findings=[Finding("Heart normal.")], study_id="s2"),
    ]


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (
            {"study_id": "s2", "findings": [{"text": "x", "boxes": [[0.1, 0.2, 1.3, 0.4]]}]},
            "outside 0..1",
        ),
        (
            {"study_id": "s2", "findings": [{"text": "x", "boxes": [[0.5, 0.2, 0.1, 0.4]]}]},
            "min > max",
        ),
        ({"study_id": "s2", "findings": [{"text": "x", "boxes": [[0.1, 0.2]]}]}, "4 numbers"),
        ({"study_id": "s2", "findings": [{"text": "  ", "boxes": []}]}, "no text"),
        ({"study_id": "s2", "findings": "Heart normal."}, "findings must be a list"),
        (
            {"study_id": "s2", "findings": [{"text": "x", "boxes": [["a", 0, 1, 1]]}]},
            "must be numbers",
        ),
    ],
)
def test_a_bad_reference_study_is_listed_and_excluded(bad: dict, reason: str) -> None:
    with pytest.warns(UserWarning, match="1 problems"):
        evaluation = evaluate(_one_report(), [GOOD, bad], bootstrap=0)
    assert evaluation.counts["evaluated"] == 1
    assert evaluation.counts["excluded_references"] == 1
    (problem,) = evaluation.problems
    assert problem.study_id == "s2" and problem.side == "references" and reason in problem.reason
    assert problem.excluded
    assert "s2" not in evaluation.missing["generated_only"]  # excluded, not "missing"
    assert list(evaluation.problems_frame["study_id"]) == ["s2"]


def test_duplicate_and_missing_study_ids_are_problems() -> None:
    refs = [GOOD, GOOD, {"study_id": "", "findings": []}, {"study_id": "s2", "findings": []}]
    generated = [*_one_report(), Report(findings=[], study_id="s2")]
    with pytest.warns(UserWarning):
        evaluation = evaluate(generated, refs, bootstrap=0)
    reasons = {(p.side, p.study_id): p.reason for p in evaluation.problems}
    assert "appears 2 times" in reasons[("references", "s1")]
    assert "appears 2 times" in reasons[("generated", "s2")]
    assert "without a study_id" in reasons[("references", "")]
    assert evaluation.counts["evaluated"] == 0
    assert all(v["value"] is None for v in evaluation.summary.values())


def test_generated_reports_with_bad_boxes_are_problems() -> None:
    broken = Report(findings=[Finding("x", [Box(0.6, 0.1, 0.2, 0.3)])], study_id="s2")
    with pytest.warns(UserWarning):
        evaluation = evaluate([_one_report()[0], broken], [GOOD, {**GOOD, "study_id": "s2"}])
    (problem,) = evaluation.problems
    assert problem.side == "generated" and problem.finding == 1 and "min > max" in problem.reason


class NonsenseJudge:
    name = "nonsense"

    def judge(self, pair: Any) -> Any:
        if pair.study_id == "s1":
            raise JudgeError("the judge timed out")
        return ExactJudge().judge(pair).__class__((True,) * 7, ((),) * 7, (), ())

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}


def test_a_judge_that_fails_or_answers_nonsense_is_counted() -> None:
    with pytest.warns(UserWarning, match="judge"):
        evaluation = evaluate(
            _one_report(), [GOOD, {**GOOD, "study_id": "s2"}], judge=NonsenseJudge()
        )
    assert evaluation.counts["judge_failed"] == 2 and evaluation.counts["evaluated"] == 0
    reasons = sorted(p.reason for p in evaluation.problems)
    assert reasons == [
        "the judge timed out",
        "the judge's answer does not have one verdict per sentence",
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"judge": "gpt"}, "unknown judge 'gpt'"),
        ({"judge": object()}, "is not a judge"),
        ({"judge": "review"}, 'judge="review" needs references read from reviews'),
        ({"bootstrap": -1}, "bootstrap must be a whole number"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(EvaluationError, match=message.replace("(", r"\(")):
        evaluate(_one_report(), [GOOD], **kwargs)


def test_bad_inputs_name_what_to_give(tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match="give a BatchResult"):
        evaluate(42, [GOOD])
    with pytest.raises(EvaluationError, match="no generated reports at"):
        evaluate(tmp_path / "nothing.sqlite", [GOOD])
    with pytest.raises(EvaluationError, match="cannot read references from int"):
        evaluate(_one_report(), 3)
    with pytest.raises(EvaluationError, match="no reference file"):
        evaluate(_one_report(), tmp_path / "missing.json")
    (tmp_path / "refs.txt").write_text("x")
    with pytest.raises(EvaluationError, match=r"\.json \(reference-set schema\) or \.csv"):
        evaluate(_one_report(), tmp_path / "refs.txt")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(EvaluationError, match=r"bad\.json is not JSON"):
        evaluate(_one_report(), tmp_path / "bad.json")
    (tmp_path / "nocol.csv").write_text("id,sentence\ns1,x\n")
    with pytest.raises(EvaluationError, match="lacks the column"):
        evaluate(_one_report(), tmp_path / "nocol.csv")
    with pytest.raises(EvaluationError, match="reference 1 is not a study"):
        evaluate(_one_report(), [{"findings": []}])


# --- reference files -----------------------------------------------------------------------


def test_reference_files_json_layouts_and_csv(demo_run: tuple, tmp_path: Path) -> None:
    result, _ = demo_run
    reports = [r for r in result.reports if r is not None]
    refs = as_references(reports)
    (tmp_path / "list.json").write_text(json.dumps(refs))
    (tmp_path / "wrapped.json").write_text(json.dumps({"studies": refs}))
    radfact_map = {
        r["study_id"]: [
            {
                "text": f["text"],
                "boxes": [
                    dict(zip(("x_min", "y_min", "x_max", "y_max"), b, strict=True))
                    for b in f["boxes"]
                ]
                or None,
            }
            for f in r["findings"]
        ]
        for r in refs
    }
    (tmp_path / "radfact.json").write_text(json.dumps(radfact_map))
    radfact_export = [
        {"example_id": k, "prediction": [], "target": v} for k, v in radfact_map.items()
    ]
    (tmp_path / "radfact-export.json").write_text(json.dumps(radfact_export))
    result.export_csv(tmp_path / "report.csv")  # the package's own CSV, one row per box
    values = []
    for name in ("list.json", "wrapped.json", "radfact.json", "radfact-export.json", "report.csv"):
        evaluation = evaluate(result, tmp_path / name, bootstrap=0)
        assert evaluation.counts["evaluated"] == 12, name
        assert evaluation.provenance["references"]["sha256"]
        values.append({k: v["value"] for k, v in evaluation.summary.items()})
        assert values[-1]["spatial_precision"] == 1.0 and values[-1]["box_iou"] == 1.0
    assert all(v == values[0] for v in values)


def test_browser_csv_export_layout(tmp_path: Path) -> None:
    """The study browser's CSV: finding_index, reviewer, in_reference; a finding's boxes
    on several rows; left-out findings are skipped."""
    (tmp_path / "reviews.csv").write_text(
        "study_id,reviewer,finding_index,source,verdict,in_reference,text,box,x_min,y_min,x_max,y_max\n"
        "s1,ana,0,model,agree,True,Heart normal.,,,,,\n"
        "s1,ana,1,model,disagree,False,Left effusion.,1,0.1,0.1,0.2,0.2\n"
        "s1,ana,2,added,,True,Two boxes.,1,0.1,0.1,0.2,0.2\n"
        "s1,ana,2,added,,True,Two boxes.,2,0.5,0.5,0.6,0.6\n"
    )
    evaluation = evaluate(_one_report()[:1], tmp_path / "reviews.csv", bootstrap=0)
    row = evaluation.per_study.iloc[0]
    assert row["n_reference"] == 2 and row["n_reference_boxes"] == 2
    assert row["logical_recall"] == 0.5


# --- outputs -------------------------------------------------------------------------------


def test_json_summary_has_provenance_and_no_report_text(demo_run: tuple, tmp_path: Path) -> None:
    result, store_path = demo_run
    refs = as_references([r for r in result.reports if r is not None][:6])
    with pytest.warns(UserWarning):
        evaluation = evaluate(store_path, refs, bootstrap=20)
    path = tmp_path / "summary.json"
    text = evaluation.to_json(path)
    data = json.loads(path.read_text())
    assert data == json.loads(text)
    assert set(data) == {"summary", "counts", "missing", "problems", "provenance"}
    assert data["provenance"]["generated"]["kind"] == "ResultStore"
    assert data["provenance"]["generated"]["demo"] == 12
    assert data["provenance"]["references"]["kind"] == "list"
    assert data["provenance"]["judge"]["name"] == "exact"
    assert data["summary"]["logical_precision"]["n"] == 6
    assert len(data["missing"]["generated_only"]) == 6
    for report in result.reports:
        for finding in report.findings:
            assert finding.text not in text and normalise_text(finding.text) not in text


def test_plots_are_real_figures(demo_run: tuple, tmp_path: Path) -> None:
    result, _ = demo_run
    refs = as_references([r for r in result.reports if r is not None])
    for ref in refs[::2]:
        ref["findings"] = ref["findings"][:-1]
    evaluation = evaluate(result, refs, bootstrap=50)
    fig = evaluation.plot()
    assert len(fig.axes) == 3
    fig.savefig(tmp_path / "evaluation.png")
    with Image.open(tmp_path / "evaluation.png") as image:
        assert min(image.size) >= 300
        assert len(np.unique(np.asarray(image.convert("L")))) > 16
    comparison = compare(evaluation, evaluate(result, as_references(result.reports), bootstrap=0))
    comparison.plot().savefig(tmp_path / "comparison.png")
    assert (tmp_path / "comparison.png").stat().st_size > 5000


# --- comparison ----------------------------------------------------------------------------


def test_paired_comparison_of_two_runs(demo_run: tuple) -> None:
    """Run b drops the last finding of every report: its logical recall per study is
    (n - 1) / n, precision stays 1; the difference a - b is the mean of 1/n."""
    result, _ = demo_run
    reports = [r for r in result.reports if r is not None]
    refs = as_references(reports)
    shorter = [Report(findings=r.findings[:-1], study_id=r.study_id) for r in reports]
    expected = float(np.mean([1 / len(r.findings) for r in reports]))
    comparison = compare(result, shorter, refs, bootstrap=300, seed=1, labels=("full", "short"))
    recall = comparison.summary["logical_recall"]
    assert recall["a"] == 1.0 and recall["difference"] == pytest.approx(expected)
    assert recall["ci_low"] <= recall["difference"] <= recall["ci_high"]
    assert recall["ci_low"] > 0  # every study lost a finding
    assert comparison.summary["logical_precision"]["difference"] == 0.0
    assert recall["n"] == 12 and comparison.studies == sorted(r.study_id for r in reports)
    again = compare(result, shorter, refs, bootstrap=300, seed=1, labels=("full", "short"))
    assert again.summary == comparison.summary
    data = json.loads(comparison.to_json())
    assert set(data["provenance"]) == {"full", "short"}
    assert comparison.table().set_index("metric").loc["logical_recall", "n"] == 12


# --- reviews -------------------------------------------------------------------------------


def _real_review_store(store_path: Path) -> Any:
    store = ResultStore(store_path)
    if not hasattr(store, "reviews"):
        pytest.skip("cxr_widgets.review (the study browser's ReviewStore) is not on this branch")
    return store.reviews


@pytest.fixture(params=["in-test", "ReviewStore"])
def reviews(request: pytest.FixtureRequest, demo_run: tuple, tmp_path: Path) -> Any:
    result, store_path = demo_run
    if request.param == "in-test":
        return InTestReviews([r for r in result.reports if r is not None])
    copy = tmp_path / "reviewed.sqlite"
    copy.write_bytes(store_path.read_bytes())
    return _real_review_store(copy)


PATTERN = ["agree", "disagree", "agree", "unsure", None]


def review_demo_run(reviews: Any, reports: list[Report], reviewer: str = "ana") -> dict[str, dict]:
    """Review 9 of the 12 studies with a fixed pattern; return what was done, by study.

    Finding i of study k gets PATTERN[(i + k) % 5]; studies with k % 3 == 0 get an
    added finding; in studies with k % 4 == 0 the reader moves the boxes of the
    first agreed grounded finding into a far corner. Studies with a finding left
    without a verdict are marked done; the last three studies are not reviewed.
    """
    done: dict[str, dict] = {}
    for k, report in enumerate(reports[:9]):
        sid = report.study_id
        verdicts = [PATTERN[(i + k) % 5] for i in range(len(report.findings))]
        moved = None
        for i, verdict in enumerate(verdicts):
            if verdict is not None:
                reviews.set_verdict(sid, i, verdict, reviewer=reviewer)
            if verdict == "agree" and moved is None and report.findings[i].boxes and k % 4 == 0:
                reviews.set_boxes(sid, i, [[0.9, 0.9, 0.99, 0.99]], reviewer=reviewer)
                moved = i
        added = 0
        if k % 3 == 0:
            reviews.add_finding(sid, "Missed nodule.", [[0.2, 0.2, 0.3, 0.3]], reviewer=reviewer)
            added = 1
        if None in verdicts:
            reviews.mark_done(sid, reviewer=reviewer)
        done[sid] = {"verdicts": verdicts, "added": added, "moved": moved}
    return done


def test_review_judge_gives_the_precision_and_recall_that_follow_from_the_reviews(
    demo_run: tuple, reviews: Any
) -> None:
    """By counting, per study: precision = agreed / (agreed + disagreed) (unsure and
    unmarked findings are not judged); recall = agreed / (agreed + added); grounding
    precision = agreed grounded findings whose boxes the reader kept / agreed grounded
    findings. Cohort values are means over the studies where they are defined."""
    result, _ = demo_run
    reports = [r for r in result.reports if r is not None]
    done = review_demo_run(reviews, reports)
    with pytest.warns(UserWarning, match="studies only generated"):  # 3 left unreviewed
        evaluation = evaluate(result, reviews, judge="review", bootstrap=100)
    by_id = {r.study_id: r for r in reports}
    precision, recall, grounding = [], [], []
    for sid, what in done.items():
        v = what["verdicts"]
        agree, disagree = v.count("agree"), v.count("disagree")
        if agree + disagree:
            precision.append(agree / (agree + disagree))
        recall.append(agree / (agree + what["added"]) if agree + what["added"] else math.nan)
        grounded_agreed = [
            i for i, x in enumerate(v) if x == "agree" and by_id[sid].findings[i].boxes
        ]
        if grounded_agreed:
            kept = [i for i in grounded_agreed if i != what["moved"]]
            grounding.append(len(kept) / len(grounded_agreed))
    s = evaluation.summary
    assert s["logical_precision"]["value"] == pytest.approx(np.mean(precision))
    assert s["logical_precision"]["n"] == len(precision)
    assert s["logical_recall"]["value"] == pytest.approx(np.nanmean(recall))
    assert s["grounding_precision"]["value"] == pytest.approx(np.mean(grounding))
    assert 0 < s["grounding_precision"]["value"] < 1  # the moved boxes count
    assert evaluation.counts["evaluated"] == 9
    assert evaluation.missing["generated_only"] == [r.study_id for r in reports[9:]]
    assert evaluation.counts["generated_not_judged"] == sum(
        w["verdicts"].count("unsure") + w["verdicts"].count(None) for w in done.values()
    )
    assert evaluation.provenance["references"]["kind"] == "reviews"
    assert evaluation.provenance["references"]["reviewer"] == "ana"
    # The exact judge on the same reference set: agreed findings are copies of the
    # model's, so precision counts every generated finding (unsure ones too).
    with pytest.warns(UserWarning, match="studies only generated"):
        exact = evaluate(result, from_reviews(reviews), bootstrap=0)
    assert exact.summary["logical_recall"]["value"] == pytest.approx(np.nanmean(recall))


def test_two_readers_agreement_and_choosing_a_reader(demo_run: tuple, reviews: Any) -> None:
    """Reader ana: agree, agree, disagree, agree; reader ben: agree, disagree, disagree,
    agree on the four findings of the first study that has four: kappa 0.5 (see
    test_cohen_kappa_hand_computed), raw agreement 3/4."""
    result, _ = demo_run
    report = next(r for r in result.reports if r is not None and len(r.findings) == 4)
    for i, (a, b) in enumerate(
        zip(
            ["agree", "agree", "disagree", "agree"],
            ["agree", "disagree", "disagree", "agree"],
            strict=True,
        )
    ):
        reviews.set_verdict(report.study_id, i, a, reviewer="ana")
        reviews.set_verdict(report.study_id, i, b, reviewer="ben")
    agreement = reader_agreement(reviews)
    assert agreement["reviewers"] == ["ana", "ben"]
    assert agreement["n"] == 4 and agreement["raw_agreement"] == 0.75
    assert agreement["kappa"] == pytest.approx(0.5)
    assert agreement["table"].loc["agree", "disagree"] == 1
    with pytest.raises(EvaluationError, match="2 reviewers"):
        evaluate(result, reviews, judge="review")
    with pytest.warns(UserWarning):
        evaluation = evaluate(result, from_reviews(reviews, reviewer="ben"), judge="review")
    assert evaluation.summary["logical_precision"]["value"] == pytest.approx(0.5)
    assert evaluation.agreement["kappa"] == pytest.approx(0.5)
    with pytest.raises(EvaluationError, match="no reviews by 'cy'"):
        from_reviews(reviews, reviewer="cy")


def test_review_judge_reads_the_browsers_json_export(demo_run: tuple, tmp_path: Path) -> None:
    """The JSON export lists agreed/added findings with finding_index and the left-out
    ones with their verdicts, so judge="review" works from the file alone."""
    result, _ = demo_run
    report = result.reports[1]
    n = len(report.findings)
    export = [
        {
            "study_id": report.study_id,
            "reviewer": "ana",
            "findings": [
                {
                    "text": report.findings[0].text,
                    "boxes": [b.as_list() for b in report.findings[0].boxes],
                    "source": "model",
                    "finding_index": 0,
                },
                {"text": "Added.", "boxes": [], "source": "added", "finding_index": n},
            ],
            "excluded": [
                {"text": f.text, "boxes": [], "verdict": "disagree", "finding_index": i}
                for i, f in enumerate(report.findings)
                if i > 0
            ],
            "note": "",
        }
    ]
    (tmp_path / "export.json").write_text(json.dumps(export))
    with pytest.warns(UserWarning):
        evaluation = evaluate(result, tmp_path / "export.json", judge="review", bootstrap=0)
    row = evaluation.per_study.iloc[0]
    assert row["logical_precision"] == pytest.approx(1 / n)
    assert row["logical_recall"] == 0.5


def test_the_browsers_exports_give_the_same_evaluation(demo_run: tuple, tmp_path: Path) -> None:
    """ReviewStore.export as JSON, CSV and RadFact layout, read back as references."""
    result, store_path = demo_run
    copy = tmp_path / "reviewed.sqlite"
    copy.write_bytes(store_path.read_bytes())
    reviews = _real_review_store(copy)
    reports = [r for r in result.reports if r is not None]
    review_demo_run(reviews, reports)
    direct = quiet_evaluate(result, reviews, judge="review", bootstrap=0)
    exact = quiet_evaluate(result, reviews, bootstrap=0)
    for fmt in ("json", "csv", "radfact"):
        path = tmp_path / f"refs.{fmt}.{'csv' if fmt == 'csv' else 'json'}"
        assert reviews.export(path, format=fmt, reviewer="ana") == 9
        from_file = quiet_evaluate(result, path, bootstrap=0)
        assert from_file.summary == exact.summary, fmt
    via_json = quiet_evaluate(result, tmp_path / "refs.json.json", judge="review", bootstrap=0)
    assert via_json.summary == direct.summary


def test_provenance_counts_what_produced_the_reports() -> None:
    """Reports' provenance (backend, endpoint, model, options) is counted, times and
    digests left out, so two runs of different models are told apart in the JSON."""
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Provenance:
        backend: str
        model_version: str
        created: str

        def to_dict(self) -> dict[str, str]:
            return {
                "backend": self.backend,
                "model_version": self.model_version,
                "created": self.created,
            }

    reports = _one_report()
    for k, report in enumerate(reports):
        object.__setattr__(report, "provenance", Provenance("client", "12", f"2026-12-01T0{k}"))
    evaluation = evaluate(reports, [GOOD, {**GOOD, "study_id": "s2"}], bootstrap=0)
    generated = evaluation.to_dict()["provenance"]["generated"]
    assert generated["kind"] == "list of Report" and generated["reports"] == 2
    assert generated["provenance"] == [{"count": 2, "backend": "client", "model_version": "12"}]


def test_review_judge_refuses_reviews_of_another_run(demo_run: tuple, reviews: Any) -> None:
    """Verdicts are about the reviewed run's findings; another run's findings at the same
    positions are not judged by them: each such study is a judge failure, listed."""
    result, _ = demo_run
    reports = [r for r in result.reports if r is not None]
    review_demo_run(reviews, reports)
    other = [
        Report(findings=[Finding("Something else entirely."), *r.findings[1:]], study_id=r.study_id)
        for r in reports
    ]
    with pytest.warns(UserWarning):
        evaluation = evaluate(other, reviews, judge="review", bootstrap=0)
    # studies whose first finding the reader did not edit (boxes moved counts as an edit)
    assert evaluation.counts["judge_failed"] >= 6
    assert all("belong to another run" in p.reason for p in evaluation.problems)


def test_failed_generations_are_problems_not_missing(tmp_path: Path) -> None:
    """A study that failed in the run (BatchResult) or is stored as an error (results
    store) is listed as a generation failure, not as a reference without a report."""
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    studies = [Study(png_bytes(1), study_id="ok1"), Study(bad, study_id="broken")]
    store_path = tmp_path / "r.sqlite"
    result = run_batch(studies, DemoBackend(), store=store_path, progress=False)
    refs = [*as_references([result.reports[0]]), {"study_id": "broken", "findings": []}]
    with pytest.warns(UserWarning):
        evaluation = evaluate(result, refs, bootstrap=0)
    assert [(p.study_id, p.reason) for p in evaluation.problems] == [
        ("broken", "generation failed in the run (ImageError)")
    ]
    assert evaluation.missing["reference_only"] == [] and evaluation.counts["evaluated"] == 1
    with ResultStore(store_path) as store:
        store.put_error("k-timeout", ("EndpointTimeoutError", "408"), study_id="late")
        store.put_error("k-retried", ("EndpointBusyError", "429"), study_id="ok1")  # answered too
    refs.append({"study_id": "late", "findings": []})
    with pytest.warns(UserWarning):
        from_store = evaluate(store_path, refs, bootstrap=0)
    assert [(p.study_id, p.reason) for p in from_store.problems] == [
        ("late", "generation failed (EndpointTimeoutError)")
    ]
    assert from_store.counts["problems"] == 1
    assert from_store.missing["reference_only"] == ["broken"]  # never reached the store


def test_the_study_browser_shows_where_model_and_reference_disagree(demo_run: tuple) -> None:
    """References equal to the model's answer for all but three studies (one finding dropped
    from the reference): exactly those three are disagreements, and the browser shows them."""
    pytest.importorskip("anywidget")
    from cxr_widgets import StudyBrowser

    result, store = demo_run
    references = as_references(result.reports)
    changed = {references[i]["study_id"] for i in (1, 4, 7)}
    for reference in references:
        if reference["study_id"] in changed:
            reference["findings"] = reference["findings"][1:]
    evaluation = evaluate(result, references, bootstrap=0)
    assert sorted(evaluation.disagreements) == sorted(changed)
    browser = StudyBrowser(store)
    try:
        assert browser.filter(only=evaluation.disagreements) == [
            s for s in browser.filter(only=None) if s in changed
        ]
        assert sorted(browser.filter(only=evaluation.disagreements)) == sorted(changed)
        assert len(browser.filter(only=None)) == 12
    finally:
        browser.close()
