"""Microsoft's sample study: the recorded CXRReportGen answer, for that study and only for it."""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from cxr_widgets import (
    DemoBackend,
    EndpointConfig,
    ReportGenClient,
    Study,
    build_request,
    prepare_image,
)
from cxr_widgets.local.demo_findings import (
    DEMO_LABEL,
    RECORDED_LABEL,
    VARIANTS,
    demo_notice,
    demo_stamp,
    is_recorded,
    score_payload,
)
from cxr_widgets.local.server import LocalEndpoint
from cxr_widgets.report import Report
from cxr_widgets.samples import (
    MICROSOFT_SAMPLE_DIR,
    microsoft_sample_paths,
    recorded_answer,
    sample_study,
)

# Cell 14 of Microsoft's cxr-deploy.ipynb (Azure/azureml-examples, commit 916731a2c8e5).
RECORDED = [
    ["The heart size is normal.", None],
    ["The aorta is tortuous.", [[0.415, 0.225, 0.635, 0.755]]],
    [
        "A patchy infiltrate in the right lower lobe is associated with volume loss.",
        [[0.115, 0.445, 0.445, 0.795]],
    ],
    ["A small right pleural effusion is present.", [[0.115, 0.555, 0.425, 0.845]]],
    ["The left hemithorax is grossly clear.", None],
]
CANNED = [[list(f) for f in variant] for variant in VARIANTS]


def wire(report: Report) -> list[list[object]]:
    return [f.to_wire() for f in report.findings]


def jpeg_payload(frontal: bytes, lateral: bytes | None, **texts: str) -> dict[str, object]:
    """A request as Microsoft's notebook builds it: the JPEG files base64-encoded as they are."""
    columns = ["frontal_image"] + (["lateral_image"] if lateral else []) + list(texts)
    row = [base64.b64encode(frontal).decode()]
    if lateral:
        row.append(base64.b64encode(lateral).decode())
    row += list(texts.values())
    return {"input_data": {"columns": columns, "index": [0], "data": [row]}, "params": {}}


def one_pixel_changed(path: Path) -> bytes:
    with Image.open(path) as original:
        image = original.convert("L")
    image.putpixel((500, 400), (image.getpixel((500, 400)) + 40) % 256)  # type: ignore[operator]
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def test_the_package_ships_the_images_answer_and_mit_notice() -> None:
    frontal, lateral = microsoft_sample_paths()
    with Image.open(frontal) as front, Image.open(lateral) as side:
        assert front.size == (1024, 918) and side.size == (1024, 853)
    notice = (MICROSOFT_SAMPLE_DIR / "LICENSE").read_text()
    assert "MIT License" in notice and "Copyright (c) Microsoft Corporation" in notice
    answer = recorded_answer()
    assert [f.to_wire() for f in answer.findings] == RECORDED
    assert "does not state the version" in answer.model and "2024-10-16" in answer.model
    assert answer.source["commit"].startswith("916731a2c8e5")
    assert answer.inputs["comparison"] == "None"


def test_demo_backend_returns_the_recorded_answer_for_the_sample() -> None:
    report = DemoBackend().generate(sample_study())
    assert wire(report) == RECORDED
    assert report.demo is True  # served offline, not a live reading
    assert demo_notice(report) == RECORDED_LABEL and demo_stamp(report) == "RECORDED"
    assert report.provenance.model == "CxrReportGen"
    assert "does not state the version" in (report.provenance.model_version or "")
    page = report._repr_html_()
    assert html.escape(RECORDED_LABEL) in page and "canned" not in page


@pytest.mark.parametrize("options", [{}, {"full_resolution": True}])
def test_the_sample_matches_as_prepared_or_as_microsoft_sends_it(options: dict) -> None:
    frontal, lateral = microsoft_sample_paths()
    prepared = score_payload(build_request(sample_study(), **options))
    as_files = score_payload(
        jpeg_payload(frontal.read_bytes(), lateral.read_bytes(), comparison="None")
    )
    for body in (prepared, as_files):
        assert json.loads(body[0]["output"]) == RECORDED


def only_for_the_sample_cases() -> dict[str, Study]:
    frontal, lateral = microsoft_sample_paths()
    sample = sample_study()
    return {
        "an indication": sample.replace(indication="Cough."),
        "a comparison": sample.replace(comparison="Prior of 2024."),
        "no lateral": Study(frontal_image=frontal),
        "views swapped": Study(frontal_image=lateral, lateral_image=frontal),
        "a prior": sample.replace(prior_image=frontal),
        "one pixel changed": sample.replace(frontal_image=one_pixel_changed(frontal)),
        "the NEMA DICOM": sample_study("nema"),
    }


