"""The image viewer in real JupyterLab and Chromium: window/level, zoom, pan, detail,
probe, distance, side-by-side views and two runs.

What the canvas shows is compared with what Python computes from the file's own
values (``window_to_uint8`` on pydicom's pixel array), so a wrong lookup table,
a misplaced box or a blurred "detail" fails. One notebook (and kernel) for the
module; each test shows a fresh viewer in a new cell and drives the last one.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from big_dicom import write_big_dicom
from jupyter_harness import (
    JupyterLab,
    WebSocketRecorder,
    collapse_left_sidebar,
    open_and_run_notebook,
    run_cell,
    screenshot_for_docs,
    write_notebook,
)

from cxr_widgets.widget.viewer_pixels import window_to_uint8

VIEWER = ".cxr-viewer >> nth=-1"
#: pydicom's own reading of RG1 (the test's reference, independent of the viewer).
RG1 = None

SETUP = """
import json
import numpy as np
from pydicom.data import get_testdata_file
from cxr_widgets import Box, Finding, Report
from cxr_widgets.widget.viewer import ReportViewer, apply_box_edit

rg1 = get_testdata_file("RG1_UNCR.dcm")
REPORT = Report(
    findings=[
        Finding("Opacity in the right upper zone.", [Box(0.105, 0.205, 0.405, 0.455)]),
        Finding("Small nodule.", [Box(0.205, 0.255, 0.255, 0.305)]),
        Finding("Left basal atelectasis.", [Box(0.605, 0.605, 0.855, 0.805)]),
        Finding("Heart size normal."),
    ],
    image_size=(1841, 1955),
)
OTHER = Report(
    findings=[Finding("Right pleural effusion.", [Box(0.055, 0.605, 0.355, 0.905)])],
    image_size=(1841, 1955),
)

def show(*images, report=REPORT, **traits):
    v = ReportViewer(**traits)
    v.set_images(*images)
    if report is not None:
        v.set_report(report)
    return v

def out(value):
    print("@@" + json.dumps(value))

def keep_edits(v):
    # Be the viewer's owner: record each box edit and show the saved report.
    v.edits = []
    def save(e):
        v.edits.append(e)
        v.set_report(apply_box_edit(v.report, e), keep_view=True)
    v.on_box_edit(save)
    return v

def edits_px(v):
    # The recorded edits, each box in the frontal image's pixels.
    return [
        [e.finding, e.box, list(e.new.to_pixels(v.width, v.height, v.frame)) if e.new else None]
        for e in v.edits
    ]
"""


def rg1_values() -> np.ndarray:
    """RG1's modality values as pydicom reads them (no rescale in this file)."""
    global RG1
    if RG1 is None:
        from pydicom.data import get_testdata_file

        ds = pydicom.dcmread(get_testdata_file("RG1_UNCR.dcm"))
        RG1 = ds.pixel_array.astype(np.float64) * float(ds.get("RescaleSlope", 1) or 1) + float(
            ds.get("RescaleIntercept", 0) or 0
        )
    return RG1


def spaced_dicom(path: Path, spacing: tuple[float, float]) -> Path:
    """RG1 cut to 600 x 400 with a real PixelSpacing (row, column) in mm."""
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("RG1_UNCR.dcm"))
    pixels = ds.pixel_array[600:1000, 500:1100].copy()
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelData = pixels.tobytes()
    ds.PixelSpacing = [f"{spacing[0]:g}", f"{spacing[1]:g}"]
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def lab_page(chromium: object, jupyter_lab: JupyterLab, lab_root: Path) -> Iterator[object]:
    """One notebook with the helpers above, run once; tests add cells to it."""
    write_notebook(lab_root / "viewer.ipynb", [SETUP])
    spaced_dicom(lab_root / "spaced.dcm", (0.2, 0.1))
    tab = chromium.new_page()  # type: ignore[attr-defined]
    tab.set_default_timeout(30_000)
    errors: list[str] = []
    tab.on("pageerror", lambda e: errors.append(str(e)))
    tab.recorder = WebSocketRecorder(tab)  # type: ignore[attr-defined]  # before the kernel's socket opens
    open_and_run_notebook(tab, jupyter_lab, "viewer.ipynb")
    collapse_left_sidebar(tab)
    tab.errors = errors  # type: ignore[attr-defined]
    yield tab
    tab.close()
    jupyter_lab.shutdown_kernels()


def kernel(page, code: str):
    """Run ``code`` in a new cell; the JSON value it printed with ``out(...)`` (or None)."""
    text = run_cell(page, code)
    line = next((ln for ln in text.splitlines() if ln.startswith("@@")), None)
    return json.loads(line[2:]) if line else None


def show(page, call: str = "show(rg1)") -> None:
    """Show a fresh viewer (``v``) in a new cell and wait for its first picture."""
    before = page.locator(".cxr-viewer").count()
    run_cell(page, f"v = {call}\nv")
    page.wait_for_function(
        "n => document.querySelectorAll('.cxr-viewer').length > n", arg=before, timeout=30_000
    )
    page.wait_for_function(
        """() => { const r = [...document.querySelectorAll('.cxr-viewer')].pop();
                   return r.dataset.ready && +r.querySelector('.cxr-pane').dataset.frames > 0; }""",
        timeout=30_000,
    )
    page.locator(VIEWER).scroll_into_view_if_needed()
    time.sleep(0.3)


