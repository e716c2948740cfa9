"""Review mode of ReportGenWidget: one study reviewed in the panel, every change saved at
once in a results file, read again after reopening, and the same reference set as the
study browser makes."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxr_widgets import Box, ReportGenWidget, ResultStore, StudyBrowser
from cxr_widgets.errors import ReviewError
from cxr_widgets.review import ReviewStore, store_for_review
from cxr_widgets.samples import sample_study


def act(widget: ReportGenWidget, **content) -> None:
    """What the review controls in the page send."""
    widget.review._on_action(None, content, None)


def committed(path: Path, study_id: str, reviewer: str = "ada") -> dict:
    """The study's review as another connection reads it (only committed data)."""
    with ReviewStore(path, reviewer=reviewer) as other:
        return other.study(study_id)


@pytest.fixture
def generated(tmp_path: Path):
    widget = ReportGenWidget(demo_latency=0, export_dir=tmp_path / "exports")
    widget.load_study(sample_study())
    widget.generate()
    yield widget
    widget.close()


def test_every_review_change_is_saved_at_once(generated: ReportGenWidget, tmp_path: Path):
    path = tmp_path / "reviews.sqlite"
    reviews = generated.start_review(path, reviewer="ada")
    assert generated.review_mode and reviews.path == path
    sid = generated.review_study_id
    model = generated.report
    assert model is not None and len(model.findings) >= 3
    # The model's answer is stored as a result in the same file, never changed.
    with ResultStore(path) as store:
        (stored,) = list(store.results("ok"))
    assert stored.study_id == sid and stored.report.findings == model.findings

    panel = generated.review.panel
    assert [row["text"] for row in panel.findings] == [f.text for f in model.findings]
    act(generated, action="verdict", index=0, verdict="agree")
    assert committed(path, sid)["findings"][0].verdict == "agree"
    assert panel.saved.startswith("saved #1") and panel.findings[0]["verdict"] == "agree"
    act(generated, action="verdict", index=1, verdict="disagree")
    act(generated, action="verdict", index=2, verdict="unsure")
    assert [f.verdict for f in committed(path, sid)["findings"][:3]] == [
        "agree",
        "disagree",
        "unsure",
    ]
    act(generated, action="text", index=0, text="Edited: the lungs are clear.")
    assert committed(path, sid)["findings"][0].text == "Edited: the lungs are clear."
    # The viewer shows the reviewed findings; the widget's report stays the model's.
    assert generated.viewer.report.findings[0].text == "Edited: the lungs are clear."
    assert generated.report.findings[0].text == model.findings[0].text
    act(generated, action="add", text="Missed rib fracture.")
    added = committed(path, sid)["findings"][-1]
    assert (added.source, added.text) == ("added", "Missed rib fracture.")
    assert generated.viewer.report.findings[-1].text == "Missed rib fracture."
    assert generated.viewer.selected == len(generated.viewer.report.findings) - 1
    act(generated, action="note", note="compare with the lateral")
    assert committed(path, sid)["note"] == "compare with the lateral"
    act(generated, action="done", done=True)
    assert committed(path, sid)["reviewed"] and panel.reviewed
    act(generated, action="undo")
    assert not committed(path, sid)["done"] and not panel.done
    act(generated, action="verdict", index=0, verdict="sure")
    assert "verdict must be one of" in panel.error
    assert committed(path, sid)["findings"][0].verdict == "agree"  # nothing changed


def test_the_review_survives_reopening_and_gives_the_reference_set(
    generated: ReportGenWidget, tmp_path: Path
):
    path = tmp_path / "reviews.sqlite"
    generated.start_review(path, reviewer="ada")
    sid = generated.review_study_id
    n = len(generated.report.findings)
    act(generated, action="verdict", index=0, verdict="agree")
    for index in range(1, n):
        act(generated, action="verdict", index=index, verdict="disagree")
    act(generated, action="text", index=0, text="Edited first finding.")
    act(generated, action="add", text="Missed rib fracture.")
    generated.close()

    again = ReportGenWidget(demo_latency=0, review=path, reviewer="ada")
    again.load_study(sample_study())
    again.generate()
    again.review_mode = True  # as the checkbox in the page does
    assert again.review_study_id == sid  # the same study, the same id
    rows = again.review.panel.findings
    assert [r["verdict"] for r in rows[:n]] == ["agree"] + ["disagree"] * (n - 1)
    assert rows[0]["text"] == "Edited first finding."
    assert rows[-1]["text"] == "Missed rib fracture." and rows[-1]["source"] == "added"
    assert again.review.panel.reviewed  # every model finding has a verdict
    model_boxes = [b.as_list() for b in again.report.findings[0].boxes]
    expected = [
        {
            "study_id": sid,
            "findings": [
                {"text": "Edited first finding.", "boxes": model_boxes},
                {"text": "Missed rib fracture.", "boxes": []},
            ],
        }
    ]
    assert again.reviews.reference_set() == expected
    # The study browser reads the same file and gives the same reference set.
    browser = StudyBrowser(path, reviewer="ada")
    assert browser.study_ids == [sid]
    assert browser.reviews.reference_set() == expected
    browser.close()
    out = tmp_path / "reference.json"
    assert again.reviews.export(out) == 1
    again.close()


