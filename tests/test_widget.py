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
from cxr_widgets.errors import EndpointConnectionError, RequestTooLargeError
from cxr_widgets.local.demo_findings import RECORDED_LABEL
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
    header = w.header
    assert header.demo and "DEMO" in header.demo_badge
    assert "offline, no model" in header.demo_badge  # each answer says what it is
    assert "hash of its frontal image" in header.demo_choice
    assert header.endpoint == "demo (offline)"
    assert header.research == "For research only, not for clinical use."
    assert "cxr-widget" in w._dom_classes


def test_real_client_has_no_demo_badge_and_shows_its_endpoint(widget: ReportGenWidget) -> None:
    client = unreachable_client()
    widget.client = client
    assert not widget.header.demo
    assert widget.header.endpoint == client.label
    assert f"127.0.0.1:{client.config.scoring_uri.split(':')[2].split('/')[0]}" in client.label
    with pytest.raises(TypeError, match="ReportGenerator"):
        widget.client = "http://example.org/score"  # type: ignore[assignment]


# --- study ---------------------------------------------------------------------------


def test_sample_button_loads_microsofts_sample(widget: ReportGenWidget) -> None:
    widget.studypanel.sample_button.click()
    frontal = widget.studypanel.slots["frontal"]
    assert "1024x918" in frontal.info.summary
    assert frontal.info.slot == "frontal" and frontal.info.label == "cxr_frontal.jpg"
    assert widget.studypanel.slots["lateral"].info.label == "cxr_lateral.jpg"
    assert Image.open(io.BytesIO(frontal.thumb.image)).format == "JPEG"
    assert frontal.thumb.alt == "Frontal image as it will be sent (cxr_frontal.jpg)"
    assert widget.study.indication == sample_study().indication
    # An empty comparison is sent as "None" (as the official clients do) but not shown as typed.
    assert sample_study().comparison == "None" and widget.studypanel.texts["comparison"].value == ""
    assert widget.study.comparison == "None"
    # The request size shown is the real request body's, to the byte.
    real = len(widget.client.prepare(widget.study).body)
    assert widget.runner.status.request_bytes == real
    assert widget.runner.status.request_budget == widget.request_budget > real


def test_generate_without_frontal_is_explained(widget: ReportGenWidget) -> None:
    with pytest.raises(StudyError, match="frontal image is required"):
        widget.generate()
    status = widget.runner.status
    assert "frontal image is required" in status.error
    status.clear()
    widget.generate_button.click()  # the button explains instead of raising
    assert "frontal image is required" in status.error and status.error_title
    assert widget.runner.job is None
    assert widget.history == []
    # Shown where the user looks: beside the Generate button, in the same row.
    run_bar = next(
        c for c in all_widgets(widget) if isinstance(c, widgets.HBox) and status in c.children
    )
    assert widget.generate_button in run_bar.children
    # Loading a frontal image takes the message away (it no longer applies).
    widget.studypanel.load_sample()
    assert status.error == ""


def test_bad_path_is_explained_next_to_the_field(widget: ReportGenWidget, tmp_path: Path) -> None:
    slot = widget.studypanel.slots["lateral"]
    slot.path.set_state({"value": str(tmp_path / "missing.png")})
    assert "missing.png" in slot.info.error
    assert slot.source is None
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    slot.path.set_state({"value": str(text)})
    assert "notes.png" in slot.info.error and slot.source is None


def test_server_path_loads_a_png(widget: ReportGenWidget, tmp_path: Path, rg1_path: Path) -> None:
    png = tmp_path / "frontal.png"
    png.write_bytes(prepare_image(rg1_path).png)
    slot = widget.studypanel.slots["frontal"]
    slot.path.set_state({"value": str(png)})
    assert slot.info.error == ""
    assert widget.study.frontal_image == str(png)
    assert "PNG 768x816" in slot.info.summary
    assert (widget.viewer.width, widget.viewer.height) == (768, 816)
    assert widget.viewer.images["frontal"]["ow"] == 768 and widget.viewer.frontal_pixels


