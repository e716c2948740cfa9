"""StudyBrowser on a 10,000-study store: open, search, next study, review save, memory.

The bench writes a results store of 10,000 studies (synthetic radiograph-like
PNGs drawn by tests/study_stores.py; demo-style findings from a fixed
vocabulary with boxes on the model's grid, every 40th study failed) through
ResultStore, as a run does. It then measures

- in the kernel (this process): StudyBrowser() construction, ``search`` over
  all findings (words and a regular expression), ``next()`` with the next
  study prepared ahead, one review save (``set_verdict``), and the process's
  resident memory after opening;
- in real JupyterLab and Debian's Chromium (tests/browser/jupyter_harness.py):
  from the cell starting ``StudyBrowser(...)`` to the first table rows in the
  page; typing a search to the new match count shown (the page's 120 ms
  typing debounce subtracted); the Down key to the next study's id and image
  shown; a click on "agree" to "saved" shown; the kernel's resident memory.

Run: .venv/bin/python bench/bench_browser.py [--studies 10000] [--runs 10]
(needs Chromium: apt-get install -y chromium; about 2 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import machine, print_table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests/browser"))
sys.path.insert(0, str(ROOT / "tests"))
from jupyter_harness import (  # noqa: E402
    JupyterLab,
    collapse_left_sidebar,
    find_chromium,
    isolated_env,
    launch_chromium,
    open_and_run_notebook,
    run_cell,
    write_notebook,
)
from study_stores import write_store  # noqa: E402

DEBOUNCE_MS = 120  # browser.js waits this long after the last keystroke
SEARCHES = ["pleural effusion", "nodule left", "heart", "catheter vena", "no pneumothorax"]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def ms(values: list[float]) -> str:
    """The median, and how many runs timed out (NaN) if any."""
    done = [v for v in values if v == v]
    lost = len(values) - len(done)
    text = f"{statistics.median(done):.1f}" if done else "n/a"
    return text + (f" ({lost} of {len(values)} timed out)" if lost else "")


def kernel_side(store: Path, manifest: Path, runs: int) -> list[tuple[str, str, str]]:
    from cxr_widgets import StudyBrowser

    before = rss_mb()
    started = time.perf_counter()
    browser = StudyBrowser(store, manifest=manifest, reviewer="bench")
    opened = (time.perf_counter() - started) * 1000
    memory = rss_mb()
    words, regex = [], []
    for text in SEARCHES * 2:
        t = time.perf_counter()
        browser.search(text)
        words.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        browser.search(r"small (left|right) pleural|nodule", regex=True)
        regex.append((time.perf_counter() - t) * 1000)
    browser.search("")
    steps = []
    for _ in range(runs):
        ahead = browser._images.get(
            browser.study_ids[browser.study_ids.index(browser.selected) + 1]
        )
        if ahead is not None:
            ahead.result()  # what a reader's pause gives the prefetch
        t = time.perf_counter()
        browser.next()
        steps.append((time.perf_counter() - t) * 1000)
    saves = []
    ids = [
        s for s in browser.study_ids[:400] if browser.table.n_findings[browser.table.index_of[s]]
    ]
    for n, sid in enumerate(ids[: runs * 5]):
        t = time.perf_counter()
        browser.reviews.set_verdict(sid, 0, ("agree", "disagree", "unsure")[n % 3])
        saves.append((time.perf_counter() - t) * 1000)
    actions = []
    browser.review_mode = True
    browser.select(ids[0])
    for n in range(runs * 2):
        t = time.perf_counter()
        browser.review._on_action(
            None, {"action": "verdict", "index": 0, "verdict": ("agree", "unsure")[n % 2]}, None
        )
        actions.append((time.perf_counter() - t) * 1000)
    browser.close()
    return [
        ("open (StudyBrowser())", f"{opened:.0f} ms", "< 2000 ms"),
        ("search, words (median)", f"{ms(words)} ms", "< 100 ms"),
        ("search, regex (median)", f"{ms(regex)} ms", "< 100 ms"),
        ("next study, prepared ahead (median)", f"{ms(steps)} ms", "< 300 ms"),
        ("review save, set_verdict (median)", f"{ms(saves)} ms", "< 50 ms"),
        ("review click handled: save + what is sent (median)", f"{ms(actions)} ms", ""),
        (
            "memory after open (process RSS)",
            f"{memory:.0f} MB (+{memory - before:.0f})",
            "< 500 MB",
        ),
    ]


OPEN = """
import json, time, sys
sys.path.insert(0, {tests!r})
from cxr_widgets import StudyBrowser
t0 = time.time() * 1000
b = StudyBrowser({store!r}, manifest={manifest!r}, reviewer="bench")
b
"""

FIRST_ROWS = """
() => {
  const done = () => document.querySelector(".cxr-b-table .cxr-b-row[data-study]");
  new MutationObserver((_, obs) => {
    if (done()) { obs.disconnect(); window.__cxrFirstRows = performance.timeOrigin + performance.now(); }
  }).observe(document.body, { childList: true, subtree: true });
}
"""

TYPE_SEARCH = """
(text) => new Promise((resolve) => {
  setTimeout(() => resolve(NaN), 20000);
  const input = document.querySelector(".cxr-b-table .cxr-b-search");
  const count = document.querySelector(".cxr-b-table .cxr-b-count");
  const before = count.textContent;
  const t0 = performance.now();
  new MutationObserver((_, obs) => {
    if (count.textContent !== before) { obs.disconnect(); resolve(performance.now() - t0); }
  }).observe(count, { childList: true, characterData: true, subtree: true });
  input.value = text;
  input.dispatchEvent(new Event("input"));
})
"""

NEXT_STUDY = """
() => new Promise((resolve) => {
  setTimeout(() => resolve(NaN), 20000);
  // The panel redraws its head, so look the nodes up again on every mutation. The viewer
  // stamps data-picture-of on its root when a new image is first drawn on its canvas.
  const id = () => document.querySelector(".cxr-b-study .cxr-b-study-id").textContent;
  const viewer = document.querySelector(".cxr-browser .cxr-viewer");
  const picture = () => viewer.dataset.pictureOf;
  const before = [id(), picture()];
  const viewport = document.querySelector(".cxr-b-table .cxr-b-viewport");
  viewport.focus();
  const t0 = performance.now();
  const check = (_, obs) => {
    if (id() !== before[0] && picture() !== before[1]) {
      obs.disconnect();
      resolve(performance.now() - t0);
    }
  };
  new MutationObserver(check).observe(document.body, {
    childList: true, subtree: true, characterData: true, attributes: true,
    attributeFilter: ["data-picture-of"],
  });
  viewport.dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowDown", bubbles: true }));
})
"""

CLICK_AGREE = """
(n) => new Promise((resolve) => {
  setTimeout(() => resolve([NaN, NaN, NaN, NaN]), 20000);
  const saved = document.querySelector(".cxr-browser .cxr-r-panel .cxr-r-saved");
  const before = saved.textContent;
  const buttons = '.cxr-browser .cxr-r-panel .cxr-r-finding button[data-verdict]';
  const button = document.querySelectorAll(buttons)[n % 3];
  const t0 = performance.now();
  new MutationObserver((_, obs) => {
    if (saved.textContent !== before) {
      obs.disconnect();
      // "saved #n at hh:mm:ss (verdict, 8 ms)": the kernel's own time for the save.
      const inKernel = Number((/, (\\d+) ms\\)/.exec(saved.textContent) || [])[1]);
      resolve([performance.now() - t0, inKernel, performance.timeOrigin + t0,
               performance.timeOrigin + performance.now()]);
    }
  }).observe(saved, { childList: true, characterData: true, subtree: true });
  button.click();
})
"""


# Wraps the review controls' message handler to stamp when each click arrives and is done
# (wall clock, ms), to split the page's figure into the way in, the kernel and the way back.
TIME_HANDLER = """
import time as _time
_marks = []
_handler = b.review._on_action
def _timed(widget, content, buffers):
    start = _time.time() * 1000
    _handler(widget, content, buffers)
    _marks.append((start, _time.time() * 1000))
