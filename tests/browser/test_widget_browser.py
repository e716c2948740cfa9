"""ReportGenWidget in real JupyterLab and Chromium: boxes, highlighting, endpoints, uploads.

One notebook per scenario; each test drives the panel through its buttons and
compares what the browser draws with what the kernel holds.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import shutil
import time
from pathlib import Path

import pytest
from big_dicom import write_big_dicom
from jupyter_harness import (
    KEY_ENV,
    JupyterLab,
    WebSocketRecorder,
    collapse_left_sidebar,
    dismiss_popups,
    open_and_run_notebook,
    run_cell,
    save_notebook,
    write_notebook,
)
from PIL import Image

from cxr_widgets import Report

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "docs/images/widget.png"

ROOT = ".cxr-widget"
BOX = ".cxr-widget .cxr-box"
ROW = ".cxr-widget .cxr-row"

WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
SHOW_WIDGET = "from cxr_widgets import ReportGenWidget\nw = ReportGenWidget()\nw"


#: Elements inside the panel whose content is wider than their clipping box.
CLIPPED = """root => [...root.querySelectorAll("*")]
  .filter((e) => !["INPUT", "TEXTAREA", "SELECT", "OPTION"].includes(e.tagName))
  .filter((e) => getComputedStyle(e).overflowX !== "visible" && e.scrollWidth > e.clientWidth + 1)
  .map((e) => `${e.tagName}.${[...e.classList].filter((c) => c.startsWith("cxr")).join(".")}`
              + ` ${e.scrollWidth}px in ${e.clientWidth}px`)"""


def click(page, cls: str) -> None:
    """Click the panel's button with CSS class ``cls`` (e.g. ``cxr-generate``)."""
    page.locator(f"{ROOT} button.{cls}").first.click()


def kernel_json(page, expression: str):
    """Evaluate ``expression`` in the kernel; its value as JSON-decoded Python."""
    out = run_cell(page, f"import json as _j\nprint('@@' + _j.dumps({expression}))")
    line = next(ln for ln in out.splitlines() if ln.startswith("@@"))
    return json.loads(line[2:])


def wait_boxes(page, per_finding: list[int], timeout: float = 60_000) -> None:
    """Wait until the DOM has exactly ``per_finding[i]`` boxes for each finding ``i``."""
    page.wait_for_function(
        """([sel, want]) => {
             const got = want.map(() => 0);
             for (const b of document.querySelectorAll(sel)) got[Number(b.dataset.finding)] += 1;
             return got.length === want.length && got.every((g, i) => g === want[i]);
           }""",
        arg=[BOX, per_finding],
        timeout=timeout,
    )


def expected_boxes(page) -> list[int]:
    """Boxes per finding of the report the kernel-side widget shows."""
    return kernel_json(page, "[len(f.boxes) for f in w.report.findings]")


def generate_in_browser(page) -> list[int]:
    """Click Generate, wait for the kernel's report, then for its boxes in the DOM."""
    click(page, "cxr-generate")
    page.wait_for_selector(f"{ROW}", timeout=60_000)
    per_finding = expected_boxes(page)
    wait_boxes(page, per_finding)
    return per_finding


def click_box(page, finding: int) -> None:
    """Click a visible point of finding ``finding``'s first box (not covered by another box)."""
    point = page.evaluate(
        """(sel) => {
             const box = document.querySelector(sel);
             const r = box.getBoundingClientRect();
             for (let fy = 0.5; fy < 1; fy += 0.1) for (const fx of [0.5, 0.3, 0.7, 0.1, 0.9]) {
               const x = r.left + fx * r.width, y = r.top + fy * r.height;
               const hit = document.elementFromPoint(x, y);
               if (hit && (hit === box || box.contains(hit))) return [x, y];
             }
             return null;
           }""",
        f'{BOX}[data-finding="{finding}"]',
    )
    assert point, f"every point of finding {finding}'s box is covered by another"
    page.mouse.click(*point)


def class_list(page, selector: str) -> list[list[str]]:
    return page.eval_on_selector_all(selector, "els => els.map(e => [...e.classList])")


def wait_upload(page, slot: str, expected: str, timeout: float = 120.0) -> None:
    """Wait until the slot's preparation summary shows ``expected``; fail on an upload error."""
    upload = page.locator(f'{ROOT} .cxr-upload[data-slot="{slot}"]')
    summary = page.locator(f'{ROOT} .cxr-prep[data-slot="{slot}"]')
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if expected in summary.inner_text():
            return
        state = upload.get_attribute("data-state")
        assert state != "error", f"upload failed: {upload.inner_text()}"
        time.sleep(0.25)
    pytest.fail(
        f"upload not done after {timeout:.0f} s: control says {upload.inner_text()!r} "
        f"(state {upload.get_attribute('data-state')}), summary {summary.inner_text()!r}"
    )