def pane_state(page, index: int = 0, scroll: bool = True) -> dict:
    """The pane's transform (image px -> pane px) and its position on the page
    (scrolled into view first: cells added by ``kernel`` scroll the notebook)."""
    if scroll:
        page.locator(VIEWER).scroll_into_view_if_needed()
    return page.evaluate(
        """(i) => { const r = [...document.querySelectorAll('.cxr-viewer')].pop();
                    const p = r.querySelectorAll('.cxr-pane')[i];
                    const b = p.getBoundingClientRect();
                    return {s: +p.dataset.scale, tx: +p.dataset.tx, ty: +p.dataset.ty,
                            zoom: +p.dataset.zoom, left: b.left, top: b.top,
                            w: b.width, h: b.height, details: +(r.dataset.details || 0)}; }""",
        index,
    )


def canvas_grey(page, points: list[tuple[float, float]], index: int = 0) -> list[int]:
    """Red channel of the pane's canvas at pane-pixel ``points`` (grey images: r = g = b)."""
    return page.evaluate(
        """([pts, i]) => { const r = [...document.querySelectorAll('.cxr-viewer')].pop();
             const c = r.querySelectorAll('.cxr-pane')[i].querySelector('canvas');
             const ctx = c.getContext('2d');
             return pts.map(([x, y]) => ctx.getImageData(Math.floor(x), Math.floor(y), 1, 1).data[0]); }""",
        [points, index],
    )


def pixel_centres(st: dict, cols: list[int], rows: list[int]) -> list[tuple[float, float]]:
    return [
        (st["tx"] + (c + 0.5) * st["s"], st["ty"] + (r + 0.5) * st["s"])
        for c, r in zip(cols, rows, strict=True)
    ]


def zoom_on(page, x: float, y: float, zoom: float) -> dict:
    """Zoom the first pane (Python's camera) onto image point (x, y); wait for the detail."""
    before = pane_state(page)["details"]
    run_cell(page, f"v.camera = {{'zoom': {zoom}, 'x': {x}, 'y': {y}}}")
    page.wait_for_function(
        """(n) => +[...document.querySelectorAll('.cxr-viewer')].pop().dataset.details > n""",
        arg=before,
        timeout=30_000,
    )
    time.sleep(0.3)
    return pane_state(page)


def focus_viewer(page) -> None:
    page.locator(f"{VIEWER} >> .cxr-window-readout").click()


def grid_points(st: dict, n: int = 6) -> tuple[list[int], list[int]]:
    """Image pixels on an n x n grid inside the visible part of the pane."""
    cols, rows = [], []
    for i in range(n):
        for j in range(n):
            px, py = st["w"] * (i + 1) / (n + 1), st["h"] * (j + 1) / (n + 1)
            cols.append(math.floor((px - st["tx"]) / st["s"]))
            rows.append(math.floor((py - st["ty"]) / st["s"]))
    return cols, rows


def expected_grey(page, cols: list[int], rows: list[int]) -> list[int]:
    level, width = kernel(page, "out(list(v.window))")
    invert = kernel(page, "out(v.invert)")
    values = rg1_values()[rows, cols]
    return window_to_uint8(values, level, width, invert).astype(int).tolist()


def assert_close(got: list[int], want: list[int], tol: int = 1) -> None:
    bad = [(i, g, w) for i, (g, w) in enumerate(zip(got, want, strict=True)) if abs(g - w) > tol]
    assert not bad, f"{len(bad)} of {len(got)} pixels differ: {bad[:8]}"


# --- window / level ---------------------------------------------------------------------


def test_drag_changes_window_with_no_kernel_message(lab_page) -> None:
    page = lab_page
    show(page)
    st = zoom_on(page, 700, 900, 12)
    assert st["s"] >= 2, "zoomed far enough that one image pixel covers whole screen pixels"
    cols, rows = grid_points(st)
    before = canvas_grey(page, pixel_centres(st, cols, rows))
    assert_close(before, expected_grey(page, cols, rows))
    window0 = kernel(page, "out(list(v.window))")

    recorder = page.recorder
    st = pane_state(page)
    x0, y0 = st["left"] + st["w"] / 2, st["top"] + st["h"] / 2
    page.mouse.move(x0, y0)
    page.mouse.down()
    mark = recorder.mark()
    for k in range(1, 21):
        page.mouse.move(x0 - 8 * k, y0 - 5 * k)
        time.sleep(0.02)
    _received, sent = recorder.since(mark)
    page.mouse.up()
    assert sent == [], f"{len(sent)} messages to the kernel while dragging"
    page.wait_for_timeout(300)
    _received, sent = recorder.since(mark)
    assert sent, "the recorder sees the kernel's socket: the window is sent once the drag ends"

    page.wait_for_timeout(300)
    window1 = kernel(page, "out([list(v.window), v.preset])")
    assert window1[1] == "custom"
    assert window1[0][1] < window0[1] and window1[0][0] < window0[0]  # left: narrower; up: lower
    after = canvas_grey(page, pixel_centres(st, cols, rows))
    assert after != before
    assert_close(after, expected_grey(page, cols, rows))