# --- uploads -------------------------------------------------------------------------


def test_upload_png_in_chunks(widget: ReportGenWidget, frontend: list, rg1_path: Path) -> None:
    data = prepare_image(rg1_path, full_resolution=True).png
    slot = widget.studypanel.slots["frontal"]
    upload_file(slot.upload, "chest.png", data, chunk=256 * 1024)
    assert slot.upload.state == "done", slot.upload.status
    assert widget.study.frontal_image == data
    assert "PNG 1841x1955" in slot.info.summary
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
    assert f"DICOM {width}x{height}" in slot.info.summary
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
    assert "notes.png" in slot.info.error and slot.source is None
    assert up.status.startswith("notes.png") and up.status.count("notes.png") == 1

    browser_message(up, {"type": "error", "message": "NotReadableError"})
    assert up.state == "error" and "NotReadableError" in up.status


# --- viewer geometry and linkage ----------------------------------------------------


def test_boxes_sent_to_viewer_match_box_to_pixels(widget: ReportGenWidget) -> None:
    widget.load_study(sample_study("nema"))
    report = widget.generate()
    viewer = widget.viewer
    w, h = viewer.width, viewer.height  # the original image: boxes follow it at any zoom
    assert (w, h) == widget.studypanel.slots["frontal"].prepared.original_size
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
    with pytest.raises(IndexError, match=f"the report has {len(widget.report.findings)} findings"):
        widget.select_finding(9)


def test_prior_view_shows_its_image_without_boxes(widget: ReportGenWidget) -> None:
    widget.load_study(sample_study("nema", with_prior=True))
    widget.generate()
    viewer = widget.viewer
    assert viewer.views == ["frontal", "prior"]
    assert viewer.frontal_pixels and not viewer.prior_pixels  # sent when first shown
    viewer.set_state({"view": "prior"})
    assert viewer.prior_pixels and viewer.prior_pixels != viewer.frontal_pixels
    # Boxes refer to the frontal image: the browser draws them on frontal panes only.
    assert len(viewer.boxes) == widget.report.n_boxes


# --- running ---------------------------------------------------------------------------


def test_generate_button_runs_in_background_with_cancel(frontend: list) -> None:
    w = ReportGenWidget(DemoBackend(latency=0.6))
    w.load_study(sample_study("nema"))
    status = w.runner.status
    w.generate_button.click()
    assert w.runner.busy and w.generate_button.disabled
    assert w.runner.cancel_button.layout.display == ""
    assert status.busy and status.busy_label == "Generating on demo (offline)"
    w.runner.cancel_button.click()
    assert not w.runner.busy and not w.generate_button.disabled
    assert not status.busy and "discarded" in status.notice
    job = w.runner.job
    job.thread.join(10)  # the cancelled request finishes; its result must be dropped
    assert not job.thread.is_alive()
    assert w.history == [] and w.report is None
    assert w.client.requests == 1  # it was answered, and discarded

    w.generate_button.click()
    assert status.notice == ""  # the cancel note spoke of the previous attempt
    assert w.wait(10)
    assert len(w.history) == 1 and w.report is w.history[0].report
    assert not status.busy and status.busy_label == "" and status.error == ""


def test_error_is_shown_and_last_good_report_stays(widget: ReportGenWidget) -> None:
    widget.load_study(sample_study("nema"))
    good = widget.generate()
    widget.client = unreachable_client()
    with pytest.raises(EndpointConnectionError):
        widget.generate()
    status = widget.runner.status
    assert "could not connect" in status.error
    assert widget.report is good and len(widget.history) == 1
    status.clear()
    widget.generate_button.click()
    assert widget.wait(30)
    assert status.error_title == "Generation failed."
    assert "could not connect" in status.error
    assert "last report stays" in status.error
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
    n = len(first.findings)
    assert labels[0].startswith("run 1 of 2 — ") and f"demo (offline), {n} findings" in labels[0]
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
        # The job ends on this loop (its result is applied here): wait for it off the loop.
        assert await asyncio.to_thread(widget.runner.job.done.wait, 30)
        assert len(widget.history) == 2 and widget.report is widget.history[1].report

    asyncio.run(main())


