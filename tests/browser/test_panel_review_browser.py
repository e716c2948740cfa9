"""Review mode of ReportGenWidget in real JupyterLab and Chromium: generate, name the
reviewer, switch review mode on, mark a finding, drag its box in the viewer; then a new
panel on the same file shows the verdict and the box where it was dropped."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from jupyter_harness import (
    JupyterLab,
    collapse_left_sidebar,
    open_and_run_notebook,
    run_cell,
    write_notebook,
)

REVIEW = ".cxr-widget .cxr-r-panel"

OPEN = """
from cxr_widgets import Box, ReportGenWidget
from cxr_widgets.samples import sample_study
w = ReportGenWidget(demo_latency=0, review="reviews.sqlite")
w.load_study(sample_study())
w
"""

REOPEN = """
w.close()
w2 = ReportGenWidget(demo_latency=0, review="reviews.sqlite", reviewer="tester")
w2.load_study(sample_study())
w2.generate()
w2.review_mode = True
w2
"""


def kernel_json(page, expression: str):
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    out = run_cell(page, f"import json as _j\nprint('@@' + _j.dumps({expression}))")
    return json.loads(next(ln for ln in out.splitlines() if ln.startswith("@@"))[2:])


def wait_kernel(page, expression: str, expected, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = kernel_json(page, expression)
        if value == expected:
            return value
        time.sleep(0.3)
    pytest.fail(f"{expression} is {value!r}, expected {expected!r}")


def pane_state(page, viewer) -> dict:
    """The frontal pane's transform (image px -> pane px) and its place on the page."""
    viewer.scroll_into_view_if_needed()
    return viewer.evaluate(
        """(r) => { const p = r.querySelector('.cxr-pane');
                    const b = p.getBoundingClientRect();
                    return {s: +p.dataset.scale, tx: +p.dataset.tx, ty: +p.dataset.ty,
                            left: b.left, top: b.top}; }"""
    )


def drawn_box(viewer, st: dict, finding: int) -> list[float]:
    """The first box of ``finding`` as the page draws it, in image pixels."""
    x, y, w, h = viewer.locator(f'rect.cxr-box[data-finding="{finding}"][data-box="0"]').evaluate(
        "(b) => ['x', 'y', 'width', 'height'].map((k) => +b.getAttribute(k))"
    )
    s = st["s"]
    return [(x - st["tx"]) / s, (y - st["ty"]) / s, (x + w - st["tx"]) / s, (y + h - st["ty"]) / s]


@pytest.mark.slow
def test_review_a_generated_report_in_the_panel(
    page, jupyter_lab: JupyterLab, lab_root: Path
) -> None:
    write_notebook(lab_root / "review.ipynb", [OPEN])
    open_and_run_notebook(page, jupyter_lab, "review.ipynb", timeout=180)
    collapse_left_sidebar(page)
    page.locator(".cxr-widget button.cxr-generate").first.click()
    wait_kernel(page, "w.report is not None", True, timeout=60)

    # Name the reviewer and switch review mode on in the page.
    page.locator(f"{REVIEW} .cxr-r-reviewer").fill("tester")
    page.locator(f"{REVIEW} .cxr-r-reviewer").press("Tab")
    wait_kernel(page, "w.reviewer", "tester")
    page.locator(f"{REVIEW} .cxr-r-mode input").check()
    wait_kernel(page, "[w.review_mode, w.viewer.editable]", [True, True])
    sid = kernel_json(page, "w.review_study_id")
    assert sid and kernel_json(page, "str(w.reviews.path)").endswith("reviews.sqlite")

    # Mark the first finding.
    page.locator(f"{REVIEW} .cxr-r-finding").first.locator('button[data-verdict="agree"]').click()
    wait_kernel(page, f"w.reviews.findings({sid!r})[0].verdict", "agree")
    page.wait_for_selector(f'{REVIEW} .cxr-r-finding[data-finding="0"] button.cxr-r-on')
    assert "saved #1" in page.locator(f"{REVIEW} .cxr-r-saved").inner_text()

    # Select a grounded finding and drag its box in the viewer.
    finding = kernel_json(page, "next(i for i, f in enumerate(w.report.findings) if f.boxes)")
    page.locator(f'{REVIEW} .cxr-r-finding[data-position="{finding}"] .cxr-r-fnum').click()
    wait_kernel(page, "w.viewer.selected", finding)
    viewer = page.locator(".cxr-widget .cxr-viewer").first
    viewer.locator(f'.cxr-handle[data-finding="{finding}"]').first.wait_for()
    st = pane_state(page, viewer)
    x0, y0, x1, y1 = drawn_box(viewer, st, finding)
    grab = (
        st["left"] + st["tx"] + (x0 + x1) / 2 * st["s"],
        st["top"] + st["ty"] + (y0 + y1) / 2 * st["s"],
    )
    page.mouse.move(*grab)
    page.mouse.down()
    page.mouse.move(grab[0] + 25, grab[1] + 15, steps=8)
    page.mouse.up()
    dx, dy = 25 / st["s"], 15 / st["s"]
    dropped = [x0 + dx, y0 + dy, x1 + dx, y1 + dy]
    expected = kernel_json(
        page,
        f"Box.from_pixels(*{dropped!r}, w.viewer.width, w.viewer.height, w.viewer.frame).as_list()",
    )
    deadline = time.monotonic() + 20
    stored = None
    while time.monotonic() < deadline:
        stored = kernel_json(page, f"w.reviews.findings({sid!r})[{finding}].boxes[0].as_list()")
        if stored == pytest.approx(expected, abs=2e-4):
            break
        time.sleep(0.3)
    assert stored == pytest.approx(expected, abs=2e-4)
    # The model's answer is unchanged; the reference set holds the agreed finding.
    assert kernel_json(page, f"w.report.findings[{finding}].boxes[0].as_list()") != stored

    # A new panel on the same file: the verdict and the moved box are there.
    run_cell(page, REOPEN, timeout=90)
    second = page.locator(".cxr-widget").last
    second.locator(
        '.cxr-r-panel .cxr-r-finding[data-finding="0"] button.cxr-r-on[data-verdict="agree"]'
    ).wait_for()
    assert kernel_json(page, "w2.review_study_id") == sid
    viewer2 = second.locator(".cxr-viewer")
    viewer2.locator(f'rect.cxr-box[data-finding="{finding}"][data-box="0"]').wait_for()
    page.wait_for_timeout(300)  # the first picture is drawn and the pane has its camera
    st2 = pane_state(page, viewer2)
    reopened = drawn_box(viewer2, st2, finding)
    pixels = kernel_json(
        page,
        f"list(Box.from_list({stored!r}).to_pixels(w2.viewer.width, w2.viewer.height, w2.viewer.frame))",
    )
    assert reopened == pytest.approx(pixels, abs=0.5)
    assert reopened == pytest.approx(dropped, abs=1.0)
