"""The JupyterLab extension in real JupyterLab and Chromium: open a DICOM from the file
browser, window/level and zoom it, "Report..." into a notebook, the launcher card and a
palette command."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from jupyter_harness import JupyterLab, dismiss_popups, screenshot_for_docs

from cxr_widgets.images import load_pixels

VIEWER = ".cxr-Viewer"
READY = '.cxr-Viewer[data-state="ready"]'

#: Canvas mean over a square in image coordinates, and the viewer's zoom and origin.
CANVAS_MEAN = """([x, y, r]) => {
  const viewer = document.querySelector('.cxr-Viewer');
  const canvas = viewer.querySelector('canvas');
  const zoom = Number(viewer.dataset.zoom);
  const [ox, oy] = viewer.dataset.origin.split(',').map(Number);
  const cx = Math.round((x - ox) * zoom), cy = Math.round((y - oy) * zoom);
  const half = Math.max(1, Math.round(r * zoom));
  const data = canvas.getContext('2d').getImageData(cx - half, cy - half, 2 * half, 2 * half).data;
  let sum = 0;
  for (let i = 0; i < data.length; i += 4) sum += data[i];
  return sum / (data.length / 4);
}"""


def _displayed(rg1: Path, x: int, y: int, r: int, window: tuple[float, float]) -> float:
    """What the viewer should show around image pixel (x, y): the file's values windowed."""
    pixels = load_pixels(rg1)
    center, width = window
    values = pixels.values[y - r : y + r, x - r : x + r].astype(np.float64)
    gray = np.clip((values - (center - width / 2)) / width * 255, 0, 255)
    return float((255 - gray if pixels.invert else gray).mean())


@pytest.fixture(scope="module")
def dicom_name(jupyter_lab: JupyterLab, rg1_path: Path) -> str:
    name = "ext_rg1.dcm"
    shutil.copy(rg1_path, jupyter_lab.root_dir / name)
    return name


@pytest.fixture
def lab_page(page, jupyter_lab: JupyterLab):
    page.set_viewport_size({"width": 1300, "height": 900})
    page.goto(f"{jupyter_lab.base_url}/lab?reset&token={jupyter_lab.token}")
    page.wait_for_selector(".jp-DirListing-item", timeout=60_000)
    dismiss_popups(page)
    return page


def _open_from_file_browser(page, name: str) -> None:
    page.locator(".jp-DirListing-item", has_text=name).first.dblclick()
    page.wait_for_selector(READY, timeout=60_000)


def test_double_click_a_dicom_shows_it_bone_bright_with_its_window(
    lab_page, dicom_name: str, rg1_path: Path, tmp_path: Path
) -> None:
    page = lab_page
    _open_from_file_browser(page, dicom_name)
    header = page.locator(f"{VIEWER} .cxr-Viewer-header").inner_text()
    assert "1841 × 1955" in header and "file window 15000/30000" in header
    assert "pixel spacing unknown" in header  # RG1's PixelSpacing is 0\0
    assert "W 30000 L 15000" in page.locator(f"{VIEWER} .cxr-Viewer-window").inner_text()
    window = (15000.0, 30000.0)
    spine = page.evaluate(CANVAS_MEAN, [920, 977, 20])
    lung = page.evaluate(CANVAS_MEAN, [1288, 782, 20])
    assert spine > lung + 40  # bone bright: MONOCHROME1 shown inverted
    assert abs(spine - _displayed(rg1_path, 920, 977, 20, window)) < 8
    assert abs(lung - _displayed(rg1_path, 1288, 782, 20, window)) < 8
    area = page.locator(".jp-MainAreaWidget", has=page.locator(VIEWER))
    screenshot_for_docs(area, tmp_path, "labextension_viewer.png")


def test_drag_changes_the_window_and_wheel_zooms_to_full_resolution_detail(
    lab_page, dicom_name: str
) -> None:
    page = lab_page
    _open_from_file_browser(page, dicom_name)
    canvas = page.locator(f"{VIEWER} canvas")
    box = canvas.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    before = page.locator(VIEWER).get_attribute("data-window")
    lung_before = page.evaluate(CANVAS_MEAN, [1288, 782, 20])
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx - 200, cy - 60, steps=8)  # narrower window, lower level
    page.mouse.up()
    after = page.locator(VIEWER).get_attribute("data-window")
    center, width = map(float, after.split(","))
    c0, w0 = map(float, before.split(","))
    assert width < w0 and center < c0
    assert abs(page.evaluate(CANVAS_MEAN, [1288, 782, 20]) - lung_before) > 5

    for _ in range(12):
        page.mouse.wheel(0, -240)
    page.wait_for_function(
        "() => document.querySelector('.cxr-Viewer').dataset.detail !== undefined", timeout=30_000
    )
    zoom = float(page.locator(VIEWER).get_attribute("data-zoom"))
    detail = page.locator(VIEWER).get_attribute("data-detail")
    _box, scale = detail.split("|")
    assert zoom > 1.0 and float(scale) == 1.0  # full stored resolution in the visible region

    page.keyboard.press("r")  # reset: back to the file's window, fitted
    assert page.locator(VIEWER).get_attribute("data-window") == before