def test_test_connection_reports_success_and_errors(widget: ReportGenWidget) -> None:
    widget.endpoint.test_button.click()
    assert widget.wait(30)
    result = widget.endpoint.result
    assert "OK: demo (offline) answered" in result.text and result.kind == "ok"
    widget.client = unreachable_client()
    assert result.text == ""  # it spoke of the previous endpoint
    widget.endpoint.test_button.click()
    assert widget.wait(30)
    assert "Test failed" in result.text and result.kind == "error"
    assert "could not connect" in result.text


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
    assert {row["demo"] for row in rows} == {"True"}  # canned findings say so in the CSV too
    with Image.open(paths["png"]) as png:
        assert png.size == (1841, 1955)  # full resolution
    assert widget.export_list.written == [
        {"kind": kind, "path": str(path)} for kind, path in paths.items()
    ]

    widget.export_buttons["csv"].click()
    assert widget.wait(30)
    written = widget.export_list.written
    assert [w["kind"] for w in written] == ["csv"] and written[0]["path"] != str(paths["csv"])


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
    assert "typed (32 characters" in panel.key_status.text
    panel.use_button.click()
    assert isinstance(w.client, ReportGenClient) and w.client.config.has_key
    assert "ep.eastus.inference.ml.azure.com" in w.header.endpoint

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
    assert "$CXR_ENDPOINT_KEY" in w.endpoint.key_status.text
    w.endpoint.scoring_uri.value = "https://ep.eastus.inference.ml.azure.com/score"
    w.endpoint.use()
    assert w.client.config.key_source == "$CXR_ENDPOINT_KEY"
    assert "env-secret-value-123" not in state_text(w) + sent_text(frontend)


def test_bad_scoring_uri_is_explained(widget: ReportGenWidget) -> None:
    widget.endpoint.mode.value = "uri"
    widget.endpoint.scoring_uri.value = "ftp://nowhere"
    widget.endpoint.use_button.click()
    assert widget.endpoint.result.kind == "error"
    assert "http(s) URL" in widget.endpoint.result.text
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
    assert panel.device_code.code == "ABCD-1234"
    assert panel.device_code.uri == "https://microsoft.com/devicelogin"
    assert panel.device_code.expires == "12:30"


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
        assert "refused the credentials (401)" in w.runner.status.error
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
    from browser.jupyter_harness import isolated_env
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
    assert widget.report is report and viewer.warnings == list(report.warnings)
    assert viewer.width > 0 and len(viewer.boxes) == 1
    corners = report.findings[0].boxes[0].to_pixels(viewer.width, viewer.height)
    assert tuple(viewer.boxes[0][k] for k in ("x0", "y0", "x1", "y1")) == corners
    assert not viewer.demo and [r["grounded"] for r in viewer.findings] == [True, False]
    widget.clear()
    assert widget.report is None and viewer.boxes == [] and viewer.findings == []
    widget.show_report(Report(findings=report.findings, image_size=(2000, 1000)))
    assert "boxes may be misplaced" in viewer.warnings[-1]
    assert repr(widget) == "<ReportGenWidget endpoint='demo (offline)', 0 runs, demo>"