def test_presets_and_invert_from_buttons_keys_and_python(lab_page) -> None:
    page = lab_page
    show(page)
    st = zoom_on(page, 900, 1000, 10)
    cols, rows = grid_points(st)
    points = pixel_centres(st, cols, rows)
    presets = kernel(page, "out(v.images['frontal']['presets'])")
    assert set(presets) == {"file", "lung", "mediastinum", "bone", "full"}

    page.locator(f'{VIEWER} >> .cxr-preset[data-preset="lung"]').click()
    page.wait_for_timeout(300)
    assert kernel(page, "out([v.preset, list(v.window)])") == ["lung", presets["lung"]]
    lung = canvas_grey(page, points)
    assert_close(lung, expected_grey(page, cols, rows))

    focus_viewer(page)
    page.keyboard.press("i")
    page.wait_for_timeout(300)
    assert kernel(page, "out(v.invert)") is False  # RG1 is MONOCHROME1: shown inverted at first
    assert_close(canvas_grey(page, points), [255 - g for g in lung])

    focus_viewer(page)
    page.keyboard.press("4")  # bone
    page.wait_for_timeout(300)
    assert kernel(page, "out([v.preset, list(v.window)])") == ["bone", presets["bone"]]

    run_cell(page, "v.preset = 'full'")
    page.wait_for_timeout(300)
    readout = page.locator(f"{VIEWER} >> .cxr-window-readout")
    assert float(readout.get_attribute("data-width")) == presets["full"][1]
    assert_close(canvas_grey(page, points), expected_grey(page, cols, rows))

    run_cell(page, "v.window = (9000, 4000)")
    page.wait_for_timeout(300)
    assert kernel(page, "out(v.preset)") == "custom"
    assert "L 9000" in readout.inner_text() and "W 4000" in readout.inner_text()
    assert_close(canvas_grey(page, points), expected_grey(page, cols, rows))

    run_cell(page, "v.reset_view()")
    page.wait_for_timeout(300)
    assert kernel(page, "out([v.preset, list(v.window), v.invert])") == [
        "file",
        [15000.0, 30000.0],
        True,
    ]


# --- zoom, pan, detail ---------------------------------------------------------------------


def box_rects_in_image(page, index: int = 0, cls: str = "cxr-box") -> list[list[float]]:
    """The drawn boxes of a pane mapped back to image pixels through the pane's transform."""
    return page.evaluate(
        """([i, cls]) => { const r = [...document.querySelectorAll('.cxr-viewer')].pop();
             const p = r.querySelectorAll('.cxr-pane')[i];
             const s = +p.dataset.scale, tx = +p.dataset.tx, ty = +p.dataset.ty;
             return [...p.querySelectorAll('rect.' + cls)].map((b) => {
               const x = +b.getAttribute('x'), y = +b.getAttribute('y');
               const w = +b.getAttribute('width'), h = +b.getAttribute('height');
               return [+b.dataset.finding, (x - tx) / s, (y - ty) / s, (x + w - tx) / s, (y + h - ty) / s];
             }); }""",
        [index, cls],
    )


def test_wheel_zoom_to_8x_keeps_boxes_on_the_same_pixels(lab_page) -> None:
    page = lab_page
    show(page)
    want = kernel(
        page, "out([[b['finding'], b['x0'], b['y0'], b['x1'], b['y1']] for b in v.boxes])"
    )
    fit = box_rects_in_image(page)
    st = pane_state(page)
    box = next(b for b in want if b[0] == 1)
    # Wheel over the small box's centre until 8x.
    cx, cy = (box[1] + box[3]) / 2, (box[2] + box[4]) / 2
    # The browser puts the mouse on whole CSS pixels: take the image point under it.
    mx = round(st["left"] + st["tx"] + cx * st["s"])
    my = round(st["top"] + st["ty"] + cy * st["s"])
    ix, iy = (mx - st["left"] - st["tx"]) / st["s"], (my - st["top"] - st["ty"]) / st["s"]
    page.mouse.move(mx, my)
    for _ in range(60):
        page.mouse.wheel(0, -120)
        page.wait_for_timeout(30)
        if pane_state(page, scroll=False)["zoom"] >= 8:
            break
    page.wait_for_timeout(400)
    st8 = pane_state(page, scroll=False)
    assert st8["zoom"] >= 8
    # Zoom is around the cursor: the same image point is still under the mouse.
    assert abs(st8["tx"] + ix * st8["s"] - (mx - st8["left"])) < 1
    assert abs(st8["ty"] + iy * st8["s"] - (my - st8["top"])) < 1
    zoomed = box_rects_in_image(page)
    for drawn in (fit, zoomed):
        by_finding = {round(b[0]): b for b in drawn}
        for finding, *corners in want:
            if finding in by_finding:
                got = by_finding[finding][1:]
                tol = 0.51 / min(st["s"], st8["s"]) if drawn is fit else 0.51 / st8["s"]
                assert all(abs(g - w) <= max(tol, 1e-6) for g, w in zip(got, corners, strict=True))
    assert {round(b[0]) for b in fit} == {b[0] for b in want}
    assert kernel(page, "out(v.camera['zoom'])") >= 8  # reflected back once the wheel stops


def test_pan_moves_the_picture_by_the_drag(lab_page) -> None:
    page = lab_page
    show(page)
    st = zoom_on(page, 900, 900, 4)
    cols, rows = grid_points(st, 4)
    before_pts = pixel_centres(st, cols, rows)
    before = canvas_grey(page, before_pts)
    cam0 = kernel(page, "out(v.camera)")
    st = pane_state(page)
    x0, y0 = st["left"] + st["w"] / 2, st["top"] + st["h"] / 2
    page.mouse.move(x0, y0)
    page.keyboard.down("Shift")
    page.mouse.down()
    page.mouse.move(x0 + 60, y0 + 40, steps=8)
    page.mouse.up()
    page.keyboard.up("Shift")
    page.wait_for_timeout(400)
    cam1 = kernel(page, "out(v.camera)")
    assert abs((cam0["x"] - cam1["x"]) * st["s"] - 60) < 1.5
    assert abs((cam0["y"] - cam1["y"]) * st["s"] - 40) < 1.5
    st1 = pane_state(page)
    after = canvas_grey(page, [(x + 60, y + 40) for x, y in before_pts])
    assert_close(after, before, tol=2)
    assert abs(st1["tx"] - st["tx"] - 60) < 1.5