def test_review_needs_a_report_and_a_reviewer(tmp_path: Path):
    widget = ReportGenWidget(demo_latency=0, export_dir=tmp_path / "exports")
    widget.review_mode = True  # nothing shown yet: nothing to review, no error
    act(widget, action="verdict", index=0, verdict="agree")
    assert "nothing to review" in widget.review.panel.error
    widget.load_study(sample_study())
    widget.generate()
    # Switched on in the page with no file given: export_dir/reviews.sqlite.
    assert widget.reviews.path == tmp_path / "exports" / "reviews.sqlite"
    act(widget, action="verdict", index=0, verdict="agree")
    assert "enter your name as reviewer" in widget.review.panel.error
    widget.reviewer = "bea"
    act(widget, action="verdict", index=0, verdict="agree")
    assert widget.review.panel.error == ""
    assert widget.reviews.findings(widget.review_study_id)[0].verdict == "agree"
    widget.stop_review()
    act(widget, action="verdict", index=0, verdict="disagree")
    assert "switch on Review mode" in widget.review.panel.error
    widget.reviewer = " " * 3 + "x" * 101
    assert "at most 100" in widget.review.panel.error
    widget.close()


def test_a_different_answer_for_the_same_study_is_reviewed_apart(
    generated: ReportGenWidget, tmp_path: Path
):
    path = tmp_path / "reviews.sqlite"
    first = generated.report
    with ResultStore(path) as store:
        sid = store_for_review(store, first)
        assert store_for_review(store, first) == sid  # the same answer: stored once
        other = first.replace(findings=first.findings[:1])
        apart = store_for_review(store, other)
        assert apart.startswith(sid + "-") and apart != sid
        assert store_for_review(store, other) == apart
        assert len(list(store.results("ok"))) == 2
    with pytest.raises(ReviewError, match="name the reviewer"):
        ReviewStore.check_reviewer("  ")


def box_edit(viewer, finding: int, box: int, rect: list[float] | None) -> None:
    """What the viewer's page sends when a box drag ends (rect in frontal-image pixels)."""
    viewer._on_custom_msg(
        viewer, {"kind": "box_edit", "finding": finding, "box": box, "rect": rect}, []
    )


def test_boxes_edited_on_the_viewer_are_saved_in_the_model_frame(
    generated: ReportGenWidget, tmp_path: Path
):
    path = tmp_path / "reviews.sqlite"
    generated.start_review(path, reviewer="ada")
    sid, viewer = generated.review_study_id, generated.viewer
    assert viewer.editable
    grounded = next(i for i, f in enumerate(generated.report.findings) if f.boxes)
    width, height, frame = viewer.width, viewer.height, viewer.frame
    x0, y0, x1, y1 = generated.report.findings[grounded].boxes[0].to_pixels(width, height, frame)
    moved = [x0 + 40, y0 + 25, x1 + 40, y1 + 25]
    box_edit(viewer, grounded, 0, moved)
    stored = committed(path, sid)["findings"][grounded].boxes[0]
    assert stored == Box.from_pixels(*moved, width, height, frame)
    assert stored.to_pixels(width, height, frame) == pytest.approx(moved, abs=0.05)
    # The viewer shows the saved boxes at once, the model's answer is unchanged.
    assert viewer.report.findings[grounded].boxes[0] == stored
    assert generated.report.findings[grounded].boxes[0] != stored
    # A missed finding with a box drawn for it, then that box deleted and drawn again.
    act(generated, action="add", text="Missed rib fracture.")
    added = len(viewer.report.findings) - 1
    drawn = [width * 0.6, height * 0.2, width * 0.7, height * 0.3]
    box_edit(viewer, added, -1, drawn)
    assert committed(path, sid)["findings"][-1].boxes == [
        Box.from_pixels(*drawn, width, height, frame)
    ]
    box_edit(viewer, added, 0, None)
    assert committed(path, sid)["findings"][-1].boxes == []
    act(generated, action="undo")
    assert len(committed(path, sid)["findings"][-1].boxes) == 1
    assert len(viewer.report.findings[-1].boxes) == 1
    # Outside review mode the viewer does not edit and nothing is saved.
    generated.stop_review()
    assert not viewer.editable
    box_edit(viewer, grounded, 0, [0, 0, 10, 10])
    assert committed(path, sid)["findings"][grounded].boxes[0] == stored
