"""StudyBrowser in real JupyterLab and Chromium: a 1,000-study store, search, a bar of the
chart as a filter, keys, review marks, a box dragged in the viewer and stored where it was
dropped (model frame, via Box), an added finding with a box drawn in the viewer, and the
review seen again after reopening."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from jupyter_harness import (
    JupyterLab,
    collapse_left_sidebar,
    dismiss_popups,
    open_and_run_notebook,
    run_cell,
    screenshot_for_docs,
    write_notebook,
)

REPO = Path(__file__).resolve().parents[2]
TABLE = ".cxr-b-table"
STUDY = ".cxr-b-study"
REVIEW = ".cxr-browser .cxr-r-panel"
VIEWER = ".cxr-browser .cxr-viewer"

OPEN = f"""
import sys
sys.path.insert(0, {str(REPO / "tests")!r})
from pathlib import Path
from study_stores import write_store
from cxr_widgets import StudyBrowser, Box

run = write_store(Path("run1000"), 1000, failed_every=40)
b = StudyBrowser(run.store, manifest=run.manifest, reviewer="tester")
b
"""


def kernel_json(page, expression: str):
    """``expression`` evaluated in the kernel, decoded from JSON."""
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    out = run_cell(page, f"import json as _j\nprint('@@' + _j.dumps({expression}))")
    line = next(ln for ln in out.splitlines() if ln.startswith("@@"))
    return json.loads(line[2:])


def _debug_shot(page):
    page.screenshot(path="/tmp/sb_debug.png", full_page=False)


def wait_kernel(page, expression: str, expected, timeout: float = 20.0):
    """Poll the kernel until ``expression`` equals ``expected``; the last value."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        try:
            value = kernel_json(page, expression)
        except Exception:
            _debug_shot(page)
            raise
        if value == expected:
            return value
        time.sleep(0.3)
    pytest.fail(f"{expression} is {value!r}, expected {expected!r}")


def count_text(page) -> str:
    return page.locator(f"{TABLE} .cxr-b-count").inner_text()


def visible_ids(page) -> list[str]:
    """Study ids of the drawn table rows, in display order."""
    return page.evaluate(
        """(sel) => [...document.querySelectorAll(sel)]
             .filter((r) => r.style.display !== "none")
             .sort((a, b) => Number(a.dataset.position) - Number(b.dataset.position))
             .map((r) => r.dataset.study)""",
        f"{TABLE} .cxr-b-row",
    )


def pane_state(page, viewer: str) -> dict:
    """The frontal pane's transform (image px -> pane px) and its place on the page."""
    page.locator(viewer).scroll_into_view_if_needed()
    return page.eval_on_selector(
        viewer,
        """(r) => { const p = r.querySelector('.cxr-pane');
                    const b = p.getBoundingClientRect();
                    return {s: +p.dataset.scale, tx: +p.dataset.tx, ty: +p.dataset.ty,
                            left: b.left, top: b.top, w: b.width, h: b.height}; }""",
    )


def to_page(st: dict, x: float, y: float) -> tuple[float, float]:
    """Image point (x, y) on the page, through the pane's camera."""
    return st["left"] + st["tx"] + x * st["s"], st["top"] + st["ty"] + y * st["s"]


def to_image(st: dict, px: float, py: float) -> tuple[float, float]:
    """Page point (px, py) in image pixels, through the pane's camera."""
    return (px - st["left"] - st["tx"]) / st["s"], (py - st["top"] - st["ty"]) / st["s"]


def stored_box(page, store: str, sid: str, finding: int, box: int) -> list[float]:
    """The stored box and the box of the dropped rectangle, both via Box (model frame)."""
    return kernel_json(page, f"{store}.reviews.findings({sid!r})[{finding}].boxes[{box}].as_list()")


def wait_box(page, sid: str, finding: int, box: int, rect: list[float]) -> None:
    """Wait until the stored box is Box.from_pixels of ``rect`` (image pixels)."""
    expected = kernel_json(
        page,
        f"Box.from_pixels(*{list(rect)!r}, b.viewer.widget.width, b.viewer.widget.height, "
        "b.viewer.widget.frame).as_list()",
    )
    deadline = time.monotonic() + 20
    got = None
    while time.monotonic() < deadline:
        try:
            got = stored_box(page, "b", sid, finding, box)
        except Exception:
            got = None
        if got == pytest.approx(expected, abs=2e-4):
            return
        time.sleep(0.3)
    state = kernel_json(
        page, "[b.review.panel.error, b.review.panel.saved, b.viewer.widget.selected]"
    )
    _debug_shot(page)
    pytest.fail(f"stored box {got} is not where it was dropped ({expected}); panel: {state}")


def drag(page, start: tuple[float, float], end: tuple[float, float]) -> None:
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=8)
    page.mouse.up()