def test_zoomed_region_shows_full_resolution_detail(lab_page) -> None:
    page = lab_page
    show(page)
    meta = kernel(page, "out(v.images['frontal'])")
    assert meta["scale"] < 0.6  # RG1 travels as a ~1024 px overview first
    st = zoom_on(page, 1000, 800, 16)
    assert st["s"] >= 4
    # A 24 x 24 crop around the centre, one sample per image pixel.
    c0 = math.floor((st["w"] / 2 - st["tx"]) / st["s"]) - 12
    r0 = math.floor((st["h"] / 2 - st["ty"]) / st["s"]) - 12
    cols = [c0 + i for j in range(24) for i in range(24)]
    rows = [r0 + j for j in range(24) for i in range(24)]
    got = canvas_grey(page, pixel_centres(st, cols, rows))
    run_cell(page, "v.preset = 'lung'")  # a narrow window shows the low bits
    page.wait_for_timeout(300)
    got = canvas_grey(page, pixel_centres(st, cols, rows))
    want = expected_grey(page, cols, rows)
    assert_close(got, want)
    # The overview alone could not give this: under a window as narrow as the crop's
    # own contrast, its 2 x 2 averages differ visibly from the source pixels.
    crop = rg1_values()[r0 : r0 + 24, c0 : c0 + 24]
    run_cell(page, f"v.window = ({float(np.median(crop))}, {max(4 * float(crop.std()), 8)})")
    page.wait_for_timeout(300)
    got = canvas_grey(page, pixel_centres(st, cols, rows))
    want = expected_grey(page, cols, rows)
    assert_close(got, want)
    level, width = kernel(page, "out(list(v.window))")
    blurred = np.repeat(np.repeat(crop.reshape(12, 2, 12, 2).mean(axis=(1, 3)), 2, 0), 2, 1)
    coarse = window_to_uint8(blurred, level, width, True).ravel().astype(int)
    assert sum(abs(int(a) - int(b)) > 2 for a, b in zip(coarse, want, strict=True)) > 100
    assert int(page.locator(VIEWER).get_attribute("data-detail-ms") or 0) > 0


def test_probe_shows_the_dicom_value(lab_page) -> None:
    page = lab_page
    show(page)
    st = zoom_on(page, 820, 1210, 12)
    values = rg1_values()
    for col, row in ((815, 1205), (826, 1213), (820, 1199)):
        x = st["left"] + st["tx"] + (col + 0.5) * st["s"]
        y = st["top"] + st["ty"] + (row + 0.5) * st["s"]
        page.mouse.move(x, y)
        probe = page.locator(f"{VIEWER} >> .cxr-probe")
        page.wait_for_timeout(150)
        assert probe.get_attribute("data-x") == str(col)
        assert probe.get_attribute("data-y") == str(row)
        assert probe.get_attribute("data-exact") == "true"
        assert float(probe.get_attribute("data-value")) == values[row, col]
        assert f"x {col}, y {row}: {int(values[row, col])}" in probe.inner_text()


# --- distance ------------------------------------------------------------------------------


def measure(page, a: tuple[float, float], b: tuple[float, float]) -> dict:
    """Drag the measure tool from image point a to b; the measurement Python received."""
    st = pane_state(page)
    focus_viewer(page)
    page.keyboard.press("m")
    page.mouse.move(st["left"] + st["tx"] + a[0] * st["s"], st["top"] + st["ty"] + a[1] * st["s"])
    page.mouse.down()
    page.mouse.move(
        st["left"] + st["tx"] + b[0] * st["s"], st["top"] + st["ty"] + b[1] * st["s"], steps=6
    )
    page.mouse.up()
    page.wait_for_timeout(300)
    return kernel(page, "out(v.measurement)")


def test_distance_in_mm_with_pixel_spacing(lab_page) -> None:
    page = lab_page
    show(page, "show('spaced.dcm', report=None)")
    assert kernel(page, "out(v.images['frontal']['spacing'])") == [0.2, 0.1]
    m = measure(page, (100, 100), (400, 300))
    dx, dy = m["x1"] - m["x0"], m["y1"] - m["y0"]
    st = pane_state(page)
    assert abs(dx - 300) < 1.5 / st["s"] and abs(dy - 200) < 1.5 / st["s"]
    assert m["unit"] == "mm"
    assert m["mm"] == pytest.approx(math.hypot(dx * 0.1, dy * 0.2), rel=1e-9)
    assert m["mm"] == pytest.approx(50.0, abs=0.5)  # 30 mm across, 40 mm down
    text = page.locator(f"{VIEWER} >> .cxr-measure").inner_text()
    assert f"{m['mm']:.1f} mm" in text


def test_rg1_measures_in_pixels_and_says_spacing_unknown(lab_page) -> None:
    page = lab_page
    show(page)
    m = measure(page, (400, 500), (1000, 1300))
    assert m["unit"] == "px" and m["mm"] is None
    assert m["pixels"] == pytest.approx(math.hypot(m["x1"] - m["x0"], m["y1"] - m["y0"]))
    assert m["pixels"] == pytest.approx(1000, abs=6)
    text = page.locator(f"{VIEWER} >> .cxr-measure").inner_text()
    assert "px (pixel spacing unknown)" in text
    assert "pixel spacing unknown" in page.locator(f"{VIEWER} >> .cxr-notes").inner_text()


# --- side by side ----------------------------------------------------------------------------