def test_report_button_opens_a_notebook_with_the_study_on_the_demo_backend(
    lab_page, dicom_name: str, jupyter_lab: JupyterLab
) -> None:
    page = lab_page
    _open_from_file_browser(page, dicom_name)
    page.locator(f"{VIEWER} .cxr-Viewer-report").click()
    page.wait_for_selector(".jp-NotebookPanel .cxr-widget", timeout=120_000)
    stem = Path(dicom_name).stem
    assert (jupyter_lab.root_dir / f"{stem}-report.ipynb").exists()
    widget = page.locator(".jp-NotebookPanel .cxr-widget").first
    assert "DEMO" in widget.inner_text()
    widget.locator("button", has_text="Generate").first.click()
    page.wait_for_selector(".jp-NotebookPanel .cxr-widget .cxr-box", timeout=60_000)
    assert page.locator(".jp-NotebookPanel .cxr-widget .cxr-box").count() > 0


@pytest.fixture(scope="module")
def extensionless(jupyter_lab: JupyterLab, rg1_path: Path) -> str:
    """A DICOM file named as PACS exports name them (copied before the page loads)."""
    shutil.copy(rg1_path, jupyter_lab.root_dir / "IM0001")
    return "IM0001"


def test_report_on_a_dicom_named_without_an_extension(
    extensionless: str, lab_page, jupyter_lab: JupyterLab
) -> None:
    """ "Report…" offers a file without an extension; the server checks it by content."""
    page = lab_page
    item = page.locator(".jp-DirListing-item", has_text=extensionless).first
    item.wait_for(timeout=30_000)
    item.click(button="right")
    page.locator(".lm-Menu-itemLabel", has_text="Report… (CXRReportGen").first.click()
    page.wait_for_selector(".jp-NotebookPanel .cxr-widget", timeout=120_000)
    assert (jupyter_lab.root_dir / f"{extensionless}-report.ipynb").exists()
    widget = page.locator(".jp-NotebookPanel .cxr-widget").first
    widget.locator("button", has_text="Generate").first.click()
    page.wait_for_selector(".jp-NotebookPanel .cxr-widget .cxr-box", timeout=60_000)


def test_launcher_card_and_palette_command(lab_page, jupyter_lab: JupyterLab) -> None:
    page = lab_page
    page.locator(".jp-LauncherCard", has_text="CXRReportGen").first.click()
    page.wait_for_selector(".jp-NotebookPanel .cxr-widget", timeout=120_000)
    assert any(p.name.startswith("CXRReportGen") for p in jupyter_lab.root_dir.glob("*.ipynb"))

    page.keyboard.press("Control+Shift+C")
    page.locator(".lm-CommandPalette-input").fill("copy the tutorials")
    page.keyboard.press("Enter")
    dialog = page.locator(".jp-Dialog-content")
    dialog.wait_for(timeout=30_000)
    assert "Copied:" in dialog.inner_text()
    assert (jupyter_lab.root_dir / "05_research_at_scale.ipynb").exists()
    page.locator(".jp-Dialog-button", has_text="Ok").click()


@pytest.fixture(scope="module")
def notebook7(lab_home: Path, tmp_path_factory: pytest.TempPathFactory, rg1_path: Path):
    """Jupyter Notebook 7 (the same extension system) serving a folder with the DICOM."""
    pytest.importorskip("notebook", reason="Notebook 7 is in the test extra: pip install notebook")
    import subprocess
    import sys
    import time
    import urllib.request

    from jupyter_harness import free_port, isolated_env

    root = tmp_path_factory.mktemp("nb7-root")
    shutil.copy(rg1_path, root / "nb7_rg1.dcm")
    home = tmp_path_factory.mktemp("nb7-home")
    port, token = free_port(), "nb7-token-for-tests"
    log = open(home / "notebook.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter",
            "notebook",
            "--ip=127.0.0.1",
            f"--port={port}",
            "--no-browser",
            "--allow-root",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            "--ServerApp.port_retries=0",
        ],
        env=isolated_env(home),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=root,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
            break
        except OSError:
            time.sleep(0.3)
    yield base, token
    process.terminate()
    process.wait(timeout=15)
    log.close()


def test_open_with_chest_xray_viewer_in_notebook_7(chromium, notebook7) -> None:
    base, token = notebook7
    page = chromium.new_page()
    try:
        page.goto(f"{base}/tree?token={token}")
        item = page.locator(".jp-DirListing-item", has_text="nb7_rg1.dcm").first
        item.wait_for(timeout=60_000)
        item.click(button="right")
        page.locator(".lm-Menu-itemLabel", has_text="Open With").first.hover()
        with page.context.expect_page(timeout=30_000) as opened:
            page.locator(".lm-Menu-itemLabel", has_text="Chest X-ray viewer").first.click()
        viewer_page = opened.value
        viewer_page.wait_for_selector(READY, timeout=60_000)
        assert (
            "file window 15000/30000"
            in viewer_page.locator(f"{VIEWER} .cxr-Viewer-header").inner_text()
        )
        viewer_page.close()
    finally:
        page.close()
