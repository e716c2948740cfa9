"""StudyBrowser in real JupyterLab and Chromium: a 1,000-study store, search, a bar of the
chart as a filter, keys, review marks, a dragged box stored where it was dropped, an added
finding with a drawn box, and the review seen again after reopening."""

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
    write_notebook,
)

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "docs/images/study_browser.png"
TABLE = ".cxr-b-table"
STUDY = ".cxr-b-study"
REVIEW = ".cxr-browser .cxr-r-panel"

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


def rect_of(page, selector: str) -> list[float]:
    """The SVG rect's x0, y0, x1, y1 in image pixels."""
    return page.eval_on_selector(
        selector,
        """(r) => { const x = +r.getAttribute("x"), y = +r.getAttribute("y");
                    return [x, y, x + +r.getAttribute("width"), y + +r.getAttribute("height")]; }""",
    )


def image_scale(page) -> float:
    """Image pixels per screen pixel in the review editor."""
    return page.eval_on_selector(
        f"{STUDY} .cxr-b-svg",
        "(s) => s.viewBox.baseVal.width / s.getBoundingClientRect().width",
    )


def grab_point(page, selector: str) -> tuple[float, float]:
    """A screen point where the rect itself (not a box over it) receives the pointer."""
    page.locator(f"{STUDY} .cxr-b-svg").scroll_into_view_if_needed()
    point = page.eval_on_selector(
        selector,
        """(box) => {
             const r = box.getBoundingClientRect();
             for (let fy = 0.5; fy < 1; fy += 0.1) for (const fx of [0.5, 0.3, 0.7, 0.2, 0.8]) {
               const x = r.left + fx * r.width, y = r.top + fy * r.height;
               if (document.elementFromPoint(x, y) === box) return [x, y];
             }
             return null;
           }""",
    )
    if not point:
        _debug_shot(page)
    assert point, f"{selector} is covered everywhere"
    return point[0], point[1]


def drag(page, start: tuple[float, float], end: tuple[float, float]) -> None:
    page.mouse.move(*start)
    page.mouse.down()
    for step in range(1, 6):
        f = step / 5
        page.mouse.move(start[0] + (end[0] - start[0]) * f, start[1] + (end[1] - start[1]) * f)
    page.mouse.up()


@pytest.mark.slow
def test_browse_and_review_a_thousand_studies(
    page, jupyter_lab: JupyterLab, lab_root: Path
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
    page.locator(f"{REVIEW} .cxr-r-note").fill("Checked against the lateral.")
    page.locator(f"{REVIEW} .cxr-r-note").blur()
    wait_kernel(page, f"b.reviews.study({sid!r})['note']", "Checked against the lateral.")

    dismiss_popups(page)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.locator(".cxr-browser").first.screenshot(path=str(SCREENSHOT))

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
    row = second.locator(f'{TABLE} .cxr-b-row[data-study="{sid}"] .cxr-b-review')
    assert row.inner_text() == "started"