def test_linked_side_by_side_views_move_together(lab_page) -> None:
    page = lab_page
    show(page, "show(rg1, 'spaced.dcm', rg1, arrangement='views')")
    page.wait_for_function(
        """() => { const r = [...document.querySelectorAll('.cxr-viewer')].pop();
                   return r.querySelectorAll('.cxr-pane').length === 3 && +r.dataset.ready >= 3; }"""
    )
    st = pane_state(page, 0)
    page.mouse.move(st["left"] + st["w"] / 2, st["top"] + st["h"] / 2)
    for _ in range(10):
        page.mouse.wheel(0, -120)
        page.wait_for_timeout(30)
    page.wait_for_timeout(400)
    zooms = [pane_state(page, i)["zoom"] for i in range(3)]
    assert zooms[0] > 3 and zooms[1] == zooms[0] and zooms[2] == zooms[0]
    # Frontal and prior are the same file: linked, they show the same pixels.
    a, c = pane_state(page, 0), pane_state(page, 2)
    assert abs(a["tx"] - c["tx"]) < 0.01 and abs(a["ty"] - c["ty"]) < 0.01

    run_cell(page, "v.link_view = False")
    page.wait_for_timeout(300)
    st = pane_state(page, 0)
    page.mouse.move(st["left"] + st["w"] / 2, st["top"] + st["h"] / 2)
    for _ in range(4):
        page.mouse.wheel(0, -120)
        page.wait_for_timeout(30)
    page.wait_for_timeout(300)
    assert pane_state(page, 0)["zoom"] > pane_state(page, 1)["zoom"] == zooms[1]

    run_cell(page, "v.link_window = True")
    page.locator(f'{VIEWER} >> .cxr-preset[data-preset="bone"]').click()
    page.wait_for_timeout(300)
    widths = page.evaluate(
        """() => [...[...document.querySelectorAll('.cxr-viewer')].pop()
                  .querySelectorAll('.cxr-pane')].map((p) => p.dataset.view)"""
    )
    assert widths == ["frontal", "lateral", "prior"]


def test_two_runs_side_by_side_with_their_boxes(lab_page) -> None:
    page = lab_page
    show(page)
    run_cell(
        page,
        "v.set_runs([('run 1', OTHER), ('run 2', REPORT)])\nv.compare = 0\nv.arrangement = 'runs'",
    )
    page.wait_for_function(
        """() => [...document.querySelectorAll('.cxr-viewer')].pop().querySelectorAll('.cxr-pane').length === 2"""
    )
    page.wait_for_timeout(400)
    left = box_rects_in_image(page, 0, "cxr-box")
    right = box_rects_in_image(page, 1, "cxr-box-compare")
    assert sorted(round(b[0]) for b in left) == [0, 1, 2]
    assert [round(b[0]) for b in right] == [0]
    want = kernel(page, "out([[b['x0'], b['y0'], b['x1'], b['y1']] for b in v.compare_boxes])")
    s = pane_state(page, 1)["s"]
    assert all(abs(g - w) < 0.6 / s for g, w in zip(right[0][1:], want[0], strict=True))
    colors = page.evaluate(
        """() => [...[...document.querySelectorAll('.cxr-viewer')].pop()
                  .querySelectorAll('.cxr-pane')[1].querySelectorAll('rect.cxr-box-compare')]
                  .map((b) => b.getAttribute('stroke'))"""
    )
    assert colors == [kernel(page, "out(OTHER.color(0))")]
    labels = page.locator(f"{VIEWER} >> .cxr-pane-label").all_inner_texts()
    assert "run 1" in labels[1]
    # Both panes show the same frontal image: its notes are listed once.
    notes = page.locator(f"{VIEWER} >> .cxr-note-line").all_inner_texts()
    want = kernel(page, "out(v.images['frontal']['notes'])")
    assert notes == want


# --- clicks, keys, bad input --------------------------------------------------------------


def test_click_picks_the_smallest_box_and_cycles(lab_page) -> None:
    page = lab_page
    show(page)
    boxes = kernel(page, "out([[b['x0'], b['y0'], b['x1'], b['y1']] for b in v.boxes])")
    big, small = boxes[0], boxes[1]  # finding 2's small box lies inside finding 1's box

    def click(x: float, y: float) -> int:
        st = pane_state(page)
        page.mouse.click(st["left"] + st["tx"] + x * st["s"], st["top"] + st["ty"] + y * st["s"])
        page.wait_for_timeout(300)
        return kernel(page, "out(v.selected)")

    inside = ((small[0] + small[2]) / 2, (small[1] + small[3]) / 2)
    assert click(*inside) == 1
    assert click(*inside) == 0  # clicking again cycles to the next box under the point
    assert click(*inside) == 1
    assert click(big[2] - 20, big[3] - 20) == 0
    assert click(5, 5) == -1  # outside every box: nothing selected
    help_text = page.locator(f"{VIEWER} >> .cxr-findings-hint").inner_text()
    assert "smallest box" in help_text and "cycle" in help_text


def test_keys_only_while_focused_and_help_lists_them(lab_page) -> None:
    page = lab_page
    show(page)
    invert0 = kernel(page, "out(v.invert)")
    # Focus in a notebook cell editor: "i" goes to the editor, not the viewer.
    page.locator(".jp-NotebookPanel .jp-Cell .jp-InputArea-editor").last.click()
    page.keyboard.press("i")
    page.wait_for_timeout(200)
    assert kernel(page, "out(v.invert)") == invert0
    focus_viewer(page)
    cells = page.locator(".jp-NotebookPanel .jp-Cell").count()
    page.keyboard.press("Escape")
    page.keyboard.press("b")  # JupyterLab's "insert cell below" must not fire
    page.keyboard.press("?")
    assert page.locator(f"{VIEWER} >> .cxr-help").is_visible()
    help_text = page.locator(f"{VIEWER} >> .cxr-help").inner_text()
    for word in ("reset", "invert", "presets", "next / previous finding"):
        assert word in help_text
    assert not page.locator(f"{VIEWER} >> .cxr-help-edit").is_visible()  # editing is off
    page.keyboard.press("Escape")
    assert not page.locator(f"{VIEWER} >> .cxr-help").is_visible()
    page.keyboard.press("n")
    page.wait_for_timeout(400)
    assert page.locator(".jp-NotebookPanel .jp-Cell").count() == cells
    assert kernel(page, "out([v.selected, v.camera['zoom'] > 1])") == [0, True]


