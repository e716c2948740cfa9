"""DemoBackend: offline canned findings from the local endpoint's scoring code."""

from __future__ import annotations

import asyncio
import io
import json
import random
import time

import pytest
from PIL import Image

from cxr_widgets.backend import ReportGenerator
from cxr_widgets.contract import parse_response, validate_request
from cxr_widgets.demo import DemoBackend
from cxr_widgets.errors import RequestError
from cxr_widgets.local.demo_findings import VARIANTS, demo_findings, score_payload
from cxr_widgets.report import Report
from cxr_widgets.samples import sample_study
from cxr_widgets.study import Study


def png(seed: int, size: tuple[int, int] = (64, 48)) -> bytes:
    rng = random.Random(seed)
    image = Image.new("L", size)
    image.putdata([rng.randrange(256) for _ in range(size[0] * size[1])])
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def expected_findings(backend: DemoBackend, study: Study) -> list[list[object]]:
    """What the scoring script answers for the study's request row."""
    row = validate_request(backend.prepare(study).payload)[0]
    return [f.to_wire() for f in demo_findings(row)]


def test_is_a_report_generator_marked_demo() -> None:
    backend = DemoBackend()
    assert isinstance(backend, ReportGenerator)
    assert backend.is_demo and backend.label == "demo (offline)"
    assert "demo" in backend.identity


def test_sample_study_gets_a_demo_report_with_image_size() -> None:
    backend = DemoBackend()
    study = sample_study()
    report = backend.generate(study)
    assert isinstance(report, Report)
    assert report.demo is True and report.to_dict()["demo"] is True
    assert report.source == "demo (offline)"
    request = backend.prepare(study)
    assert report.image_size == request.studies[0].frontal.original_size
    assert "frontal_image" not in report.to_dict()  # no image in the report's data
    assert report.provenance is not None and report.provenance.backend == "demo"
    assert report.provenance.study_digest == request.studies[0].digest
    assert report.request_id and report.request_id.startswith("demo-")
    assert [f.to_wire() for f in report.findings] == expected_findings(backend, study)
    assert backend.requests == 1


def test_answers_equal_the_scoring_scripts_body() -> None:
    backend = DemoBackend()
    studies = [Study(frontal_image=png(seed), indication=f"case {seed}") for seed in range(3)]
    request = backend.prepare(studies)
    body = json.dumps(score_payload(request.payload))
    assert [r.findings for r in backend.generate(studies)] == [
        r.findings for r in parse_response(body, n_studies=3)
    ]


def test_ten_studies_in_order() -> None:
    backend = DemoBackend()
    studies = [Study(frontal_image=png(seed, (40 + seed, 30))) for seed in range(10)]
    reports = backend.generate(studies)
    assert isinstance(reports, list) and len(reports) == 10
    assert backend.requests == 1
    for study, report in zip(studies, reports, strict=True):
        assert report.demo
        assert report.image_size == Image.open(io.BytesIO(study.frontal_image)).size
        assert [f.to_wire() for f in report.findings] == expected_findings(backend, study)


def test_more_than_ten_studies_is_refused_before_answering() -> None:
    backend = DemoBackend()
    with pytest.raises(RequestError, match="at most 10"):
        backend.generate([Study(frontal_image=png(seed)) for seed in range(11)])
    assert backend.requests == 0


def test_deterministic_and_varied() -> None:
    studies = [Study(frontal_image=png(seed)) for seed in range(12)]
    first = [r.findings for r in DemoBackend().generate(studies[:10])]
    again = [r.findings for r in DemoBackend().generate(studies[:10])]
    assert first == again
    # The same study gets the same answer whatever else is in the request.
    alone = DemoBackend().generate(studies[3])
    assert alone.findings == first[3]
    answers = {tuple(f.text for f in findings) for findings in first}
    assert len(answers) > 1
    assert answers <= {tuple(text for text, _ in variant) for variant in VARIANTS}