def test_show_report_over_the_image_given_with_it(widget: ReportGenWidget, tmp_path: Path) -> None:
    """A report holds no image: show_report(image=...) shows it, exports and the static
    view draw it on that image, not on the loaded study's."""
    from cxr_widgets import Box, Finding

    widget.load_study(sample_study("nema"))  # 1841x1955 loaded in the form
    given = Image.new("L", (400, 300), 200)
    report = Report(
        findings=[Finding("Opacity.", [Box(0.1, 0.2, 0.3, 0.4)])], image_size=(400, 300)
    )
    widget.show_report(report, image=given)
    viewer = widget.viewer
    assert (viewer.width, viewer.height) == (400, 300) and viewer.frontal_source is given
    assert not any("misplaced" in w for w in viewer.warnings)
    assert widget._export_what()[1] is given and widget._static_view().count("<img") == 1
    widget.export_dir = tmp_path
    png = widget.export(("png",))["png"]
    with Image.open(png) as drawn:
        assert drawn.size[0] >= 400 and drawn.getpixel((5, 5))[:3] == (200, 200, 200)
    # Without an image it is shown over the loaded study's frontal image.
    widget.show_report(report.replace(image_size=(1841, 1955)))
    assert (viewer.width, viewer.height) == (1841, 1955)
    assert widget._export_what()[1] == widget.studypanel.slots["frontal"].source


def viewer_updates(frontend: list, viewer: Any, since: int) -> list[dict[str, Any]]:
    """The state updates sent to ``viewer``'s front end since message ``since``."""
    return [
        data["state"]
        for _kind, comm_id, data, _buffers in frontend[since:]
        if comm_id == viewer.model_id and data.get("method") == "update"
    ]


def test_show_report_on_a_new_image_sends_its_preview_with_the_new_boxes_first(
    widget: ReportGenWidget, frontend: list
) -> None:
    """The quick preview and the new report's boxes go out before the overview is made,
    never the previous report's boxes over the new image."""
    widget.load_study(sample_study())
    old = widget.generate()
    image = Image.open(sample_study().frontal_image).convert("L").point(lambda v: min(255, v + 1))
    new = old.replace(findings=[f for f in old.findings if f.boxes][:1])
    mark = len(frontend)
    widget.show_report(new, image=image)
    updates = viewer_updates(frontend, widget.viewer, mark)
    first = updates[0]
    assert first["images"]["frontal"]["preview"] is True
    assert first["images"]["frontal"]["width"] == image.width
    assert len(first["boxes"]) == new.n_boxes != old.n_boxes
    assert {b["finding"] for b in first["boxes"]} == {0}
    later = [u for u in updates[1:] if "images" in u]
    assert later and "preview" not in later[-1]["images"]["frontal"]  # then the overview
    assert widget.viewer.boxes == first["boxes"]


class DisplayHandle:
    """What IPython's ``display(..., display_id=True)`` returns: updated in place."""

    def __init__(self) -> None:
        self.shown: list[str] = []

    def update(self, obj: Any) -> None:
        self.shown.append(obj.data)


