"""ReportGenWidget without a browser: the front end is simulated.

``frontend`` replaces the comm layer (``comm.create_comm``, the hook the
``comm`` package provides for this) with one that records every message the
kernel sends to the page, so tests can check what the browser would receive.
Browser messages are simulated with ``set_state`` and with the upload
control's message handler fed real chunk buffers.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import socket
import sys
from pathlib import Path
from typing import Any, ClassVar

import comm
import ipywidgets as widgets
import pytest
from comm.base_comm import BaseComm
from PIL import Image

from cxr_widgets import (
    DemoBackend,
    EndpointConfig,
    Report,
    ReportGenClient,
    StudyError,
    prepare_image,
    sample_study,
)
from cxr_widgets.errors import EndpointConnectionError
from cxr_widgets.report import center_square
from cxr_widgets.study import Study
from cxr_widgets.widget import ReportGenWidget
from cxr_widgets.widget.upload import ChunkedUpload

CHUNK = 2 * 1024 * 1024


class RecordingComm(BaseComm):
    """A comm whose messages to the front end are kept (data and binary buffers)."""

    sent: ClassVar[list[tuple[str, str, Any, list[bytes]]]] = []

    def publish_msg(
        self,
        msg_type: str,
        data: Any = None,
        metadata: Any = None,
        buffers: Any = None,
        **keys: Any,
    ) -> None:
        buffers = [bytes(b) for b in (buffers or [])]
        RecordingComm.sent.append((msg_type, self.comm_id, data, buffers))


@pytest.fixture
def frontend(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, Any, list[bytes]]]:
    RecordingComm.sent = []
    monkeypatch.setattr(comm, "create_comm", RecordingComm)
    return RecordingComm.sent


@pytest.fixture
def widget(frontend: list) -> ReportGenWidget:
    return ReportGenWidget(DemoBackend())


def all_widgets(root: widgets.Widget) -> list[widgets.Widget]:
    """Every widget reachable from ``root``: children, and widget-valued traits."""
    seen: dict[str, widgets.Widget] = {}
    stack = [root]
    while stack:
        node = stack.pop()
        if node.model_id in seen:
            continue
        seen[node.model_id] = node
        for name in node.keys:
            value = getattr(node, name)
            items = value if isinstance(value, (list, tuple)) else [value]
            stack.extend(v for v in items if isinstance(v, widgets.Widget))
    return list(seen.values())


def state_text(root: widgets.Widget) -> str:
    parts = []
    for node in all_widgets(root):
        for value in node.get_state().values():
            if isinstance(value, (bytes, bytearray, memoryview)):
                parts.append(bytes(value).decode("latin-1"))
            else:
                parts.append(json.dumps(value, default=str))
    return "\n".join(parts)


def sent_text(frontend: list) -> str:
    return "\n".join(
        json.dumps(data, default=str) + "".join(b.decode("latin-1") for b in buffers)
        for _, _, data, buffers in frontend
    )


def browser_message(control: ChunkedUpload, content: dict[str, Any], *buffers: Any) -> None:
    """A custom message from upload.js, through ipywidgets' own comm message handler."""
    msg = {"content": {"data": {"method": "custom", "content": content}}, "buffers": list(buffers)}
    control._handle_msg(msg)


def upload_file(control: ChunkedUpload, name: str, data: bytes, chunk: int = CHUNK) -> None:
    """Drive the upload protocol exactly as upload.js does: start, chunks, end."""
    browser_message(control, {"type": "start", "id": "t1", "name": name, "size": len(data)})
    for offset in range(0, len(data), chunk):
        piece = memoryview(data)[offset : offset + chunk]
        browser_message(control, {"type": "chunk", "id": "t1", "offset": offset}, piece)
    browser_message(control, {"type": "end", "id": "t1"})


def acks(frontend: list, model_id: str) -> list[dict[str, Any]]:
    """Custom messages the kernel sent to one widget's front end."""
    return [
        data["content"]
        for kind, comm_id, data, _ in frontend
        if kind == "comm_msg" and comm_id == model_id and data.get("method") == "custom"
    ]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def unreachable_client() -> ReportGenClient:
    config = EndpointConfig(f"http://127.0.0.1:{closed_port()}/score", max_retries=0, key_env=None)
    return ReportGenClient(config)