@pytest.fixture
def demo_page(page, jupyter_lab: JupyterLab, lab_root: Path):
    write_notebook(lab_root / "demo.ipynb", [SHOW_WIDGET])
    open_and_run_notebook(page, jupyter_lab, "demo.ipynb")
    collapse_left_sidebar(page)
    page.wait_for_selector(ROOT)
    return page


def test_demo_sample_study_boxes_highlight_and_screenshot(demo_page, tmp_path: Path) -> None:
    page = demo_page
    click(page, "cxr-load-sample")
    per_finding = generate_in_browser(page)
    n = sum(per_finding)
    assert n > 0, "the demo report on the sample study should have grounded findings"

    # One SVG box per box of the report, grouped by finding.
    assert page.locator(BOX).count() == n
    for i, count in enumerate(per_finding):
        assert page.locator(f'{BOX}[data-finding="{i}"]').count() == count
    assert page.locator(ROW).count() == len(per_finding)

    # The demo is marked as such.
    assert "DEMO" in page.locator(f"{ROOT} .cxr-demo-badge").inner_text()

    # Hover a grounded row: its boxes are highlighted, every other box dimmed.
    grounded = [i for i, c in enumerate(per_finding) if c]
    target = grounded[-1]
    page.locator(f'{ROW}[data-finding="{target}"]').hover()
    mine = class_list(page, f'{BOX}[data-finding="{target}"]')
    others = class_list(page, f'{BOX}:not([data-finding="{target}"])')
    assert mine and all("cxr-highlight" in c for c in mine)
    assert all("cxr-dim" in c and "cxr-highlight" not in c for c in others)
    if others:  # and they look different once the CSS transition has run
        page.wait_for_function(
            """(t) => {
                 const look = (e) => { const s = getComputedStyle(e);
                                       return [parseFloat(s.strokeWidth), parseFloat(s.opacity)]; };
                 const hi = look(document.querySelector(`.cxr-box[data-finding="${t}"]`));
                 const lo = look(document.querySelector(`.cxr-box:not([data-finding="${t}"])`));
                 return hi[0] > lo[0] && hi[1] > lo[1];
               }""",
            arg=target,
            timeout=5_000,
        )

    # Click a box of another finding: its row is highlighted.
    page.mouse.move(0, 0)
    other = grounded[0]
    click_box(page, other)
    rows = dict(
        page.eval_on_selector_all(ROW, "els => els.map(e => [e.dataset.finding, [...e.classList]])")
    )
    assert "cxr-highlight" in rows[str(other)]
    assert "cxr-selected" in rows[str(other)]  # the click selected it (synced to the kernel)
    assert all("cxr-highlight" not in c for i, c in rows.items() if i != str(other))

    assert kernel_json(page, "w.selected_finding") == other

    # The panel, for the README: boxes, table and DEMO badge, nothing highlighted or overlapping.
    page.mouse.move(0, 0)
    run_cell(page, "w.select_finding(None)")
    page.wait_for_function("() => !document.querySelector('.cxr-widget .cxr-highlight')")
    save_screenshot(page, tmp_path / "widget.png")

    # "central square": the square the model grounds in, drawn over the image.
    page.locator(f"{ROOT} .cxr-toggle-crop input").check()
    square = page.locator(f"{ROOT} .cxr-crop-square")
    square.wait_for()
    # Drawn in pane pixels: map it back to image pixels through the pane's transform.
    pane = page.locator(f"{ROOT} .cxr-pane").first
    scale, tx, ty = (float(pane.get_attribute(f"data-{k}")) for k in ("scale", "tx", "ty"))
    width, height = kernel_json(page, "[w.viewer.width, w.viewer.height]")
    side = float(square.get_attribute("width")) / scale
    assert side == pytest.approx(float(square.get_attribute("height")) / scale, abs=1e-6)
    assert side == pytest.approx(min(width, height), abs=0.01)
    assert (float(square.get_attribute("x")) - tx) / scale == pytest.approx(
        (width - side) // 2, abs=0.01
    )
    assert (float(square.get_attribute("y")) - ty) / scale == pytest.approx(
        (height - side) // 2, abs=0.01
    )

    # "all boxes" off: only the hovered finding's boxes stay visible.
    page.locator(f"{ROOT} .cxr-toggle-boxes input").uncheck()
    visible = f"{BOX}:visible"
    page.wait_for_function("(sel) => document.querySelectorAll(sel).length > 0", arg=BOX)
    assert page.locator(visible).count() == 0
    page.locator(f'{ROW}[data-finding="{target}"]').hover()
    assert page.locator(visible).count() == per_finding[target]
    assert all(
        b == str(target)
        for b in page.eval_on_selector_all(visible, "els => els.map(e => e.dataset.finding)")
    )
    page.locator(f"{ROOT} .cxr-toggle-boxes input").check()
    page.mouse.move(0, 0)

    # A second run with a prior image: the prior is viewable (without boxes, which refer
    # to the frontal image), and the history switches back to the first run.
    run_cell(
        page,
        "from cxr_widgets import Study, sample_study\n"
        "_s = sample_study('nema', with_prior=True)\n"
        "w.load_study(Study(_s.frontal_image, prior_image=_s.prior_image, indication='Cough.',"
        " prior_report=_s.prior_report))\n"
        "_ = w.generate()",
    )
    second = expected_boxes(page)
    wait_boxes(page, second)
    page.locator(f'{ROOT} .cxr-view-tab[data-view="prior"]').click()
    # The viewer draws the prior (its first picture on the canvas) in a pane of its own.
    page.wait_for_function(
        "(sel) => (document.querySelector(sel).dataset.pictureOf || '').startsWith('prior:')",
        arg=f"{ROOT} .cxr-viewer",
    )
    assert page.locator(f'{ROOT} .cxr-pane[data-view="prior"]').count() == 1
    assert page.locator(BOX).count() == 0
    assert "boxes refer to the frontal image" in page.locator(f"{ROOT} .cxr-caption").inner_text()
    page.locator(f'{ROOT} .cxr-view-tab[data-view="frontal"]').click()
    wait_boxes(page, second)

    assert second != per_finding  # the demo answers this other study differently
    page.locator(f"{ROOT} .cxr-history select").select_option(index=1)  # run 1 of 2
    wait_boxes(page, per_finding)
    assert expected_boxes(page) == per_finding
    # ...with its study: run 1 had no prior image, so the form and the viewer have none.
    prior_summary = page.locator(f'{ROOT} .cxr-prep[data-slot="prior"]')
    page.wait_for_function(
        "(sel) => document.querySelectorAll(sel).length === 0",
        arg=f'{ROOT} .cxr-view-tab[data-view="prior"]',
    )
    assert "PNG, JPEG or DICOM" in prior_summary.inner_text()  # the empty slot's hint
    page.locator(f"{ROOT} .cxr-history select").select_option(index=2)  # run 2: prior back
    page.locator(f'{ROOT} .cxr-view-tab[data-view="prior"]').wait_for()
    assert "RG1_J2KI" in prior_summary.inner_text()  # the sample prior

    # Narrower windows: nothing inside the panel is cut off (no element whose content is
    # wider than its clipping box; form fields, whose text may scroll, excepted).
    for width in (1400, 1000, 800):
        page.set_viewport_size({"width": width, "height": 1000})
        page.wait_for_timeout(300)
        clipped = page.eval_on_selector(ROOT, CLIPPED)
        assert not clipped, f"cut off in a {width}px window: {clipped}"