def test_bad_inputs_show_a_picture_and_say_what_was_done(lab_page, lab_root: Path) -> None:
    page = lab_page
    write_big_dicom(lab_root / "huge.dcm", 4000, 5000)
    kernel(
        page,
        "from PIL import Image\n"
        "import pydicom, copy\n"
        "flat = np.full((300, 400), 7, np.uint16)\n"
        "strip = (np.arange(4000, dtype=np.uint16) % 256).reshape(1, 4000).astype(np.uint8)\n"
        "Image.fromarray((np.arange(512*512, dtype=np.uint32) % 4096).reshape(512, 512).astype(np.uint16)).save('p16.png')\n"
        "ds = pydicom.dcmread(rg1); del ds.WindowCenter; del ds.WindowWidth\n"
        "ds.save_as('nowindow.dcm')\nout(1)",
    )
    cases = {
        "show(flat, report=None)": "blank",
        "show(strip, report=None)": "strip",
        "show('p16.png', report=None)": "",
        "show('nowindow.dcm', report=None)": "no window",
        "show('huge.dcm', report=None)": "zooming in fetches full-resolution detail",
    }
    for call, note in cases.items():
        show(page, call)
        notes = page.locator(f"{VIEWER} >> .cxr-notes").inner_text()
        assert note in notes, (call, notes)
        grey = canvas_grey(page, [(pane_state(page)["w"] / 2, pane_state(page)["h"] / 2)])
        assert 0 <= grey[0] <= 255
    assert page.errors == []  # type: ignore[attr-defined]


def test_panel_viewer_screenshots_lung_zoom_and_side_by_side(lab_page, tmp_path: Path) -> None:
    """The sample study in ReportGenWidget: lung window zoomed on a finding, then
    frontal and prior side by side; both saved for the README."""
    page = lab_page
    show(
        page,
        "__import__('cxr_widgets').ReportGenWidget(demo_latency=0)\n"
        "v.load_study(__import__('cxr_widgets.samples').samples.sample_study('nema', with_prior=True))\n"
        "v.generate()\nw, v = v, v.viewer\n"
        "area = lambda f: min((b.x_max - b.x_min) * (b.y_max - b.y_min) for b in f.boxes)\n"
        "grounded = sorted((i for i, f in enumerate(w.report.findings) if f.boxes),\n"
        "                  key=lambda i: area(w.report.findings[i]))\n"
        "v.preset = 'lung'\nv.zoom_to_finding(grounded[0])\nw",
    )
    page.wait_for_timeout(800)
    state = kernel(page, "out([v.preset, v.camera['zoom'], v.selected, grounded[0]])")
    assert state[0] == "lung" and state[1] > 1.2 and state[2] == state[3]
    highlighted = page.locator(f"{VIEWER} >> rect.cxr-box.cxr-highlight").count()
    assert highlighted == kernel(page, "out(len(w.report.findings[grounded[0]].boxes))")
    # The DEMO banner sits above the image, never over it.
    banner = page.locator(f"{VIEWER} >> .cxr-demo-overlay").bounding_box()
    stage = page.locator(f"{VIEWER} >> .cxr-stage").bounding_box()
    assert banner and stage and banner["y"] + banner["height"] <= stage["y"]
    screenshot_for_docs(page.locator(VIEWER), tmp_path, "viewer_lung_zoom.png")

    run_cell(page, "v.reset_view()\nv.arrangement = 'views'")
    page.wait_for_function(
        """() => { const r = [...document.querySelectorAll('.cxr-viewer')].pop();
                   return r.querySelectorAll('.cxr-pane').length === 2 && +r.dataset.ready >= 2; }"""
    )
    page.wait_for_timeout(600)
    views = page.evaluate(
        """() => [...[...document.querySelectorAll('.cxr-viewer')].pop()
                  .querySelectorAll('.cxr-pane')].map((p) => p.dataset.view)"""
    )
    assert views == ["frontal", "prior"]
    screenshot_for_docs(page.locator(VIEWER), tmp_path, "viewer_side_by_side.png")


def test_central_square_stands_out_on_a_near_square_image(lab_page) -> None:
    """On a 1000 x 960 image the square is nearly the whole image: it still gets a dark
    halo under a bright dashed line, and its edges lie on the right image pixels."""
    page = lab_page
    show(
        page,
        "show(np.full((960, 1000), 2000, np.uint16) + np.arange(1000, dtype=np.uint16), report=None, show_crop=True)",
    )
    st = pane_state(page)
    halo = page.locator(f"{VIEWER} >> rect.cxr-crop-halo")
    square = page.locator(f"{VIEWER} >> rect.cxr-crop-square")
    assert halo.count() == 1 and square.count() == 1
    x = (float(square.get_attribute("x")) - st["tx"]) / st["s"]
    side = float(square.get_attribute("width")) / st["s"]
    assert x == pytest.approx(20, abs=0.01) and side == pytest.approx(960, abs=0.01)
    stroke = page.evaluate(
        """() => { const r = [...document.querySelectorAll('.cxr-viewer')].pop();
                   const h = getComputedStyle(r.querySelector('rect.cxr-crop-halo'));
                   const s = getComputedStyle(r.querySelector('rect.cxr-crop-square'));
                   return [h.stroke, h.strokeWidth, s.stroke, s.strokeDasharray]; }"""
    )
    assert stroke[0].startswith("rgba(0, 0, 0") and float(stroke[1].rstrip("px")) >= 3
    assert stroke[2] == "rgb(255, 255, 255)" and stroke[3] != "none"


# --- box editing ------------------------------------------------------------------------------


def to_page(st: dict, x: float, y: float) -> tuple[float, float]:
    """Image point (x, y) on the page, through the pane's camera."""
    return st["left"] + st["tx"] + x * st["s"], st["top"] + st["ty"] + y * st["s"]