def test_texts_never_change_the_canned_findings() -> None:
    # The canned choice hashes the frontal image only: the demo does not read the texts.
    backend = DemoBackend()
    texts = {
        tuple(f.text for f in backend.generate(Study(png(1), indication=f"i{n}")).findings)
        for n in range(15)
    }
    assert len(texts) == 1
    assert texts <= {tuple(text for text, _ in variant) for variant in VARIANTS}


def test_latency_is_simulated_and_async_works() -> None:
    backend = DemoBackend(latency=0.2)
    started = time.monotonic()
    report = asyncio.run(backend.agenerate(Study(frontal_image=png(4))))
    assert time.monotonic() - started >= 0.2
    assert report.demo
    with pytest.raises(ValueError):
        DemoBackend(latency=-1)


def test_the_budget_is_the_backends_and_the_same_for_demo_client_and_local_endpoint() -> None:
    from cxr_widgets.client import EndpointConfig, ReportGenClient
    from cxr_widgets.contract import DEFAULT_REQUEST_BUDGET, request_size
    from cxr_widgets.errors import RequestTooLargeError
    from cxr_widgets.local.server import LocalEndpoint

    config = EndpointConfig("http://127.0.0.1:9/score", key_env=None)
    with ReportGenClient(config) as client:
        assert client.request_budget == DEFAULT_REQUEST_BUDGET
        assert client.max_attempts == config.max_retries + 1
    assert DemoBackend().request_budget == DEFAULT_REQUEST_BUDGET
    assert LocalEndpoint().max_request_bytes == DEFAULT_REQUEST_BUDGET

    study = Study(png(1, (256, 256)), indication="Cough.")
    size = request_size(DemoBackend().prepare(study).studies)
    tight = DemoBackend(request_budget=size - 1)
    with pytest.raises(RequestTooLargeError, match="over the budget"):
        tight.generate(study)  # refused as the endpoint would refuse it: nothing answered
    assert tight.requests == 0
    assert DemoBackend(request_budget=size).generate(study).demo


def test_reports_are_built_once_with_provenance_and_study_warnings() -> None:
    backend = DemoBackend(image_options={"shortest_side": 600})
    study = Study(png(2), prior_report="Clear lungs.", study_id="s1")
    request = backend.prepare(study)
    (report,) = backend.send(request)
    provenance = report.provenance
    assert provenance is not None
    assert provenance.backend == "demo" and provenance.endpoint == backend.identity
    assert dict(provenance.image_options) == {"shortest_side": 600}
    assert provenance.request_digest == __import__("hashlib").sha256(request.body).hexdigest()
    assert provenance.package_version
    assert any("prior report was given without a prior image" in w for w in report.warnings)
    assert report.image_size == (64, 48) and report.study_id == "s1"


def test_burned_in_annotation_is_a_warning_on_the_report(rg1_path, tmp_path) -> None:
    import pydicom

    ds = pydicom.dcmread(rg1_path)
    ds.BurnedInAnnotation = "YES"
    marked = tmp_path / "burned.dcm"
    ds.save_as(marked)
    backend = DemoBackend()
    (report,) = backend.generate([Study(marked)])
    assert any("BurnedInAnnotation=YES" in w for w in report.warnings)
    assert any("frontal_image" in w for w in report.warnings)
    (clean,) = backend.generate([Study(rg1_path)])
    assert not any("BurnedInAnnotation" in w for w in clean.warnings)


def test_provenance_survives_the_result_store(tmp_path) -> None:
    from cxr_widgets.batch import run_batch
    from cxr_widgets.store import ResultStore

    studies = [Study(png(seed), study_id=f"s{seed}") for seed in range(3)]
    result = run_batch(studies, DemoBackend(), store=tmp_path / "r.sqlite", progress=False)
    with ResultStore(tmp_path / "r.sqlite") as store:
        stored = {r.study_id: r for r in store.load_reports()}
    for report in result.reports:
        assert report is not None and report.provenance is not None
        assert stored[report.study_id].provenance == report.provenance
        assert stored[report.study_id].provenance.backend == "demo"