def test_static_view_is_one_small_jpeg_and_kept_per_run(
    widget: ReportGenWidget, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cxr_widgets.widget.panel as panel

    drawn = []
    real = panel.static_view
    monkeypatch.setattr(panel, "static_view", lambda *a: drawn.append(a[0]) or real(*a))
    widget._fallback = handle = DisplayHandle()
    widget.load_study(sample_study())
    widget.generate()
    view = handle.shown[-1]
    assert view.count("<img") == 1 and "data:image/jpeg;base64," in view
    assert "image/png" not in view and len(view) < 100_000
    widget.load_study(sample_study("nema"))
    widget.generate()
    drawn_reports = [id(r) for r in drawn if r is not None]
    assert drawn_reports == [id(run.report) for run in widget.history]  # each drawn once
    assert handle.shown[-1] != view
    before = len(drawn)
    widget.history_select.value = 0  # back to run 1: the same view, not drawn again
    assert handle.shown[-1] == view and len(drawn) == before


def test_workspace_sign_in_runs_in_background_and_explains_errors(
    widget: ReportGenWidget, tmp_path: Path
) -> None:
    panel = widget.endpoint
    panel.mode.value = "workspace"
    panel.use_button.click()
    assert "Endpoint name is empty" in panel.result.text
    panel.endpoint_name.value = "my-endpoint"
    panel.config_path.value = str(tmp_path)  # a folder without config.json
    panel.use_button.click()
    assert widget.runner.busy or widget.runner.job is not None
    assert widget.wait(60)
    assert "no workspace config.json" in panel.result.text
    assert isinstance(widget.client, DemoBackend)


# --- state as data; prepared once -------------------------------------------------------


def html_values(root: widgets.Widget) -> dict[str, str]:
    return {w.model_id: w.value for w in all_widgets(root) if isinstance(w, widgets.HTML)}


def test_no_html_is_built_from_state(frontend: list, tmp_path: Path) -> None:
    """Every HTML widget keeps the text it was built with, whatever happens in the panel."""
    w = ReportGenWidget(DemoBackend(), export_dir=tmp_path)
    before = html_values(w)
    w.generate_button.click()  # error: no frontal
    w.load_study(sample_study("nema", with_prior=True))
    w.generate()
    w.export(("json",))
    w.client = unreachable_client()
    with pytest.raises(EndpointConnectionError):
        w.generate()
    w.endpoint.mode.value = "uri"
    w.endpoint.use()
    w.endpoint._device_code_prompt("https://microsoft.com/devicelogin", "CODE-1", None)
    after = html_values(w)
    assert after == {k: v for k, v in before.items() if k in after}
    assert all("{" not in v for v in after.values())
    # ...while the typed parts did change.
    assert w.runner.status.error and w.export_list.written and w.endpoint.device_code.code


def test_running_job_sends_no_ticks(frontend: list) -> None:
    """The elapsed time is counted in the page: the kernel sends the start time once."""
    w = ReportGenWidget(DemoBackend(latency=0.5))
    w.load_study(sample_study())
    status = w.runner.status
    mark = len(frontend)
    job = w.start_generate()
    assert job is not None and status.busy_since > 0
    assert job.done.wait(10)
    updates = [
        data["state"]
        for kind, comm_id, data, _ in frontend[mark:]
        if kind == "comm_msg" and comm_id == status.model_id and data.get("method") == "update"
    ]
    # Start (label and time), end: nothing in between, however long the job ran.
    busy = [u for u in updates if "busy_since" in u]
    assert [u["busy_since"] > 0 for u in busy] == [True, False]
    assert len(updates) <= 4, updates


def test_prepared_once_and_the_size_shown_is_the_size_sent(
    widget: ReportGenWidget, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cxr_widgets.images as images

    calls: list[str | None] = []
    real = images.prepare_image

    def counting(source: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("name"))
        return real(source, **kwargs)

    monkeypatch.setattr(images, "prepare_image", counting)
    sent: list[int] = []

    class Recording(DemoBackend):
        def send(self, request: Any) -> Any:
            sent.append(len(request.body))
            return super().send(request)

    widget.client = Recording()
    widget.load_study(sample_study("nema", with_prior=True))
    assert sorted(calls) == ["frontal_image", "prior_image"]
    widget.studypanel.texts["indication"].value = 'Shortness of breath, é and "quotes".'
    shown = widget.runner.status.request_bytes
    widget.generate()
    widget.generate_button.click()
    assert widget.wait(10)
    assert len(calls) == 2  # Generate sent the images prepared on load
    assert sent == [shown, shown]
    # Picking a run restores its prepared images: nothing is prepared again.
    widget.history_select.value = 0
    assert len(calls) == 2
    # Other image options: prepared again, once, and the size follows.
    widget.client = Recording(image_options={"shortest_side": 600})
    assert len(calls) == 4
    assert widget.runner.status.request_bytes < shown
    widget.generate()
    assert sent[-1] == widget.runner.status.request_bytes and len(calls) == 4
    # Options the images cannot be prepared with: said beside Generate, nothing sent.
    widget.client = DemoBackend(image_options={"shortest_side": 100})
    assert "518" in widget.studypanel.slots["frontal"].info.error
    with pytest.raises(StudyError, match="image options"):
        widget.generate()
    assert "image options" in widget.runner.status.error


def test_encode_prepared_lays_out_the_row_as_the_contract_does(rg1_path: Path) -> None:
    from cxr_widgets.contract import encode_study
    from cxr_widgets.widget.study_panel import encode_prepared

    study = Study(rg1_path, prior_image=rg1_path, indication="Cough.", comparison="")
    reference = encode_study(study)
    mine = encode_prepared(study, reference.images)
    assert mine.columns == reference.columns and mine.row == reference.row


def test_budget_comes_from_the_backend(widget: ReportGenWidget) -> None:
    widget.load_study(sample_study())
    widget.client = DemoBackend(request_budget=100_000)
    status = widget.runner.status
    assert status.request_budget == 100_000 < status.request_bytes  # shown as over
    with pytest.raises(RequestTooLargeError):  # and the backend refuses it, as it said
        widget.generate()
    assert "100,000" in status.error
    client = ReportGenClient(
        EndpointConfig("http://127.0.0.1:9/score", key_env=None, max_request_bytes=2_000_000)
    )
    widget.client = client
    assert status.request_budget == client.request_budget == widget.request_budget == 2_000_000


# --- what the user had is kept; status lines follow what is shown -----------------------


def test_history_brings_back_the_study_of_a_run(widget: ReportGenWidget) -> None:
    panel = widget.studypanel
    widget.load_study(sample_study())
    first = widget.generate()
    widget.load_study(sample_study("nema", with_prior=True))
    panel.texts["indication"].value = "Second run."
    second = widget.generate()
    assert widget.viewer.views == ["frontal", "prior"]

    widget.history_select.set_state({"index": 1})  # run 1 of 2, picked in the page
    assert widget.report is first
    assert panel.slots["prior"].source is None
    assert widget.viewer.views == ["frontal", "lateral"]  # Microsoft's sample has a lateral
    assert panel.texts["indication"].value == sample_study().indication
    assert widget.study.columns == widget.history[0].study.columns

    widget.history_select.set_state({"index": 2})
    assert widget.report is second and widget.viewer.views == ["frontal", "prior"]
    assert panel.slots["prior"].prepared is widget.history[1].images["prior_image"]
    assert panel.texts["indication"].value == "Second run."

    # A study being edited is kept while runs are looked at, and comes back.
    panel.texts["indication"].value = "Draft, not generated."
    panel.slots["prior"].clear()
    assert widget.report is None and widget.history_select.value == -1
    widget.history_select.set_state({"index": 1})
    assert widget.report is first
    widget.history_select.set_state({"index": 0})  # current study (not generated)
    assert widget.report is None
    assert panel.texts["indication"].value == "Draft, not generated."
    assert panel.slots["prior"].source is None and panel.slots["frontal"].source is not None


def test_failed_upload_keeps_everything_and_names_the_file(
    widget: ReportGenWidget, frontend: list
) -> None:
    widget.load_study(sample_study("nema", with_prior=True))
    report = widget.generate()
    prior = widget.studypanel.slots["prior"]
    kept = prior.state
    upload_file(prior.upload, "notes.txt", b"hello!")
    assert prior.upload.state == "error" and prior.upload.status.startswith("notes.txt")
    assert "notes.txt" in prior.info.error and "<6 bytes>" not in prior.info.error.split(" ")[0]
    assert prior.state is kept and prior.info.summary  # the prior image stays, and says so
    assert widget.report is report and widget.viewer.views == ["frontal", "prior"]
    assert not widget.export_buttons["json"].disabled
    # load_study with one bad image changes nothing either.
    with pytest.raises(StudyError, match="prior"):
        widget.load_study(Study(sample_study().frontal_image, prior_image=b"not an image"))
    assert prior.state is kept and widget.report is report


def test_status_lines_go_when_what_they_speak_of_goes(
    frontend: list, tmp_path: Path, rg1_path: Path
) -> None:
    w = ReportGenWidget(DemoBackend(latency=0.3), export_dir=tmp_path)
    w.load_study(sample_study())
    w.generate()
    w.load_study(Study(rg1_path))
    w.generate()
    w.export(("json",))
    assert "run2" in w.export_list.written[0]["path"]
    w.history_select.value = 0  # run 1: the files written were run 2's
    assert w.export_list.written == []
    w.history_select.value = 1
    assert w.export_list.written == []  # still gone: a new export shows new files

    # A cancel note speaks of one endpoint: switching endpoint removes it.
    w.generate_button.click()
    w.cancel()
    assert "Cancelled generating on demo" in w.runner.status.notice
    w.endpoint.use()  # the demo again, a new backend
    assert w.runner.status.notice == ""
    w.runner.job.thread.join(10)
    # An error speaks of the study: loading another removes it.
    w.client = unreachable_client()
    with pytest.raises(EndpointConnectionError):
        w.generate()
    assert w.runner.status.error
    w.load_study(sample_study())
    assert w.runner.status.error == ""


def test_saved_notebook_shows_the_report_without_widgets(
    tmp_path: Path, isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Executed and exported to HTML without widget state, the findings are still there."""
    import nbformat
    from browser.jupyter_harness import isolated_env
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    for name, value in isolated_env(isolated_home).items():
        monkeypatch.setenv(name, value)
    cells = [
        "from cxr_widgets import ReportGenWidget, sample_study\n"
        "w = ReportGenWidget(demo_latency=0)\nw",
        "w.load_study(sample_study())\nreport = w.generate()\n"
        "import json\nprint('@@' + json.dumps([f.text for f in report.findings]))",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(nb, timeout=120, kernel_name="python3", store_widget_state=False).execute(
        cwd=str(tmp_path)
    )
    printed = nb.cells[1].outputs[0]["text"]
    findings = json.loads(printed.split("@@", 1)[1])
    outputs = nb.cells[0].outputs
    assert "application/vnd.jupyter.widget-view+json" in outputs[0]["data"]
    static = outputs[1]["data"]["text/html"]  # updated in place when the report was shown
    assert "cxr-static-fallback" in static and "<img" in static and ";base64," in static
    assert all(html_escape(text) in static for text in findings)
    page, _ = HTMLExporter().from_notebook_node(nb)
    assert all(html_escape(text) in page for text in findings)
    assert RECORDED_LABEL.split(" (")[0] in page  # the sample's recorded answer says so


def html_escape(text: str) -> str:
    import html

    return html.escape(text)


def test_hosted_app_downloads_exports_and_reads_no_server_paths(
    frontend: list, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rg1_path: Path
) -> None:
    monkeypatch.setenv("VOILA_KERNEL_ID", "a-kernel")  # what Voilà sets in its kernels
    w = ReportGenWidget(DemoBackend(), export_dir=tmp_path / "exports")
    assert w.download_exports and not w.server_paths
    slot = w.studypanel.slots["frontal"]
    assert slot.path.layout.display == "none"
    slot.path.set_state({"value": str(rg1_path)})  # a page asking for a server file
    assert slot.source is None and "turned off" in slot.info.error
    w.load_study(sample_study())  # the notebook's own code may still name files
    report = w.generate()
    mark = len(frontend)
    w.export_buttons["csv"].click()
    assert w.wait(30)
    sent = [
        (data["content"], buffers)
        for kind, comm_id, data, buffers in frontend[mark:]
        if comm_id == w.export_list.model_id and data.get("method") == "custom"
    ]
    assert len(sent) == 1
    message, buffers = sent[0]
    assert message["type"] == "download" and message["name"].endswith(".csv")
    assert buffers[0].decode() == report.to_csv()
    assert w.export_list.downloaded and w.export_list.written[0]["path"] == message["name"]
    assert not (tmp_path / "exports").exists()  # nothing written on the server
    # Explicit choices win over the place it runs in.
    monkeypatch.delenv("VOILA_KERNEL_ID")
    plain = ReportGenWidget(DemoBackend(), download_exports=True, server_paths=False)
    assert plain.download_exports and not plain.server_paths
    assert ReportGenWidget(DemoBackend()).server_paths