# --- header and endpoint -------------------------------------------------------------


def test_default_is_demo_with_visible_badge_and_research_notice(frontend: list) -> None:
    w = ReportGenWidget()
    assert isinstance(w.client, DemoBackend) and w.client.latency > 0
    header = w.header.value
    assert "cxr-demo-badge" in header and "DEMO" in header
    assert "offline, no model" in header  # per answer: recorded (sample) or canned
    assert "demo (offline)" in header
    assert "For research only, not for clinical use" in header
    assert "cxr-widget" in w._dom_classes


def test_real_client_has_no_demo_badge_and_shows_its_endpoint(widget: ReportGenWidget) -> None:
    client = unreachable_client()
    widget.client = client
    assert "cxr-demo-badge" not in widget.header.value
    assert (
        f"127.0.0.1:{client.config.scoring_uri.split(':')[2].split('/')[0]}" in widget.header.value
    )
    with pytest.raises(TypeError, match="ReportGenerator"):
        widget.client = "http://example.org/score"  # type: ignore[assignment]


# --- study ---------------------------------------------------------------------------


def test_sample_button_loads_microsofts_sample(widget: ReportGenWidget) -> None:
    widget.studypanel.sample_button.click()
    frontal = widget.studypanel.slots["frontal"]
    assert "cxr_frontal.jpg" in frontal.info.value and "1024x918" in frontal.info.value
    assert "cxr_lateral.jpg" in widget.studypanel.slots["lateral"].info.value
    assert "data-slot='frontal'" in frontal.info.value
    assert Image.open(io.BytesIO(frontal.thumb.value)).format == "JPEG"
    assert widget.study.indication == sample_study().indication
    # The request-size estimate is close to the real request body.
    real = len(widget.client.prepare(widget.study).body)
    estimate = widget.studypanel.estimate_bytes()
    assert abs(estimate - real) / real < 0.01
    assert "request ≈ 0.7" in widget.studypanel.size.value


def test_generate_without_frontal_is_explained(widget: ReportGenWidget) -> None:
    with pytest.raises(StudyError, match="frontal image is required"):
        widget.generate()
    assert "frontal image is required" in widget.studypanel.error.value
    widget.generate_button.click()  # the button explains instead of raising
    assert widget.runner.job is None
    assert widget.history == []


def test_bad_path_is_explained_next_to_the_field(widget: ReportGenWidget, tmp_path: Path) -> None:
    slot = widget.studypanel.slots["lateral"]
    slot.path.set_state({"value": str(tmp_path / "missing.png")})
    assert "cxr-error" in slot.error.value and "missing.png" in slot.error.value
    assert slot.source is None
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    slot.path.set_state({"value": str(text)})
    assert "cxr-error" in slot.error.value and slot.source is None


def test_server_path_loads_a_png(widget: ReportGenWidget, tmp_path: Path, rg1_path: Path) -> None:
    png = tmp_path / "frontal.png"
    png.write_bytes(prepare_image(rg1_path).png)
    slot = widget.studypanel.slots["frontal"]
    slot.path.set_state({"value": str(png)})
    assert slot.error.value == ""
    assert widget.study.frontal_image == str(png)
    assert "PNG 768x816" in slot.info.value
    assert widget.viewer.width > 0 and widget.viewer.image[:3] == b"\xff\xd8\xff"


# --- uploads -------------------------------------------------------------------------


def test_upload_png_in_chunks(widget: ReportGenWidget, frontend: list, rg1_path: Path) -> None:
    data = prepare_image(rg1_path, full_resolution=True).png
    slot = widget.studypanel.slots["frontal"]
    upload_file(slot.upload, "chest.png", data, chunk=256 * 1024)
    assert slot.upload.state == "done", slot.upload.status
    assert widget.study.frontal_image == data
    assert "PNG 1841x1955" in slot.info.value
    offsets = [m["offset"] for m in acks(frontend, slot.upload.model_id) if m["type"] == "ack"]
    assert offsets == [*range(0, len(data), 256 * 1024), len(data)]
    assert acks(frontend, slot.upload.model_id)[-1]["type"] == "done"


