"""Report, Finding and Box: geometry (docs/geometry.md), provenance, exports and the HTML table."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re

import pytest

from cxr_widgets import Box, Finding, Report, ResponseFormatError
from cxr_widgets.palette import FINDING_COLORS, UNGROUNDED_COLOR, finding_color
from cxr_widgets.report import (
    DEMO_NOTICE,
    RECORD_FIELDS,
    RESEARCH_NOTICE,
    center_square,
    records_to_csv,
)

BOX = Box(0.1, 0.2, 0.5, 0.6)


# --- geometry: c = min(W, H), ox = (W - c) // 2, oy = (H - c) // 2 -------------


def test_center_square_formula():
    assert center_square(100, 100) == (0, 0, 100)
    assert center_square(300, 200) == (50, 0, 200)
    assert center_square(200, 301) == (0, 50, 200)  # (301 - 200) // 2 rounds down
    assert center_square(1841, 1955) == (0, 57, 1841)


@pytest.mark.parametrize("frame", ["center_crop", "full"])
def test_square_image_both_frames_agree(frame):
    assert BOX.to_pixels(100, 100, frame) == pytest.approx((10, 20, 50, 60))


def test_wide_image():
    # 300 x 200: c = 200, ox = 50, oy = 0
    assert BOX.to_pixels(300, 200) == pytest.approx((70, 40, 150, 120))
    assert BOX.to_pixels(300, 200, "center_crop") == pytest.approx((70, 40, 150, 120))
    assert BOX.to_pixels(300, 200, "full") == pytest.approx((30, 40, 150, 120))


def test_tall_image():
    # 200 x 301: c = 200, ox = 0, oy = 50
    assert BOX.to_pixels(200, 301) == pytest.approx((20, 90, 100, 170))
    assert BOX.to_pixels(200, 301, "full") == pytest.approx((20, 60.2, 100, 180.6))


def test_rg1_sized_image_with_documented_box():
    # RG1 is 1841 wide, 1955 high: c = 1841, oy = 57
    box = Box(0.005, 0.555, 0.965, 0.865)
    assert box.to_pixels(1841, 1955) == pytest.approx((9.205, 1078.755, 1776.565, 1649.465))
    assert box.to_pixels(1841, 1955, "full") == pytest.approx((9.205, 1085.025, 1776.565, 1691.075))


def test_whole_unit_box_covers_the_square_or_the_image():
    box = Box(0.0, 0.0, 1.0, 1.0)
    assert box.to_pixels(300, 200) == (50, 0, 250, 200)
    assert box.to_pixels(300, 200, "full") == (0, 0, 300, 200)


def test_bad_frame_and_size_are_refused():
    with pytest.raises(ValueError, match="frame"):
        BOX.to_pixels(10, 10, "crop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        BOX.to_pixels(0, 10)


def test_box_helpers():
    box = Box.from_list([0.25, 0.5, 0.75, 1])
    assert box.as_list() == [0.25, 0.5, 0.75, 1.0]
    assert box.width == pytest.approx(0.5)
    assert box.height == pytest.approx(0.5)


# --- reports -----------------------------------------------------------------------


def make_report(**kw) -> Report:
    findings = [
        Finding("The heart size is normal.", []),
        Finding("Blunting of both costophrenic angles.", [Box(0.005, 0.555, 0.965, 0.865)]),
        Finding("Opacities <left> & right.", [Box(0.1, 0.1, 0.3, 0.4), Box(0.6, 0.1, 0.9, 0.4)]),
    ]
    values = {
        "findings": findings,
        "image_size": (1841, 1955),
        "study_id": "S1",
        "source": "demo (offline)",
    }
    values.update(kw)
    return Report(**values)


def test_text_and_counts():
    report = make_report()
    assert report.text == (
        "The heart size is normal. Blunting of both costophrenic angles. Opacities <left> & right."
    )
    assert report.n_boxes == 3
    assert [f.grounded for f in report.findings] == [False, True, True]


def test_dict_and_json_round_trip():
    report = make_report(demo=True, warnings=["finding 4: dropped"], request_id="abc")
    data = report.to_dict()
    assert data["findings"][0] == ["The heart size is normal.", None]
    assert data["findings"][2][1] == [[0.1, 0.1, 0.3, 0.4], [0.6, 0.1, 0.9, 0.4]]
    assert data["image_size"] == [1841, 1955]
    back = Report.from_dict(json.loads(json.dumps(data)))
    assert back == report
    assert back.image_size == (1841, 1955)
    assert back.demo is True and back.warnings == ("finding 4: dropped",)
    again = Report.from_json(report.to_json())
    assert again.to_dict() == data


def test_a_report_holds_no_image_and_cannot_be_changed_after_it_is_built():
    report = make_report(warnings=["finding 4: dropped"])
    assert "frontal_image" not in {f.name for f in dataclasses.fields(Report)}
    assert not hasattr(report, "frontal_image") and not hasattr(report, "annotated_png")
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.study_id = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.findings[0].text = "changed"  # type: ignore[misc]
    with pytest.raises(AttributeError):  # tuples: nothing is appended in place
        report.warnings.append("late")  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        report.findings[2].boxes.append(Box(0, 0, 1, 1))  # type: ignore[attr-defined]
    copy = report.replace(study_id="other", warnings=[*report.warnings, "late"])
    assert copy.study_id == "other" and copy.warnings == ("finding 4: dropped", "late")
    assert report.study_id == "S1" and report.warnings == ("finding 4: dropped",)
    assert copy.findings is report.findings  # shared safely: nothing in it can change


def test_lists_given_to_a_report_are_copied_not_kept():
    boxes = [Box(0.1, 0.1, 0.2, 0.2)]
    findings = [Finding("Opacity.", boxes)]
    warnings = ["w"]
    report = Report(findings=findings, warnings=warnings, image_size=[10, 20])
    boxes.append(Box(0.3, 0.3, 0.4, 0.4))
    findings.append(Finding("Later."))
    warnings.append("later")
    assert report.n_boxes == 1 and len(report.findings) == 1 and report.warnings == ("w",)
    assert report.image_size == (10, 20)
    assert hash(report.findings[0]) == hash(Finding("Opacity.", (Box(0.1, 0.1, 0.2, 0.2),)))


def make_provenance(**kw):
    from cxr_widgets.report import Provenance

    values = {
        "backend": "online-endpoint",
        "endpoint": "https://ep.eastus.inference.ml.azure.com/score#blue",
        "deployment": "blue",
        "model": "CxrReportGen",
        "model_version": "12",
        "image_options": {"shortest_side": 768},
        "package_version": "0.1.0",
        "request_digest": "ab" * 32,
        "study_digest": "cd" * 32,
        "created": "2026-12-01T08:00:00+00:00",
    }
    values.update(kw)
    return Provenance(**values)


def test_provenance_is_frozen_and_kept_by_json_and_records():
    provenance = make_provenance()
    with pytest.raises(dataclasses.FrozenInstanceError):
        provenance.model_version = "13"
    with pytest.raises(TypeError):
        provenance.image_options["shortest_side"] = 1  # read-only all the way down
    report = make_report(provenance=provenance, demo=True)
    again = Report.from_json(report.to_json())
    assert again.provenance == provenance and again == report
    rows = report.to_records()
    assert {r["model_version"] for r in rows} == {"12"}
    assert {r["endpoint"] for r in rows} == {provenance.endpoint}
    assert {r["demo"] for r in rows} == {True}
    text = records_to_csv(rows)
    header, first = list(csv.reader(io.StringIO(text)))[:2]
    assert first[header.index("request_digest")] == "ab" * 32
    assert first[header.index("demo")] == "True"


def test_replace_leaves_the_report_as_built():
    report = make_report()
    other = report.replace(study_id="S2")
    assert (report.study_id, other.study_id) == ("S1", "S2")
    assert other.findings == report.findings


@pytest.mark.parametrize("cell", ["=1+1", "+1", "-2+3", "@SUM(A1)", "\tx", "\rx"])
def test_csv_cells_are_neutralised_owasp(cell):
    from cxr_widgets.report import csv_safe

    report = make_report(study_id=cell, findings=[Finding(cell, [])])
    (row,) = list(csv.DictReader(io.StringIO(report.to_csv(), newline="")))
    assert row["study_id"] == "'" + cell and row["text"] == "'" + cell
    assert csv_safe(cell) == "'" + cell
    assert csv_safe("Normal heart.") == "Normal heart." and csv_safe(0.5) == 0.5
    assert csv_safe(None) == ""


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        json.dumps({"no": "findings"}),
        json.dumps({"findings": [["text"]]}),
        json.dumps({"findings": [["text", [[0.5, 0.5, 0.2, 0.9]]]]}),
        json.dumps({"findings": [["text", [[0, 0, 2, 1]]]]}),
    ],
)
def test_bad_saved_reports_raise(text):
    with pytest.raises(ResponseFormatError, match="not a saved report"):
        Report.from_json(text)


def test_records_one_row_per_box_and_one_for_ungrounded():
    rows = make_report().to_records()
    assert [r["finding"] for r in rows] == [1, 2, 3, 3]
    assert [r["box"] for r in rows] == [None, 1, 1, 2]
    assert all(tuple(r) == RECORD_FIELDS for r in rows)
    ungrounded = rows[0]
    assert ungrounded["grounded"] is False
    assert [ungrounded[k] for k in ("x_min", "y_min", "x_max", "y_max")] == [None] * 4
    assert rows[3]["x_min"] == 0.6 and rows[3]["y_max"] == 0.4
    assert {r["study_id"] for r in rows} == {"S1"}


def test_csv_parses_back(tmp_path):
    report = make_report()
    path = tmp_path / "report.csv"
    text = report.to_csv(path)
    assert path.read_bytes().decode("utf-8") == text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0]) == RECORD_FIELDS
    assert len(rows) == 4
    assert rows[0]["x_min"] == "" and rows[0]["grounded"] == "False"
    assert rows[2]["text"] == "Opacities <left> & right."
    assert float(rows[3]["x_min"]) == 0.6
    assert records_to_csv([]) == ",".join(RECORD_FIELDS) + "\r\n"


def test_csv_quotes_commas_and_newlines():
    report = Report(findings=[Finding('Left "apical", pleural\nthickening.', [])])
    (row,) = csv.DictReader(io.StringIO(report.to_csv()))
    assert row["text"] == 'Left "apical", pleural\nthickening.'


def test_dataframe_columns():
    frame = make_report().to_dataframe()
    assert list(frame.columns) == list(RECORD_FIELDS)
    assert len(frame) == 4
    assert frame["box"].isna().tolist() == [True, False, False, False]


def swatch_colors(html: str) -> list[str]:
    return re.findall(r"background:(#[0-9A-Fa-f]{6})", html)


def test_html_has_one_swatch_per_finding_in_palette_colours():
    report = make_report()
    html = report._repr_html_()
    assert swatch_colors(html) == [UNGROUNDED_COLOR, finding_color(1), finding_color(2)]
    assert [report.color(i) for i in range(3)] == swatch_colors(html)
    assert "Opacities &lt;left&gt; &amp; right." in html  # escaped
    assert RESEARCH_NOTICE in html
    assert DEMO_NOTICE not in html
    assert "<img" not in html  # no frontal image known


def test_html_marks_demo_and_shows_warnings():
    html = make_report(demo=True, warnings=["box <1> dropped"])._repr_html_()
    assert DEMO_NOTICE in html
    assert "box &lt;1&gt; dropped" in html


def test_colours_repeat_after_the_palette():
    findings = [Finding(f"f{i}", [Box(0.1, 0.1, 0.2, 0.2)]) for i in range(12)]
    report = Report(findings=findings)
    colors = [report.color(i) for i in range(12)]
    assert colors[:10] == list(FINDING_COLORS)
    assert colors[10:] == list(FINDING_COLORS[:2])
    assert swatch_colors(report._repr_html_()) == colors


def test_a_notebook_shows_a_report_as_html_without_an_image():
    """IPython's display formatter: HTML and plain text; the report holds no picture to embed
    (``render_findings(image, report)`` draws it on the image the report was made for)."""
    from IPython.core.formatters import DisplayFormatter

    data, _metadata = DisplayFormatter().format(make_report())
    assert set(data) == {"text/plain", "text/html"}
    assert "<img" not in data["text/html"] and "base64" not in data["text/html"]
    assert "The heart size is normal." in data["text/html"]


def test_repr_has_no_finding_text():
    text = repr(make_report(demo=True))
    assert "demo" in text and "3 findings" in text and "3 boxes" in text
    assert "heart" not in text


def test_html_says_where_the_report_came_from():
    from cxr_widgets.report import describe_provenance

    report = make_report(provenance=make_provenance())
    line = describe_provenance(report.provenance)
    assert "CxrReportGen v12" in line and "deployment blue" in line and "abababababab" in line
    assert line in report._repr_html_()
    assert "model unknown" in describe_provenance(make_provenance(model=None, model_version=None))