def save_screenshot(page, path: Path) -> None:
    """Screenshot the whole panel to ``path``; also to docs/images with CXR_UPDATE_SCREENSHOT=1."""
    dismiss_popups(page)
    # Tall enough that the whole panel is inside the notebook's scroll area.
    page.set_viewport_size({"width": 1400, "height": 1600})
    panel = page.locator(ROOT).first
    panel.scroll_into_view_if_needed()
    page.wait_for_timeout(300)  # CSS transitions (0.12 s) settle
    panel.screenshot(path=str(path), animations="disabled")
    assert path.stat().st_size > 20_000
    if os.environ.get("CXR_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SCREENSHOT)


def keep_screenshot(page, path: Path) -> None:
    """Screenshot the panel to ``path``; also to docs/images with CXR_UPDATE_SCREENSHOT=1."""
    dismiss_popups(page)
    page.mouse.move(0, 0)
    page.set_viewport_size({"width": 1400, "height": 1700})  # the whole panel in view
    panel = page.locator(ROOT).first
    panel.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    panel.screenshot(path=str(path), animations="disabled")
    if os.environ.get("CXR_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(path, SCREENSHOT.parent / path.name)


def export(page, lab_root: Path, kind: str) -> Path:
    """Click the panel's export button for ``kind``; the written file (shown in the panel)."""
    click(page, f"cxr-export-{kind}")
    shown = page.locator(f"{ROOT} .cxr-exports code", has_text=f".{kind}")
    shown.wait_for(timeout=60_000)
    path = lab_root / shown.inner_text().strip()  # relative to the notebook's folder
    assert path.is_file(), f"the panel shows {path}, which does not exist"
    return path


def test_local_endpoint_generate_without_leaking_key(
    page, jupyter_lab: JupyterLab, lab_root: Path, endpoint_key: str
) -> None:
    frames = WebSocketRecorder(page)
    write_notebook(
        lab_root / "local.ipynb",
        [
            "import os\n"
            "from cxr_widgets import EndpointConfig, LocalEndpoint, ReportGenClient, ReportGenWidget\n"
            f"key = os.environ[{KEY_ENV!r}]\n"
            "endpoint = LocalEndpoint(key=key).start()\n"
            "client = ReportGenClient(EndpointConfig(endpoint.scoring_uri, key=key))\n"
            "del key",
            "w = ReportGenWidget(client=client)\nw",
        ],
    )
    try:
        open_and_run_notebook(page, jupyter_lab, "local.ipynb", timeout=180)
        page.wait_for_selector(ROOT)
        assert page.locator(f"{ROOT} .cxr-demo-badge").count() == 0
        click(page, "cxr-load-sample")
        per_finding = generate_in_browser(page)
        assert page.locator(BOX).count() == sum(per_finding)
        # The report came from the local endpoint: its request id is in the endpoint's log.
        source, label, request_id, logged = kernel_json(
            page,
            "[w.report.source, client.label, w.report.request_id,"
            " [e['request_id'] for e in endpoint.received() if e['status'] == 200]]",
        )
        assert source == label
        assert request_id and request_id in logged
        assert label in page.locator(f"{ROOT} .cxr-endpoint-label").inner_text()

        # Exports, written next to the notebook with their paths shown in the panel.
        exported = {kind: export(page, lab_root, kind) for kind in ("json", "png")}
        saved_report = Report.from_json(exported["json"].read_text())
        assert [len(f.boxes) for f in saved_report.findings] == per_finding

        with Image.open(exported["png"]) as picture:
            assert picture.size == (
                1024,
                918,
            )  # full resolution (Microsoft's sample), not the display JPEG
    finally:
        with contextlib.suppress(Exception):  # the kernel's shutdown stops it too
            run_cell(page, "endpoint.stop()")
    # The key lives only in the kernel: not in the page, not on the websocket, and not in
    # the notebook saved with its widget state.
    assert endpoint_key not in page.content()
    assert not frames.contains(endpoint_key)
    saved = save_notebook(page, lab_root / "local.ipynb")
    assert WIDGET_STATE in saved
    assert endpoint_key not in saved


def test_key_typed_in_panel_drives_local_endpoint_and_is_not_saved(
    page, jupyter_lab: JupyterLab, lab_root: Path, endpoint_key: str
) -> None:
    frames = WebSocketRecorder(page)
    write_notebook(
        lab_root / "typed_key.ipynb",
        [
            "import os\n"
            "from cxr_widgets import LocalEndpoint, ReportGenWidget\n"
            f"endpoint = LocalEndpoint(key=os.environ[{KEY_ENV!r}]).start()",
            SHOW_WIDGET,
        ],
    )
    try:
        open_and_run_notebook(page, jupyter_lab, "typed_key.ipynb", timeout=180)
        page.wait_for_selector(ROOT)
        scoring_uri = kernel_json(page, "endpoint.scoring_uri")
        click(page, "cxr-load-sample")
        click(page, "cxr-generate")  # on the demo first: a good report to keep
        page.wait_for_selector(f"{BOX}")
        demo_boxes = page.locator(BOX).count()

        click(page, "cxr-endpoint-toggle")
        page.locator(f"{ROOT} .cxr-mode button", has_text="Scoring URI + key").click()
        page.locator(f'{ROOT} input[placeholder^="https://<endpoint>"]').fill(scoring_uri)

        def use_key(key: str) -> None:
            field = page.locator(f"{ROOT} .cxr-key input")
            field.fill(key)
            field.press("Enter")  # the kernel takes the key and clears the field
            page.wait_for_function(
                "(sel) => document.querySelector(sel).value === ''", arg=f"{ROOT} .cxr-key input"
            )
            typed = f"key: typed ({len(key)} characters"  # the kernel holds this key
            page.locator(f"{ROOT} .cxr-endpoint-box", has_text=typed).wait_for()
            click(page, "cxr-connect")
            page.locator(f"{ROOT} .cxr-endpoint-label", has_text="127.0.0.1").wait_for()

        # A wrong key: the client's 401 message appears in the panel; the last report stays.
        use_key("wrong-" + endpoint_key[:8])
        assert page.locator(f"{ROOT} .cxr-demo-badge").count() == 0
        click(page, "cxr-generate")
        error = page.locator(f"{ROOT} .cxr-run-error")
        error.wait_for(timeout=60_000)
        assert "401" in error.inner_text(), error.inner_text()
        assert page.locator(BOX).count() == demo_boxes

        # The right key: the local endpoint answers and its boxes are drawn.
        use_key(endpoint_key)
        click(page, "cxr-generate")
        # Wait for the kernel to hold the local endpoint's report (the error line was already
        # cleared when the endpoint changed, so the page alone cannot tell the run is over).
        deadline = time.monotonic() + 60
        while str(kernel_json(page, "w.report.request_id")).startswith("demo-"):
            assert time.monotonic() < deadline, "the local endpoint's report never arrived"
            time.sleep(0.5)
        page.wait_for_function(
            "() => document.querySelector('.cxr-widget button.cxr-generate').disabled === false"
        )
        per_finding = expected_boxes(page)
        wait_boxes(page, per_finding)
        request_id, logged = kernel_json(
            page,
            "[w.report.request_id,"
            " [e['request_id'] for e in endpoint.received() if e['status'] == 200]]",
        )
        assert request_id in logged
    finally:
        with contextlib.suppress(Exception):
            run_cell(page, "endpoint.stop()")
    # The typed key went to the kernel (browser -> kernel) but never came back...
    received_key = any(endpoint_key.encode() in frame for frame in frames.received)
    assert not received_key, "the kernel sent the typed key back to the browser"
    assert endpoint_key not in page.content()
    # ...and the notebook saved with its widget state does not hold it.
    saved = save_notebook(page, lab_root / "typed_key.ipynb")
    assert WIDGET_STATE in saved
    assert endpoint_key not in saved


def test_upload_25mb_dicom_becomes_frontal(
    page, jupyter_lab: JupyterLab, lab_root: Path, tmp_path: Path
) -> None:
    dicom = tmp_path / "big_chest.dcm"
    width, height = write_big_dicom(dicom)
    assert dicom.stat().st_size > 24_000_000  # well past Tornado's 10 MiB message limit

    frames = WebSocketRecorder(page)
    write_notebook(lab_root / "upload.ipynb", [SHOW_WIDGET])
    open_and_run_notebook(page, jupyter_lab, "upload.ipynb")
    page.wait_for_selector(ROOT)
    mark = frames.mark()
    file_input = page.locator(f'{ROOT} .cxr-upload[data-slot="frontal"] input[type="file"]')
    file_input.set_input_files(str(dicom))

    # The panel's preparation summary shows the uploaded file's size...
    wait_upload(page, "frontal", f"{width}x{height}")
    # ...and the kernel's study holds exactly that file, as its frontal image.
    size, nbytes, digest = kernel_json(
        page,
        "[list(__import__('cxr_widgets').prepare_image(w.study.frontal_image).original_size),"
        " len(w.study.frontal_image),"
        " __import__('hashlib').sha256(w.study.frontal_image).hexdigest()]",
    )
    assert size == [width, height]
    assert nbytes == dicom.stat().st_size
    assert digest == hashlib.sha256(dicom.read_bytes()).hexdigest()
    # The viewer shows it: the drawing's aspect ratio is the upload's.
    page.wait_for_function(
        "(sel) => (document.querySelector(sel).dataset.pictureOf || '').startsWith('frontal:')",
        arg=f"{ROOT} .cxr-viewer",
    )
    assert kernel_json(page, "[w.viewer.width, w.viewer.height]") == [width, height]
    shown = page.get_attribute(f"{ROOT} .cxr-viewer", "data-picture-of")
    # It travelled in pieces, each under Tornado's 10 MiB websocket message limit.
    _, sent = frames.since(mark)
    assert sum(map(len, sent)) >= dicom.stat().st_size
    assert max(map(len, sent)) < 10 * 1024 * 1024

    # A file that is no image: the reason is shown beside the field, nothing fails silently.
    bogus = tmp_path / "notes.dcm"
    bogus.write_text("these are notes, not an image\n" * 100)
    page.locator(f'{ROOT} .cxr-upload[data-slot="lateral"] input[type="file"]').set_input_files(
        str(bogus)
    )
    page.locator(f'{ROOT} .cxr-upload[data-slot="lateral"][data-state="error"]').wait_for()
    assert "notes.dcm" in page.locator(f'{ROOT} .cxr-upload[data-slot="lateral"]').inner_text()

    # The same file into the frontal slot: it is refused by name and the frontal image stays.
    frontal = f'{ROOT} .cxr-upload[data-slot="frontal"]'
    page.locator(f'{frontal} input[type="file"]').set_input_files(str(bogus))
    page.locator(f'{frontal}[data-state="error"]').wait_for()
    assert "notes.dcm" in page.locator(frontal).inner_text()
    assert (
        f"{width}x{height}" in page.locator(f'{ROOT} .cxr-prep[data-slot="frontal"]').inner_text()
    )
    assert page.get_attribute(f"{ROOT} .cxr-viewer", "data-picture-of") == shown  # unchanged
    assert kernel_json(page, "len(w.study.frontal_image)") == dicom.stat().st_size


def test_generate_in_background_with_elapsed_time_and_cancel(
    page, jupyter_lab: JupyterLab, lab_root: Path
) -> None:
    write_notebook(
        lab_root / "running.ipynb",
        ["from cxr_widgets import ReportGenWidget\nw = ReportGenWidget(demo_latency=4)\nw"],
    )
    frames = WebSocketRecorder(page)
    open_and_run_notebook(page, jupyter_lab, "running.ipynb")
    page.wait_for_selector(ROOT)
    click(page, "cxr-load-sample")
    page.locator(f'{ROOT} .cxr-prep[data-slot="frontal"]', has_text="cxr_frontal.jpg").wait_for()
    status = page.locator(f"{ROOT} .cxr-status")

    def elapsed() -> float:
        text = status.inner_text()
        assert "Generating on demo" in text, text
        return float(text.rsplit("...", 1)[1].split()[0])

    # A spinner with the elapsed time, while the kernel keeps answering.
    click(page, "cxr-generate")
    page.locator(f"{ROOT} .cxr-status .cxr-spinner").wait_for()
    mark = frames.mark()
    first = elapsed()
    assert kernel_json(page, "w.runner.busy") is True  # the kernel ran a cell meanwhile
    page.wait_for_function(
        "([sel, t]) => parseFloat(document.querySelector(sel).textContent.split('...')[1]) > t",
        arg=[f"{ROOT} .cxr-status", first + 1],
    )
    # The page counted that second itself: the kernel sent no status update meanwhile.
    received, _ = frames.since(mark)
    assert not [f for f in received if b"busy_since" in f or b"Generating on" in f]

    # Cancel: the panel says so and the late result is discarded.
    click(page, "cxr-cancel")
    page.locator(f"{ROOT} .cxr-notice", has_text="Cancelled").wait_for()
    assert status.is_hidden()  # no spinner once cancelled
    # The cancelled request's answer arrives (the worker ends) and is dropped.
    assert (
        kernel_json(page, "[w.runner.job.thread.join(30), w.runner.job.thread.is_alive()][1]")
        is False
    )
    assert page.locator(ROW).count() == 0
    assert kernel_json(page, "[w.report is None, len(w.history)]") == [True, 0]

    # Generate again and let it finish: the report is shown and kept in the history.
    click(page, "cxr-generate")
    page.wait_for_selector(ROW, timeout=60_000)
    wait_boxes(page, expected_boxes(page))
    assert kernel_json(page, "len(w.history)") == 1


#: Is the text inside each matching element cut off (wider or taller than its box)?
CUT_OFF = """els => els.map((e) => [e.textContent, e.scrollWidth > e.clientWidth + 1
                                      || e.scrollHeight > e.clientHeight + 1])"""

#: Does each text area's placeholder fit on its visible lines, in the area's own font?
PLACEHOLDER_FITS = """els => els.map((e) => {
  const s = getComputedStyle(e);
  const ctx = document.createElement("canvas").getContext("2d");
  ctx.font = `${s.fontStyle} ${s.fontWeight} ${s.fontSize} ${s.fontFamily}`;
  const room = e.clientWidth - parseFloat(s.paddingLeft) - parseFloat(s.paddingRight);
  const lines = Math.max(1, Math.floor(
    (e.clientHeight - parseFloat(s.paddingTop) - parseFloat(s.paddingBottom))
    / (parseFloat(s.lineHeight) || parseFloat(s.fontSize) * 1.2)));
  return [e.placeholder, ctx.measureText(e.placeholder).width <= room * lines];
})"""


def test_errors_beside_generate_and_nothing_clipped(demo_page, tmp_path: Path) -> None:
    page = demo_page
    # Generate with no image: the reason appears beside the button that was pressed.
    click(page, "cxr-generate")
    error = page.locator(f"{ROOT} .cxr-run-error:visible")
    error.wait_for()
    assert "frontal image is required" in error.inner_text()
    button = page.locator(f"{ROOT} button.cxr-generate").bounding_box()
    shown = error.bounding_box()
    assert shown["y"] < button["y"] + button["height"] + 40, (button, shown)
    assert shown["x"] >= button["x"] and abs(shown["y"] - button["y"]) < 80
    click(page, "cxr-load-sample")
    page.locator(f"{ROOT} .cxr-run-error").first.wait_for(state="hidden")

    # The text areas use the panel's sans-serif font, and their placeholders fit.
    panel_font = page.eval_on_selector(ROOT, "e => getComputedStyle(e).fontFamily")
    fonts = page.eval_on_selector_all(
        f"{ROOT} textarea", "els => els.map(e => getComputedStyle(e).fontFamily)"
    )
    # The study form's four and the review note (review_panel.js).
    assert len(fonts) == 5 and all(f == panel_font for f in fonts), (panel_font, fonts)
    assert "monospace" not in panel_font
    run_cell(page, "w.load_study(__import__('cxr_widgets').Study(w.study.frontal_image))")
    fits = page.eval_on_selector_all(f"{ROOT} textarea:visible", PLACEHOLDER_FITS)
    assert fits and all(ok for _, ok in fits), fits

    # A long upload file name is shown whole (wrapped), not cut off.
    long_name = tmp_path / ("a-rather-long-name-for-the-lateral-chest-radiograph-" * 2 + ".png")
    Image.new("L", (600, 640), 90).save(long_name)
    control = f'{ROOT} .cxr-upload[data-slot="lateral"]'
    page.locator(f'{control} input[type="file"]').set_input_files(str(long_name))
    page.locator(f'{control}[data-state="done"]').wait_for(timeout=60_000)
    status = page.eval_on_selector_all(f"{control} .cxr-upload-status", CUT_OFF)
    assert status and long_name.name in status[0][0] and not status[0][1], status
    clipped = page.eval_on_selector(ROOT, CLIPPED)
    assert not clipped, clipped


# --- themes, keyboard and screen readers -------------------------------------------------

AXE = Path(__file__).parent / "node_modules/axe-core/axe.min.js"

#: Contrast of every visible text in ``root`` against what is behind it (WCAG formula),
#: alpha and opacity composited. Text drawn over the radiograph (SVG, stage) is left out.
CONTRAST = """root => {
  const parse = (c) => {
    const m = c.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return null;
    const p = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const over = (fg, bg) => [0, 1, 2].map((i) => fg[i] * fg[3] + bg[i] * (1 - fg[3])).concat(1);
  const behind = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
    }
    let bg = [255, 255, 255, 1];
    for (let i = layers.length - 1; i >= 0; i--) bg = over(layers[i], bg);
    return bg;
  };
  const lum = (c) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]);
  };
  const out = [];
  for (const el of root.querySelectorAll("*")) {
    if (el.closest("svg, .cxr-stage, [disabled], [hidden]")) continue;
    const text = [...el.childNodes].filter((n) => n.nodeType === 3)
      .map((n) => n.textContent.trim()).join(" ").trim();
    if (!text || !el.getClientRects().length) continue;
    const s = getComputedStyle(el);
    if (s.visibility === "hidden") continue;
    let opacity = 1;
    for (let e = el; e; e = e.parentElement) opacity *= parseFloat(getComputedStyle(e).opacity);
    const bg = behind(el);
    const color = parse(s.color);
    const fg = over([color[0], color[1], color[2], color[3] * opacity], bg);
    const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
    const name = el.tagName.toLowerCase() + [...el.classList].map((c) => "." + c).join("");
    out.push([name, text.slice(0, 50), Math.round(((hi + 0.05) / (lo + 0.05)) * 100) / 100]);
  }
  return out;
}"""


def set_theme(page, name: str) -> None:
    """Settings > Theme > ``name`` (e.g. "JupyterLab Dark"); wait until it applies."""
    light = "true" if "Light" in name else "false"
    if page.evaluate("() => document.body.dataset.jpThemeLight") == light:
        return
    page.locator('.lm-MenuBar-itemLabel:text-is("Settings")').click()
    page.locator('.lm-Menu-itemLabel:text-is("Theme")').click()
    page.locator(f'.lm-Menu-itemLabel:text-is("{name}")').click()
    page.wait_for_function(f"() => document.body.dataset.jpThemeLight === '{light}'")
    page.wait_for_timeout(500)  # theme CSS loaded and applied


def low_contrast(locator) -> list:
    """Texts under ``locator`` (a Playwright locator) with contrast below WCAG AA's 4.5:1."""
    return [t for t in locator.evaluate(CONTRAST) if t[2] < 4.5]


def axe_violations(page, selector: str) -> list[str]:
    """Serious and critical axe-core (WCAG 2 A/AA) violations inside ``selector``."""
    if not page.evaluate("() => !!window.axe"):
        page.add_script_tag(path=str(AXE))
    result = page.evaluate(
        """async (sel) => {
             const r = await axe.run(document.querySelector(sel),
                                     {runOnly: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]});
             return r.violations.filter((v) => ["serious", "critical"].includes(v.impact))
               .map((v) => `${v.impact} ${v.id}: ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
           }""",
        selector,
    )
    return result


@pytest.fixture(scope="module")
def axe_script() -> Path:
    """axe-core from npm (tests/browser/package.json), installed on first use."""
    if not AXE.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("npm is needed for the accessibility test: apt-get install -y npm")
        import subprocess

        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=AXE.parents[2], check=True, timeout=300
        )
    return AXE


def test_themes_contrast_axe_and_keyboard(demo_page, axe_script: Path, tmp_path: Path) -> None:
    page = demo_page
    cells = page.locator(".jp-NotebookPanel .jp-Cell")
    n_cells = cells.count()

    # Keyboard only: Tab to "Load sample study" and Generate, press Enter / Space.
    page.locator(f"{ROOT} button.cxr-load-sample").focus()
    page.keyboard.press("Enter")
    page.locator(f'{ROOT} .cxr-prep[data-slot="frontal"]', has_text="cxr_frontal.jpg").wait_for()
    focus = page.locator(f"{ROOT} button.cxr-generate")
    focus.focus()
    page.keyboard.press("Space")
    page.wait_for_selector(ROW, timeout=60_000)
    # Generate was disabled while it ran; the focus comes back to it, not to the page.
    page.wait_for_function(
        "() => document.activeElement && document.activeElement.matches('.cxr-widget .cxr-generate')"
    )
    # Keys typed in the panel stay there: notebook shortcuts (b: new cell, a, dd, arrows) do nothing.
    for key in ("b", "a", "d", "d", "ArrowDown", "ArrowUp", "m", "Enter"):
        page.locator(f"{ROOT} button.cxr-endpoint-toggle").focus()
        page.keyboard.press(key)
    page.wait_for_timeout(300)
    assert cells.count() == n_cells
    assert page.locator(".jp-NotebookPanel .jp-MarkdownCell").count() == 0
    focused = page.evaluate("() => !!document.activeElement.closest('.cxr-widget')")
    assert focused, "focus left the panel"
    # Focus is visible on the panel's controls.
    outline = page.eval_on_selector(
        f"{ROOT} button.cxr-endpoint-toggle", "e => getComputedStyle(e).outlineStyle"
    )
    assert outline not in ("none", ""), outline

    run_cell(page, "from IPython.display import display\ndisplay(w.report)")
    # Show the states the issue found unreadable in the dark: an error beside Generate and
    # the sign-in code box.
    run_cell(
        page,
        "from cxr_widgets import EndpointConfig, ReportGenClient\n"
        "w.client = ReportGenClient(EndpointConfig('http://127.0.0.1:9/score', max_retries=0,"
        " key_env=None))\n"
        "try:\n    w.generate()\nexcept Exception as exc:\n    print(type(exc).__name__)\n"
        "w.endpoint_toggle.value = True\nw.endpoint.mode.value = 'workspace'\n"
        "w.endpoint._device_code_prompt('https://microsoft.com/devicelogin', 'ABCD-1234', None)",
    )
    page.locator(f"{ROOT} .cxr-run-error:visible").wait_for()
    page.locator(f"{ROOT} .cxr-device-code:visible").wait_for()
    report_html = page.locator(".jp-OutputArea-output:has(.cxr-report)").last
    problems: dict[str, list] = {}
    try:
        for theme in ("JupyterLab Light", "JupyterLab Dark"):
            set_theme(page, theme)
            page.mouse.move(0, 0)
            panel = low_contrast(page.locator(ROOT).first)
            report = low_contrast(report_html)
            violations = axe_violations(page, ROOT)
            if theme.endswith("Dark"):
                keep_screenshot(page, tmp_path / "widget-dark.png")
            if panel or report or violations:
                problems[theme] = [*panel, *report, *violations]
    finally:
        set_theme(page, "JupyterLab Light")
    assert not problems, problems


# --- Voilà: a hosted app, where the server's files are out of the user's reach -----------


@pytest.fixture
def voila_app(browser_ready: None, lab_home: Path, tmp_path: Path):
    """Voilà serving a notebook that shows the panel, on 127.0.0.1; its URL and folder."""
    import subprocess
    import sys
    import urllib.request

    from jupyter_harness import free_port, isolated_env

    root = tmp_path / "app"
    root.mkdir()
    write_notebook(
        root / "app.ipynb", ["from cxr_widgets import ReportGenWidget\nReportGenWidget()"]
    )
    port = free_port()
    log = (tmp_path / "voila.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "voila",
            "app.ipynb",
            f"--port={port}",
            "--no-browser",
            "--Voila.ip=127.0.0.1",
        ],
        cwd=root,
        env=isolated_env(lab_home),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(
                        f"Voilà did not start: {(tmp_path / 'voila.log').read_text()[-2000:]}"
                    )
                time.sleep(0.3)
        yield url, root
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def test_voila_generates_and_downloads_exports(page, voila_app) -> None:
    url, root = voila_app
    page.goto(url, timeout=120_000)
    page.wait_for_selector(ROOT, timeout=120_000)
    # No field reads files on the server: the app's user could not reach them anyway.
    assert page.locator(f"{ROOT} .cxr-path").count() == 0
    assert page.locator(f"{ROOT} .cxr-upload").count() == 3
    click(page, "cxr-load-sample")
    page.locator(f'{ROOT} .cxr-prep[data-slot="frontal"]', has_text="cxr_frontal.jpg").wait_for(
        timeout=60_000
    )
    click(page, "cxr-generate")
    page.wait_for_selector(ROW, timeout=60_000)
    n_rows = page.locator(ROW).count()

    # Export: the browser receives the file (the user's own copy); nothing is written on
    # the server.
    with page.expect_download(timeout=60_000) as csv_download:
        click(page, "cxr-export-csv")
    rows = list(csv.DictReader(io.StringIO(Path(csv_download.value.path()).read_text())))
    assert csv_download.value.suggested_filename.endswith(".csv")
    assert len({r["finding"] for r in rows}) == n_rows
    assert {r["demo"] for r in rows} == {"True"}  # canned findings say so
    with page.expect_download(timeout=60_000) as png_download:
        click(page, "cxr-export-png")
    assert Path(png_download.value.path()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page.locator(f"{ROOT} .cxr-exports", has_text="Sent to your browser").wait_for()
    assert sorted(p.name for p in root.iterdir()) == ["app.ipynb"]
    keep_screenshot(page, root.parent / "widget-voila.png")