def to_image(st: dict, px: float, py: float) -> tuple[float, float]:
    """Page point (px, py) in image pixels, through the pane's camera."""
    return (px - st["left"] - st["tx"]) / st["s"], (py - st["top"] - st["ty"]) / st["s"]


def drag(page, a: tuple[float, float], b: tuple[float, float], steps: int = 8) -> None:
    page.mouse.move(*a)
    page.mouse.down()
    page.mouse.move(*b, steps=steps)
    page.mouse.up()


def wait_edits(page, count: int) -> list:
    """The edits the kernel recorded, once there are ``count`` of them."""
    deadline = time.monotonic() + 20
    while True:
        got = kernel(page, "out(edits_px(v))")
        if len(got) >= count or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def boxes_px(page) -> dict:
    rows = kernel(
        page, "out([[b['finding'], b['box'], b['x0'], b['y0'], b['x1'], b['y1']] for b in v.boxes])"
    )
    return {(r[0], r[1]): r[2:] for r in rows}


def assert_px(got: list[float], want: list[float], tol: float = 1.0) -> None:
    assert all(abs(g - w) <= tol for g, w in zip(got, want, strict=True)), (got, want)


def test_edit_boxes_by_dragging_zoomed_and_panned_and_with_keys(lab_page) -> None:
    page = lab_page
    show(page, "keep_edits(show(rg1, editable=True))")
    run_cell(page, "v.camera = {'zoom': 2.0, 'x': 700.0, 'y': 800.0}\nv.select(0)")
    page.wait_for_timeout(400)
    hint = page.locator(f"{VIEWER} >> .cxr-findings-hint").inner_text()
    assert "drag a handle to resize" in hint and "pan while editing, hold Shift or Space" in hint
    focus_viewer(page)
    page.keyboard.press("?")
    editing = page.locator(f"{VIEWER} >> .cxr-help-edit")
    assert editing.is_visible() and "pans while editing" in editing.inner_text()
    page.keyboard.press("?")

    # Pan while editing: Shift+drag moves the picture and edits nothing.
    st = pane_state(page)
    assert st["zoom"] == pytest.approx(2.0, abs=1e-3)
    centre = (round(st["left"] + st["w"] / 2), round(st["top"] + st["h"] / 2))
    page.keyboard.down("Shift")
    drag(page, centre, (centre[0] - 70, centre[1] - 40))
    page.keyboard.up("Shift")
    panned = pane_state(page)
    assert panned["zoom"] == pytest.approx(2.0, abs=1e-3)
    assert panned["tx"] - st["tx"] == pytest.approx(-70, abs=1.5)
    assert panned["ty"] - st["ty"] == pytest.approx(-40, abs=1.5)
    handles = page.locator(f"{VIEWER} >> .cxr-handle[data-finding='0']").count()
    assert handles == 8  # the selected finding's box has its handles

    # Resize: the south-east handle goes where it is dropped.
    box = boxes_px(page)[(0, 0)]
    st = pane_state(page)  # after the cell: running it scrolled the notebook
    grab = (round(to_page(st, box[2], box[3])[0]), round(to_page(st, box[2], box[3])[1]))
    drop = (grab[0] + 61, grab[1] + 47)
    drag(page, grab, drop)
    corner = to_image(st, *drop)
    [edit] = wait_edits(page, 1)
    assert edit[:2] == [0, 0]
    assert_px(edit[2], [box[0], box[1], *corner])
    # The report was saved by the owner and drawn there.
    assert_px(boxes_px(page)[(0, 0)], [box[0], box[1], *corner])
    assert kernel(page, "out([v.selected, v.camera['zoom']])") == [0, pytest.approx(2.0, abs=1e-3)]

    # Move: drawn where it lands in the same frame as the pointer-up, before any answer
    # from the kernel (the events and the reading of the drawn box run in one task).
    x0, y0, x1, y1 = boxes_px(page)[(0, 0)]
    st = pane_state(page)
    drawn = page.evaluate(
        """([a, d]) => { const r = [...document.querySelectorAll('.cxr-viewer')].pop();
             const p = r.querySelector('.cxr-pane');
             const fire = (type, x, y) => p.dispatchEvent(new PointerEvent(type,
               { clientX: x, clientY: y, button: 0, buttons: type === 'pointerup' ? 0 : 1,
                 pointerId: 7, bubbles: true, cancelable: true }));
             fire('pointerdown', a[0], a[1]);
             for (let k = 1; k <= 5; k++) fire('pointermove', a[0] + d[0] * k / 5, a[1] + d[1] * k / 5);
             fire('pointerup', a[0] + d[0], a[1] + d[1]);
             const b = p.querySelector('rect.cxr-box[data-finding="0"][data-box="0"]');
             return ['x', 'y', 'width', 'height'].map((k) => +b.getAttribute(k)); }""",
        [list(to_page(st, (x0 + x1) / 2, (y0 + y1) / 2)), [-45, 30]],
    )
    moved = [x0 - 45 / st["s"], y0 + 30 / st["s"], x1 - 45 / st["s"], y1 + 30 / st["s"]]
    at = [(drawn[0] - st["tx"]) / st["s"], (drawn[1] - st["ty"]) / st["s"]]  # pane px -> image
    assert_px(at, moved[:2], 0.01)
    assert drawn[2] == pytest.approx((x1 - x0) * st["s"], abs=0.01)
    edits = wait_edits(page, 2)
    assert edits[1][:2] == [0, 0]
    assert_px(edits[1][2], moved)

    # A new box for a finding without one; a click or a 5 px scribble is not a box.
    run_cell(page, "v.select(3)")
    page.wait_for_timeout(300)
    st = pane_state(page)
    a = (round(st["left"] + st["w"] * 0.55), round(st["top"] + st["h"] * 0.3))
    drag(page, a, (a[0] + 4, a[1] + 3), steps=2)
    b = (a[0] + 90, a[1] + 70)
    drag(page, a, b)
    edits = wait_edits(page, 3)
    assert len(edits) == 3, "the scribble made no box"
    assert edits[2][:2] == [3, None]
    assert_px(edits[2][2], [*to_image(st, *a), *to_image(st, *b)])
    assert kernel(page, "out(len(v.report.findings[3].boxes))") == 1

    # Keys: the new box is focused; Shift+arrow moves it 10 px, an arrow 1 px, Delete removes it.
    cells = page.locator(".jp-NotebookPanel .jp-Cell")
    focus_viewer(page)
    before = cells.count()
    page.keyboard.press("Shift+ArrowRight")
    page.keyboard.press("ArrowDown")
    page.wait_for_timeout(300)
    assert cells.count() == before  # JupyterLab saw none of these keys
    edits = wait_edits(page, 5)
    assert [e[:2] for e in edits[3:]] == [[3, 0], [3, 0]]
    new = edits[2][2]
    assert_px(edits[4][2], [new[0] + 10, new[1] + 1, new[2] + 10, new[3] + 1], 0.01)
    readout = page.locator(f"{VIEWER} >> .cxr-edit-readout")
    moved = edits[4][2]
    text = readout.inner_text()
    assert text.startswith("Finding 4, box 1: x ") and text.endswith(" px)")
    numbers = [float(n) for n in re.findall(r"\d+", text)[2:]]  # after "4" and "1"
    want = [moved[0], moved[2], moved[1], moved[3], moved[2] - moved[0], moved[3] - moved[1]]
    assert_px(numbers, want)
    focus_viewer(page)
    page.keyboard.press("Escape")  # unfocus: Delete then has nothing to remove
    assert readout.inner_text() == ""
    page.keyboard.press("Delete")
    page.keyboard.press("e")  # focus the selected finding's (only) box again
    assert readout.inner_text().startswith("Finding 4, box 1:")
    before = cells.count()
    page.keyboard.press("Delete")
    page.wait_for_timeout(300)
    assert cells.count() == before
    edits = wait_edits(page, 6)
    assert edits[5] == [3, 0, None]
    assert kernel(page, "out(len(v.report.findings[3].boxes))") == 0
    page.wait_for_timeout(300)
    assert page.locator(f"{VIEWER} >> rect.cxr-box[data-finding='3']").count() == 0
    assert not page.errors