@pytest.mark.parametrize("case", list(only_for_the_sample_cases()))
def test_any_other_study_gets_canned_findings_labelled_demo(case: str) -> None:
    study = only_for_the_sample_cases()[case]
    report = DemoBackend().generate(study)
    assert wire(report) in CANNED
    assert not is_recorded(report.findings)
    assert demo_notice(report) == DEMO_LABEL and demo_stamp(report) == "DEMO"


def test_other_image_options_get_canned_findings() -> None:
    # Resized differently, the pixels are not those the answer was recorded for.
    report = DemoBackend(image_options={"max_side": 600}).generate(sample_study())
    assert wire(report) in CANNED


def test_a_live_answer_with_the_same_text_is_not_labelled() -> None:
    live = Report(findings=list(recorded_answer().findings))  # demo=False: a live model
    assert demo_notice(live) == "" and demo_stamp(live) == ""


def test_sample_study_choices() -> None:
    sample = sample_study()
    assert sample.frontal_image == microsoft_sample_paths()[0]
    assert sample.lateral_image == microsoft_sample_paths()[1]
    assert not (sample.indication or sample.technique or sample.prior_report)
    assert sample_study("nema").frontal_image.name == "RG1_UNCR.dcm"
    with pytest.raises(ValueError, match="no prior image"):
        sample_study(with_prior=True)
    with pytest.raises(ValueError, match="'microsoft' or 'nema'"):
        sample_study("chest")  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def local_endpoint() -> Iterator[LocalEndpoint]:
    with LocalEndpoint() as server:
        yield server


@pytest.mark.server
def test_local_endpoint_returns_the_recorded_answer_only_for_the_sample(
    local_endpoint: LocalEndpoint,
) -> None:
    with ReportGenClient(EndpointConfig(local_endpoint.scoring_uri)) as client:
        sample = client.generate(sample_study())
        nema = client.generate(sample_study("nema"))
        changed = client.generate(sample_study().replace(indication="Fever."))
    assert wire(sample) == RECORDED and demo_notice(sample) == RECORDED_LABEL
    assert wire(nema) in CANNED and demo_notice(nema) == DEMO_LABEL
    assert wire(changed) in CANNED and demo_notice(changed) == DEMO_LABEL


def test_the_wheel_lists_the_mit_notice_as_a_license_file() -> None:
    tomllib = pytest.importorskip("tomllib")
    root = Path(__file__).resolve().parent.parent
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    notice = MICROSOFT_SAMPLE_DIR / "LICENSE"
    assert str(notice.relative_to(root)) in project["license-files"]


@pytest.mark.parametrize(
    "study", [sample_study(), sample_study("nema")], ids=["recorded", "canned"]
)
def test_every_picture_of_demo_findings_carries_its_label(study: Study) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cxr_widgets import plot_findings, render_findings

    report = DemoBackend().generate(study)
    label = demo_notice(report)
    assert label in (RECORDED_LABEL, DEMO_LABEL)
    # matplotlib: the caption names the label.
    image = prepare_image(study.frontal_image).image  # reports carry no image
    ax = plot_findings(report, image)
    assert any(label in t.get_text() for t in ax.texts)
    plt.close(ax.figure)
    # Pillow: the stamp and the legend's notice are drawn; without demo=True they are not.
    live = Report(findings=report.findings, image_size=report.image_size)
    stamped = render_findings(image, report, legend=True)
    plain = render_findings(image, live, legend=True)
    corner = (0, 0, stamped.width // 8, stamped.height // 20)
    assert stamped.crop(corner).tobytes() != plain.crop(corner).tobytes()
    # HTML: the banner.
    assert html.escape(label) in report._repr_html_()


def test_the_widget_badge_says_how_the_offline_answers_are_chosen() -> None:
    pytest.importorskip("ipywidgets")
    from cxr_widgets import ReportGenWidget
    from cxr_widgets.local.demo_findings import DEMO_CHOICE

    header = ReportGenWidget().header
    assert header.demo and "DEMO" in header.demo_badge
    assert header.demo_choice == DEMO_CHOICE  # the badge's tooltip in the page
    assert "hash of its frontal image alone" in DEMO_CHOICE