def test_upload_dicom_over_10_mib(widget: ReportGenWidget, tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent / "browser"))
    from big_dicom import write_big_dicom

    path = tmp_path / "big.dcm"
    width, height = write_big_dicom(path, width=2700, height=2800)
    data = path.read_bytes()
    assert len(data) > 10 * 1024 * 1024  # past Tornado's websocket message limit
    slot = widget.studypanel.slots["frontal"]
    upload_file(slot.upload, "big.dcm", data)
    assert slot.upload.state == "done", slot.upload.status
    assert f"DICOM {width}x{height}" in slot.info.value
    assert prepare_image(widget.study.frontal_image).original_size == (width, height)


def test_upload_rg1_dicom_then_generate(widget: ReportGenWidget, rg1_path: Path) -> None:
    slot = widget.studypanel.slots["frontal"]
    upload_file(slot.upload, "RG1_UNCR.dcm", rg1_path.read_bytes())
    report = widget.generate()
    assert report.image_size == (1841, 1955)
    assert len(widget.viewer.boxes) == report.n_boxes


def test_upload_errors_are_reported_not_silent(widget: ReportGenWidget, frontend: list) -> None:
    slot = widget.studypanel.slots["frontal"]
    up = slot.upload
    up.max_bytes = 1000
    browser_message(up, {"type": "start", "id": "a", "name": "huge.dcm", "size": 5000})
    assert up.state == "error" and "over the upload limit" in up.status
    assert "path" in up.status  # says what to do
    assert acks(frontend, up.model_id)[-1]["type"] == "error"

    up.max_bytes = 10_000
    browser_message(up, {"type": "start", "id": "b", "name": "x.png", "size": 10})
    browser_message(up, {"type": "chunk", "id": "b", "offset": 4}, b"abcd")
    assert up.state == "error" and "out of order" in up.status

    upload_file(up, "notes.png", b"hello, this is not an image")
    assert up.state == "error"
    assert "cxr-error" in slot.error.value and slot.source is None

    browser_message(up, {"type": "error", "message": "NotReadableError"})
    assert up.state == "error" and "NotReadableError" in up.status


# --- viewer geometry and linkage ----------------------------------------------------


def test_boxes_sent_to_viewer_match_box_to_pixels(widget: ReportGenWidget) -> None:
    widget.load_study(sample_study("nema"))
    report = widget.generate()
    viewer = widget.viewer
    w, h = viewer.width, viewer.height
    assert max(w, h) <= 1024
    assert Image.open(io.BytesIO(viewer.image)).size == (w, h)
    for frame in ("center_crop", "full"):
        viewer.set_state({"frame": frame})
        expected = [
            (i, b.to_pixels(w, h, frame)) for i, f in enumerate(report.findings) for b in f.boxes
        ]
        got = [(s["finding"], (s["x0"], s["y0"], s["x1"], s["y1"])) for s in viewer.boxes]
        assert got == expected
        assert len(viewer.boxes) == report.n_boxes
    assert viewer.crop == dict(zip(("x", "y", "size"), center_square(w, h), strict=True))
    rows = viewer.findings
    assert [r["color"] for r in rows] == [report.color(i) for i in range(len(rows))]
    assert [r["n_boxes"] for r in rows] == [len(f.boxes) for f in report.findings]
    assert any(not r["grounded"] for r in rows)  # the demo has an ungrounded finding
    assert viewer.demo and viewer.report_text == report.text


def test_select_finding_both_ways(widget: ReportGenWidget) -> None:
    widget.load_study(sample_study("nema"))
    widget.generate()
    widget.select_finding(2)
    assert widget.viewer.selected == 2
    widget.viewer.set_state({"selected": 1})  # a click in the page
    assert widget.selected_finding == 1
    widget.select_finding(None)
    assert widget.viewer.selected == -1 and widget.selected_finding is None
    with pytest.raises(IndexError, match=f"{len(widget.report.findings)} findings"):
        widget.select_finding(9)