b.review.panel.on_msg(_handler, remove=True)
b.review.panel.on_msg(_timed)
"""


def page_side(store: Path, manifest: Path, runs: int, work: Path) -> list[tuple[str, str, str]]:
    from playwright.sync_api import sync_playwright

    root = work / "lab"
    root.mkdir()
    lab = JupyterLab(root_dir=root, env=isolated_env(work / "home")).start()
    pw = sync_playwright().start()
    context = launch_chromium(pw, work / "profile")
    try:
        page = context.new_page()
        page.set_default_timeout(120_000)
        write_notebook(root / "bench.ipynb", ["print('ready')"])
        open_and_run_notebook(page, lab, "bench.ipynb")
        collapse_left_sidebar(page)
        page.evaluate(FIRST_ROWS)
        run_cell(
            page,
            OPEN.format(tests=str(ROOT / "tests"), store=str(store), manifest=str(manifest)),
            timeout=120,
        )
        page.wait_for_function("() => window.__cxrFirstRows !== undefined")
        first_rows = page.evaluate("() => window.__cxrFirstRows")
        t0 = json.loads(run_cell(page, "print(json.dumps(t0))").strip().splitlines()[-1])
        open_ms = first_rows - t0
        searches = []
        for text in SEARCHES * 2:  # from the full table each time, so the count changes
            searches.append(page.evaluate(TYPE_SEARCH, text) - DEBOUNCE_MS)
            page.evaluate(TYPE_SEARCH, "")
        steps = []
        for _ in range(runs):
            time.sleep(0.4)  # a reader's pause: the prefetch of the next study finishes
            steps.append(page.evaluate(NEXT_STUDY))
        run_cell(
            page,
            "b.review_mode = True\nb.select(next(s for s in b.study_ids if b.table.n_findings[b.table.index_of[s]] >= 3))",
        )
        page.wait_for_selector(".cxr-browser .cxr-r-panel .cxr-r-finding button[data-verdict]")
        run_cell(page, TIME_HANDLER)
        clicks = [page.evaluate(CLICK_AGREE, n) for n in range(runs)]
        saves = [c[0] for c in clicks]
        saving = [c[1] for c in clicks]
        # Where the time goes: the page's clock and the kernel's are the same machine's.
        marks = json.loads(run_cell(page, "print(json.dumps(_marks))").strip().splitlines()[-1])
        inbound = [m[0] - c[2] for m, c in zip(marks, clicks, strict=False)]
        handler = [m[1] - m[0] for m in marks]
        outbound = [c[3] - m[1] for m, c in zip(marks, clicks, strict=False)]
        memory = (
            run_cell(
                page,
                "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmRSS')][0])",
            )
            .strip()
            .splitlines()[-1]
        )
    finally:
        context.close()
        pw.stop()
        lab.stop()
    return [
        ("open: cell start to first table rows", f"{open_ms:.0f} ms", "< 2000 ms"),
        ("search typed to new count shown (median)", f"{ms(searches)} ms", "< 100 ms"),
        ("Down key to next study's id and image (median)", f"{ms(steps)} ms", "< 300 ms"),
        ("click 'agree' to 'saved' shown (median)", f"{ms(saves)} ms", "< 50 ms"),
        ("  of which the save in the kernel (median)", f"{ms(saving)} ms", ""),
        ("  click to the kernel's handler (median)", f"{ms(inbound)} ms", ""),
        ("  the kernel's handler, save included (median)", f"{ms(handler)} ms", ""),
        ("  handler done to 'saved' shown (median)", f"{ms(outbound)} ms", ""),
        ("kernel memory (RSS)", f"{int(memory) / 1024:.0f} MB", "< 500 MB"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--no-browser", action="store_true", help="kernel-side figures only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        made = write_store(work / "run", args.studies, failed_every=40)
        print(
            f"store: {args.studies} studies written in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
        rows = [
            (f"kernel: {a}", b, c) for a, b, c in kernel_side(made.store, made.manifest, args.runs)
        ]
        print_table(["measure", "value", "goal"], rows)
        sys.stdout.flush()
        if not args.no_browser:
            if find_chromium() is None:
                sys.exit("Chromium not found: apt-get install -y chromium (or --no-browser)")
            page = page_side(made.store, made.manifest, args.runs, work)
            rows += [(f"page: {a}", b, c) for a, b, c in page]
    load = "/".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"\n{machine()}; {args.studies} studies, {args.runs} runs; load average {load}\n")
    print_table(["measure", "value", "goal"], rows)


if __name__ == "__main__":
    main()