@pytest.mark.slow
def test_browse_and_review_a_thousand_studies(
    page, jupyter_lab: JupyterLab, lab_root: Path, tmp_path: Path
) -> None:
    write_notebook(lab_root / "browse.ipynb", [OPEN])
    open_and_run_notebook(page, jupyter_lab, "browse.ipynb", timeout=180)
    collapse_left_sidebar(page)
    page.wait_for_selector(f"{TABLE} .cxr-b-row")
    page.wait_for_function(
        "(sel) => document.querySelector(sel).textContent.startsWith('1000 of 1000')",
        arg=f"{TABLE} .cxr-b-count",
    )
    # Virtualised: a few dozen row nodes for 1,000 studies, and scrolling draws later rows.
    rows = page.locator(f"{TABLE} .cxr-b-row").count()
    assert 10 < rows < 80, rows
    page.locator(f"{TABLE} .cxr-b-viewport").evaluate("(v) => { v.scrollTop = 26 * 500; }")
    page.wait_for_function(
        "(sel) => [...document.querySelectorAll(sel)].some((r) => r.dataset.position === '505')",
        arg=f"{TABLE} .cxr-b-row",
    )

    # Search over finding text: the page shows the kernel's count and order.
    page.locator(f"{TABLE} .cxr-b-search").fill("pleural effusion")
    wait_kernel(page, "b._table.search", "pleural effusion")
    expected = kernel_json(page, "len(b.study_ids)")
    page.wait_for_function(
        "([sel, n]) => document.querySelector(sel).textContent.startsWith(`${n} of 1000`)",
        arg=[f"{TABLE} .cxr-b-count", expected],
    )
    assert 0 < expected < 1000
    page.locator(f"{TABLE} .cxr-b-search").fill("")
    page.wait_for_function(
        "(sel) => document.querySelector(sel).textContent.startsWith('1000 of 1000')",
        arg=f"{TABLE} .cxr-b-count",
    )

    # A bar of the chart filters the table to the studies with that finding.
    bar = page.locator(f"{TABLE} .cxr-b-bar").nth(1)
    finding = bar.get_attribute("data-finding")
    bar_count = int(bar.locator(".cxr-b-bar-count").inner_text())
    bar.click()
    wait_kernel(page, "b._table.finding", finding)
    page.wait_for_function(
        "([sel, n]) => document.querySelector(sel).textContent.startsWith(`${n} of 1000`)",
        arg=[f"{TABLE} .cxr-b-count", bar_count],
    )
    ids = kernel_json(page, "b.study_ids")
    assert len(ids) == bar_count
    assert visible_ids(page)[:10] == ids[:10]
    assert page.locator(f"{TABLE} .cxr-b-bar.cxr-b-active").count() == 1

    # Keys step through the filtered order.
    page.locator(f'{TABLE} .cxr-b-row[data-study="{ids[0]}"]').click()
    wait_kernel(page, "b.selected", ids[0])
    page.locator(f"{TABLE} .cxr-b-viewport").focus()  # the kernel check moved the focus away
    page.keyboard.press("ArrowDown")
    page.keyboard.press("j")
    wait_kernel(page, "b.selected", ids[2])
    page.locator(f"{TABLE} .cxr-b-viewport").focus()
    page.keyboard.press("ArrowUp")
    wait_kernel(page, "b.selected", ids[1])
    page.wait_for_function(
        "([sel, id]) => document.querySelector(sel).textContent === id",
        arg=[f"{STUDY} .cxr-b-study-id", ids[1]],
    )

    # Pick a study with a grounded finding and review it.
    sid = kernel_json(
        page,
        "next(s for s in b.study_ids if b.table.n_boxes[b.table.index_of[s]] and b.table.ok[b.table.index_of[s]])",
    )
    run_cell(page, f"b.select({sid!r})")
    page.locator(f"{REVIEW} .cxr-r-mode input").check()
    page.wait_for_selector(f"{REVIEW} .cxr-r-finding button[data-verdict]")
    page.locator(f"{REVIEW} .cxr-r-finding").first.locator('button[data-verdict="agree"]').click()
    wait_kernel(page, f"b.reviews.findings({sid!r})[0].verdict", "agree")
    page.locator(f"{REVIEW} .cxr-r-finding").nth(1).locator(
        'button[data-verdict="disagree"]'
    ).click()
    wait_kernel(page, f"b.reviews.findings({sid!r})[1].verdict", "disagree")
    page.wait_for_selector(f'{REVIEW} .cxr-r-finding[data-finding="1"] button.cxr-r-on')

    # Drag a box in the viewer: it is stored where it was dropped (model frame, via Box).
    finding = kernel_json(page, "next(i for i, f in enumerate(b.report.findings) if f.boxes)")
    page.locator(f'{REVIEW} .cxr-r-finding[data-position="{finding}"] .cxr-r-fnum').click()
    wait_kernel(page, "b.viewer.widget.selected", finding)
    page.wait_for_selector(f'{VIEWER} .cxr-handle[data-finding="{finding}"]')
    x0, y0, x1, y1 = kernel_json(
        page,
        f"[v for s in b.viewer.widget.boxes if s['finding'] == {finding} and s['box'] == 0 "
        "for v in (s['x0'], s['y0'], s['x1'], s['y1'])]",
    )
    st = pane_state(page, VIEWER)
    grab = to_page(st, (x0 + x1) / 2, (y0 + y1) / 2)
    drop = (grab[0] + 30, grab[1] + 20)
    drag(page, grab, drop)
    dx, dy = 30 / st["s"], 20 / st["s"]
    dropped = [x0 + dx, y0 + dy, x1 + dx, y1 + dy]
    wait_box(page, sid, finding, 0, dropped)
    assert kernel_json(page, f"b.reviews.findings({sid!r})[{finding}].edited") is True

    # Add a finding the model missed: it is selected, ready for its boxes.
    page.locator(f"{REVIEW} .cxr-r-add-text").fill("Small left apical pneumothorax.")
    page.locator(f"{REVIEW} .cxr-r-add").click()
    added = wait_kernel(
        page,
        f"[f.text for f in b.reviews.findings({sid!r}) if f.source == 'added']",
        ["Small left apical pneumothorax."],
    )
    assert added
    page.wait_for_selector(f"{REVIEW} .cxr-r-finding.cxr-r-added.cxr-r-active")
    # ... and its box, drawn by dragging on the image away from the other boxes.
    added_at = kernel_json(page, "len(b.viewer.widget.report.findings) - 1")
    wait_kernel(page, "b.viewer.widget.selected", added_at)
    # The page has the new report and its selection (not only the kernel) before the drag.
    page.wait_for_selector(f'{VIEWER} .cxr-row.cxr-selected[data-finding="{added_at}"]')
    shapes = kernel_json(
        page, "[[s['x0'], s['y0'], s['x1'], s['y1']] for s in b.viewer.widget.boxes]"
    )
    w, h = kernel_json(page, "[b.viewer.widget.width, b.viewer.widget.height]")
    st = pane_state(page, VIEWER)  # after the cells: running one scrolls the notebook
    size = (40 / st["s"], 30 / st["s"])  # image pixels of a 40 x 30 px drag

    def free(x: float, y: float) -> bool:
        return all(x + size[0] < a or x > c or y + size[1] < b_ or y > d for a, b_, c, d in shapes)

    def on_pane(x: float, y: float) -> bool:
        """The page point is on the viewer's pane, not under a bar or off the screen."""
        return page.evaluate(
            "([x, y]) => !!(document.elementFromPoint(x, y) || {closest: () => null})"
            ".closest('.cxr-browser .cxr-pane')",
            [x, y],
        )

    start = next(
        at
        for y in (h * f for f in (0.3, 0.45, 0.15, 0.6, 0.05, 0.75))
        for x in (w * f for f in (0.3, 0.45, 0.6, 0.15))
        if free(x, y) and on_pane(*(at := to_page(st, x, y))) and on_pane(at[0] + 40, at[1] + 30)
    )
    end = (start[0] + 40, start[1] + 30)
    drag(page, start, end)
    wait_box(page, sid, -1, 0, [*to_image(st, *start), *to_image(st, *end)])
    page.locator(f"{REVIEW} .cxr-r-note").fill("Checked against the lateral.")
    page.locator(f"{REVIEW} .cxr-r-note").blur()
    wait_kernel(page, f"b.reviews.study({sid!r})['note']", "Checked against the lateral.")

    dismiss_popups(page)
    # Tall enough for the whole browser: a taller element is shot under JupyterLab's bars.
    page.set_viewport_size({"width": 1400, "height": 1900})
    page.locator(".cxr-browser").first.scroll_into_view_if_needed()
    page.wait_for_timeout(400)
    screenshot_for_docs(page.locator(".cxr-browser").first, tmp_path, "study_browser.png")
    page.set_viewport_size({"width": 1400, "height": 1000})

    # Reopen (a new browser on the same file): the review is there.
    run_cell(
        page,
        "b.close()\n"
        "b2 = StudyBrowser(run.store, manifest=run.manifest, reviewer='tester')\n"
        f"b2.select({sid!r})\nb2.review_mode = True\nb2",
    )
    second = page.locator(".cxr-browser").last
    second.locator(
        '.cxr-r-panel .cxr-r-finding[data-finding="0"] button.cxr-r-on[data-verdict="agree"]'
    ).wait_for()
    assert (
        second.locator(
            '.cxr-r-panel .cxr-r-finding[data-finding="1"] button.cxr-r-on'
        ).get_attribute("data-verdict")
        == "disagree"
    )
    assert second.locator(".cxr-r-panel .cxr-r-finding.cxr-r-added input").input_value() == (
        "Small left apical pneumothorax."
    )
    assert second.locator(".cxr-r-panel .cxr-r-note").input_value() == (
        "Checked against the lateral."
    )
    # The viewer of the reopened browser draws the box where it was dropped.
    reopened = kernel_json(
        page,
        f"[[s[k] for k in ('x0', 'y0', 'x1', 'y1')] for s in b2.viewer.widget.boxes "
        f"if s['finding'] == {finding}][0]",
    )
    assert reopened == pytest.approx(dropped, abs=0.05)
    row = second.locator(f'{TABLE} .cxr-b-row[data-study="{sid}"] .cxr-b-review')
    assert row.inner_text() == "started"