def test_prior_view_shows_its_image_without_boxes(widget: ReportGenWidget) -> None:
    widget.load_study(sample_study("nema", with_prior=True))
    widget.generate()
    viewer = widget.viewer
    assert viewer.views == ["frontal", "prior"]
    frontal_image = viewer.image
    viewer.set_state({"view": "prior"})
    assert viewer.image != frontal_image and viewer.boxes == []
    viewer.set_state({"view": "frontal"})
    assert viewer.image == frontal_image and len(viewer.boxes) == widget.report.n_boxes


# --- running ---------------------------------------------------------------------------


def test_generate_button_runs_in_background_with_cancel(frontend: list) -> None:
    w = ReportGenWidget(DemoBackend(latency=0.6))
    w.load_study(sample_study("nema"))
    w.generate_button.click()
    assert w.runner.busy and w.generate_button.disabled
    assert w.runner.cancel_button.layout.display == ""
    assert "cxr-spinner" in w.runner.status.value and "Generating" in w.runner.status.value
    w.runner.cancel_button.click()
    assert not w.runner.busy and not w.generate_button.disabled
    assert "discarded" in w.runner.status.value
    job = w.runner.job
    job_thread_done = job.done.wait(5)
    assert job_thread_done
    import time

    time.sleep(0.9)  # the cancelled request finishes; its result must be dropped
    assert w.history == [] and w.report is None

    w.generate_button.click()
    assert w.wait(10)
    assert len(w.history) == 1 and w.report is w.history[0].report
    assert w.runner.status.value == ""


def test_error_is_shown_and_last_good_report_stays(widget: ReportGenWidget) -> None:
    widget.load_study(sample_study("nema"))
    good = widget.generate()
    widget.client = unreachable_client()
    with pytest.raises(EndpointConnectionError):
        widget.generate()
    assert "could not connect" in widget.run_error.value
    assert widget.report is good and len(widget.history) == 1
    widget.run_error.value = ""
    widget.generate_button.click()
    assert widget.wait(30)
    assert "Generation failed" in widget.run_error.value
    assert "could not connect" in widget.run_error.value
    assert "last report stays" in widget.run_error.value
    assert widget.report is good and len(widget.viewer.boxes) == good.n_boxes


def test_history_grows_and_switches_back(widget: ReportGenWidget) -> None:
    widget.load_study(sample_study("nema"))
    first = widget.generate()
    widget.load_study(sample_study("nema", with_prior=True))
    second = widget.generate()
    history = widget.history
    assert [r.report for r in history] == [first, second]
    assert "prior" not in history[0].summary and "prior" in history[1].summary
    assert "Cough" not in history[1].summary  # no patient text
    labels = [label for label, value in widget.history_select.options if value >= 0]
    assert (
        labels[0].startswith("run 1 of 2 — ")
        and f"demo (offline), {len(first.findings)} findings" in labels[0]
    )
    assert labels[1].startswith("run 2 of 2")
    widget.history_select.set_state({"index": 1})  # pick run 1 in the page
    assert widget.report is first
    summary, report, *_ = widget.history[0]
    assert report is first and summary == history[0].summary


def test_agenerate_and_the_button_on_a_running_loop(widget: ReportGenWidget) -> None:
    """As in a kernel: results of background runs are applied on the event loop."""
    widget.load_study(sample_study("nema"))

    async def main() -> None:
        report = await widget.agenerate()
        assert isinstance(report, Report) and widget.report is report
        widget.generate_button.click()
        for _ in range(200):
            if not widget.runner.busy:
                break
            await asyncio.sleep(0.05)
        assert len(widget.history) == 2 and widget.report is widget.history[1].report

    asyncio.run(main())


def test_test_connection_reports_success_and_errors(widget: ReportGenWidget) -> None:
    widget.endpoint.test_button.click()
    assert widget.wait(30)
    assert "OK: demo (offline) answered" in widget.endpoint.result.value
    widget.client = unreachable_client()
    widget.endpoint.test_button.click()
    assert widget.wait(30)
    assert "Test failed" in widget.endpoint.result.value
    assert "could not connect" in widget.endpoint.result.value


# --- exports -----------------------------------------------------------------------------