def test_edit_only_on_the_frontal_pane_side_by_side(lab_page) -> None:
    page = lab_page
    show(page, "keep_edits(show(rg1, 'spaced.dcm', editable=True, arrangement='views'))")
    page.wait_for_function(
        """() => { const r = [...document.querySelectorAll('.cxr-viewer')].pop();
                   return r.querySelectorAll('.cxr-pane').length === 2 && +r.dataset.ready >= 2; }"""
    )
    run_cell(page, "v.select(0)")
    page.wait_for_timeout(400)
    x0, y0, x1, y1 = boxes_px(page)[(0, 0)]
    st = pane_state(page, 0)
    a = tuple(round(c) for c in to_page(st, (x0 + x1) / 2, (y0 + y1) / 2))
    drag(page, a, (a[0] + 30, a[1] + 20))
    [edit] = wait_edits(page, 1)
    dx, dy = 30 / st["s"], 20 / st["s"]
    assert edit[:2] == [0, 0]
    assert_px(edit[2], [x0 + dx, y0 + dy, x1 + dx, y1 + dy])
    # A handle dragged off the image stops at the edge of the central square (y = 57 on
    # RG1): outside it the model's frame has no coordinates.
    x0, y0, x1, y1 = boxes_px(page)[(0, 0)]
    crop = kernel(page, "out(v.crop)")
    st = pane_state(page, 0)
    top = tuple(round(c) for c in to_page(st, (x0 + x1) / 2, y0))
    drag(page, top, (top[0], round(st["top"]) + 2))
    edit = wait_edits(page, 2)[1]
    assert edit[2][1] == pytest.approx(crop["y"]) and crop["y"] == 57
    assert_px(edit[2], [x0, crop["y"], x1, y1])
    # Space+drag pans, even from inside the selected box.
    x0, y0, x1, y1 = boxes_px(page)[(0, 0)]
    st = pane_state(page, 0)
    a = tuple(round(c) for c in to_page(st, (x0 + x1) / 2, (y0 + y1) / 2))
    focus_viewer(page)
    page.keyboard.down("Space")
    drag(page, a, (a[0] - 25, a[1] + 15))
    page.keyboard.up("Space")
    panned = pane_state(page, 0)
    assert panned["tx"] - st["tx"] == pytest.approx(-25, abs=1.5)
    assert panned["ty"] - st["ty"] == pytest.approx(15, abs=1.5)
    # On the lateral pane a drag is window/level, never an edit.
    window = kernel(page, "out(list(v.window))")
    lateral = pane_state(page, 1)
    c = (round(lateral["left"] + lateral["w"] / 2), round(lateral["top"] + lateral["h"] / 2))
    drag(page, c, (c[0] + 40, c[1] + 40))
    page.wait_for_timeout(400)
    assert len(kernel(page, "out(edits_px(v))")) == 2  # messages arrive before the cell runs
    assert page.locator(f"{VIEWER} >> .cxr-pane >> nth=1 >> .cxr-handle").count() == 0
    assert page.locator(f"{VIEWER} >> .cxr-pane >> nth=0 >> .cxr-handle").count() == 8
    assert kernel(page, "out(list(v.window))") == window  # the lateral's own window changed