def test_exports_written_and_parse_back(
    widget: ReportGenWidget, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    widget.load_study(sample_study("nema"))
    report = widget.generate()
    paths = widget.export()
    assert all(p.parent == Path("cxr-exports") for p in paths.values())
    assert Report.from_json(paths["json"].read_text()) == report
    rows = list(csv.DictReader(io.StringIO(paths["csv"].read_text())))
    assert len(rows) == len(report.to_records())
    assert Image.open(paths["png"]).size == (1841, 1955)  # full resolution
    for kind, path in paths.items():
        assert str(path) in widget.export_paths.value, kind

    widget.export_buttons["csv"].click()
    assert widget.wait(30)
    assert widget.export_paths.value.count(".csv") == 1


# --- secrets -------------------------------------------------------------------------------


def test_typed_key_never_in_widget_state(frontend: list, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CXR_ENDPOINT_KEY", raising=False)
    key = "k3y-" + "x" * 28
    w = ReportGenWidget()
    panel = w.endpoint
    w.endpoint_toggle.set_state({"value": True})
    panel.mode.set_state({"index": 2})  # Scoring URI + key
    panel.scoring_uri.set_state({"value": "https://ep.eastus.inference.ml.azure.com/score"})
    panel.password.set_state({"value": key})  # typed, then Enter
    assert panel.password.value == ""
    assert panel._key == key
    assert "typed (32 characters" in panel.key_status.value
    panel.use_button.click()
    assert isinstance(w.client, ReportGenClient) and w.client.config.has_key
    assert "ep.eastus.inference.ml.azure.com" in w.header.value

    assert key not in state_text(w)
    everything = json.dumps(widgets.Widget.get_manager_state(), default=str)
    assert key not in everything
    assert key not in sent_text(frontend)  # never sent to the page, not even echoed
    assert key not in repr(w) and key not in repr(w.client)


def test_key_from_environment_is_named_not_shown(
    frontend: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CXR_ENDPOINT_KEY", "env-secret-value-123")
    w = ReportGenWidget()
    w.endpoint.mode.value = "uri"
    assert "$CXR_ENDPOINT_KEY" in w.endpoint.key_status.value
    w.endpoint.scoring_uri.value = "https://ep.eastus.inference.ml.azure.com/score"
    w.endpoint.use()
    assert w.client.config.key_source == "$CXR_ENDPOINT_KEY"
    assert "env-secret-value-123" not in state_text(w) + sent_text(frontend)


def test_bad_scoring_uri_is_explained(widget: ReportGenWidget) -> None:
    widget.endpoint.mode.value = "uri"
    widget.endpoint.scoring_uri.value = "ftp://nowhere"
    widget.endpoint.use_button.click()
    assert "cxr-error" in widget.endpoint.result.value
    assert "http(s) URL" in widget.endpoint.result.value
    assert isinstance(widget.client, DemoBackend)


def test_device_code_prompt_shown_in_panel(widget: ReportGenWidget) -> None:
    from datetime import datetime, timezone

    panel = widget.endpoint
    panel.credential.value = "device_code"
    credential = panel._credential()
    assert type(credential).__name__ == "DeviceCodeCredential"
    assert credential._prompt_callback == panel._device_code_prompt
    credential._prompt_callback(
        "https://microsoft.com/devicelogin",
        "ABCD-1234",
        datetime(2030, 1, 1, 12, 30, tzinfo=timezone.utc),
    )
    assert "ABCD-1234" in panel.device_code.value
    assert "https://microsoft.com/devicelogin" in panel.device_code.value


def test_local_endpoint_with_typed_key_and_a_wrong_key(
    frontend: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cxr_widgets import LocalEndpoint

    monkeypatch.delenv("CXR_ENDPOINT_KEY", raising=False)
    key = "local-key-" + "y" * 20
    with LocalEndpoint(key=key) as endpoint:
        w = ReportGenWidget()
        w.load_study(sample_study("nema"))
        panel = w.endpoint
        panel.mode.value = "uri"
        panel.scoring_uri.value = endpoint.scoring_uri
        panel.password.set_state({"value": "wrong-key-" + "z" * 20})
        panel.use()
        with pytest.raises(Exception, match="refused the credentials"):
            w.generate()
        assert "refused the credentials (401)" in w.run_error.value
        panel.password.set_state({"value": key})
        panel.use()
        report = w.generate()
        assert len(w.viewer.boxes) == report.n_boxes
        assert report.source == w.client.label
        assert key not in state_text(w) + sent_text(frontend)


def test_study_summary_has_no_patient_text(widget: ReportGenWidget, rg1_path: Path) -> None:
    study = Study(rg1_path, indication="Fell from a horse, Jane Doe", prior_report="Normal.")
    widget.load_study(study)
    widget.generate()
    assert "Jane" not in widget.history[0].summary
    assert "indication" in widget.history[0].summary


def test_notebook_saved_with_widget_state_holds_no_key(
    tmp_path: Path, isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nbclient executes a notebook that types a key into the panel, saving widget state."""
    import nbformat
    from conftest import isolated_env
    from nbclient import NotebookClient

    key = "typed-in-notebook-" + "q" * 20
    for name, value in isolated_env(isolated_home).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CXR_TEST_TYPED_KEY", key)
    monkeypatch.delenv("CXR_ENDPOINT_KEY", raising=False)
    cells = [
        "import os\nfrom cxr_widgets import ReportGenWidget, sample_study\n"
        "w = ReportGenWidget(demo_latency=0)\nw",
        "w.load_study(sample_study('nema'))\nw.generate()\nw.endpoint.mode.value = 'uri'\n"
        "w.endpoint.scoring_uri.value = 'https://ep.eastus.inference.ml.azure.com/score'\n"
        "w.endpoint.password.set_state({'value': os.environ['CXR_TEST_TYPED_KEY']})\n"
        "w.endpoint.use()\nprint('has key:', w.client.config.has_key)",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(nb, timeout=120, kernel_name="python3", store_widget_state=True).execute(
        cwd=str(tmp_path)
    )
    text = nbformat.writes(nb)
    assert "has key: True" in text
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    assert len(state) > 50 and any(
        s["model_name"] == "AnyModel" and "findings" in s["state"] for s in state.values()
    )
    assert key not in text


def test_show_report_with_warnings_over_the_loaded_image(widget: ReportGenWidget) -> None:
    from cxr_widgets import Box, Finding

    widget.load_study(sample_study("nema"))
    report = Report(
        findings=[Finding("Opacity.", [Box(0.1, 0.2, 0.3, 0.4)]), Finding("Normal heart.")],
        warnings=["finding 3: box coordinate 1.5 is outside 0..1"],
        image_size=(1841, 1955),
    )
    widget.show_report(report)
    viewer = widget.viewer
    assert widget.report is report and viewer.warnings == report.warnings
    assert viewer.width > 0 and len(viewer.boxes) == 1
    corners = report.findings[0].boxes[0].to_pixels(viewer.width, viewer.height)
    assert tuple(viewer.boxes[0][k] for k in ("x0", "y0", "x1", "y1")) == corners
    assert not viewer.demo and [r["grounded"] for r in viewer.findings] == [True, False]
    widget.clear()
    assert widget.report is None and viewer.boxes == [] and viewer.findings == []
    widget.show_report(Report(findings=report.findings, image_size=(2000, 1000)))
    assert "boxes may be misplaced" in viewer.warnings[-1]
    assert repr(widget) == "<ReportGenWidget endpoint='demo (offline)', 0 runs, demo>"


def test_workspace_sign_in_runs_in_background_and_explains_errors(
    widget: ReportGenWidget, tmp_path: Path
) -> None:
    panel = widget.endpoint
    panel.mode.value = "workspace"
    panel.use_button.click()
    assert "Endpoint name is empty" in panel.result.value
    panel.endpoint_name.value = "my-endpoint"
    panel.config_path.value = str(tmp_path)  # a folder without config.json
    panel.use_button.click()
    assert widget.runner.busy or widget.runner.job is not None
    assert widget.wait(60)
    assert "no workspace config.json" in panel.result.value
    assert isinstance(widget.client, DemoBackend)
