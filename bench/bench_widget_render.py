"""ReportGenWidget in Chromium: time from a report set in the kernel to its boxes drawn,
and the bytes sent to the browser per study (the NEMA chest radiograph).

Runs real JupyterLab and Debian's Chromium through the browser-test harness
(tests/browser/jupyter_harness.py). The kernel and the browser share the
machine's clock: the kernel stamps ``time.time()`` just before it sets the
report; a MutationObserver in the page stamps ``performance.timeOrigin +
performance.now()`` when the expected number of ``.cxr-box`` nodes is in the
DOM, and again at the next animation frame (painted). The offset between the
two clocks is measured and subtracted.

Bytes: every websocket frame the page receives while a study is loaded and
generated, split into widget (comm) messages and everything else; and, from
the kernel, the size of the viewer's synced state (binary buffers + JSON).

Run: .venv/bin/python bench/bench_widget_render.py [--runs 15]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import machine, print_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests/browser"))
from jupyter_harness import (
    JupyterLab,
    WebSocketRecorder,
    find_chromium,
    isolated_env,
    launch_chromium,
    open_and_run_notebook,
    run_cell,
    write_notebook,
)

BOX = ".cxr-widget .cxr-box"

OBSERVER = """
(selector) => {
  const log = (window.__cxrBoxes = []);
  let last = -1;
  const stamp = () => performance.timeOrigin + performance.now();
  const check = () => {
    const n = document.querySelectorAll(selector).length;
    if (n === last) return;
    last = n;
    const entry = { n, mutated: stamp(), painted: null };
    log.push(entry);
    requestAnimationFrame(() => { entry.painted = stamp(); });
  };
  new MutationObserver(check).observe(document.body, { childList: true, subtree: true });
  check();
}
"""

SETUP = """
import time, json
from cxr_widgets import ReportGenWidget, sample_study
w = ReportGenWidget()
w
"""


def clock_offset_ms(page) -> float:
    """Browser clock minus Python's ``time.time()``, in ms (median of a few round trips)."""
    samples = []
    for _ in range(7):
        before = time.time() * 1000
        browser = page.evaluate("() => performance.timeOrigin + performance.now()")
        after = time.time() * 1000
        samples.append(browser - (before + after) / 2)
    return statistics.median(samples)


def wait_logged(page, n: int, since_ms: float, timeout: float = 30.0) -> dict:
    """The first observer entry with ``n`` boxes stamped after ``since_ms`` (browser clock)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entries = page.evaluate("() => window.__cxrBoxes")
        for entry in entries:
            if entry["n"] == n and entry["mutated"] >= since_ms and entry["painted"]:
                return entry
        time.sleep(0.02)
    raise TimeoutError(f"{n} boxes never appeared")


def kernel_float(page, code: str) -> float:
    out = run_cell(page, code)
    return float(next(ln for ln in out.splitlines() if ln.startswith("@@"))[2:])


def measure(page, frames: WebSocketRecorder, runs: int) -> dict[str, list[float]]:
    page.evaluate(OBSERVER, BOX)
    offset = clock_offset_ms(page)
    results: dict[str, list[float]] = {
        "study_bytes": [],
        "study_comm_bytes": [],
        "state_bytes": [],
        "report_ms": [],
        "report_paint_ms": [],
    }
    # Bytes per study: load the sample study and generate, from a clean viewer.
    for _ in range(3):
        run_cell(page, "w.clear() if hasattr(w, 'clear') else None")
        mark = frames.mark()
        n = int(
            kernel_float(
                page, "w.load_study(sample_study()); r = w.generate(); print('@@', r.n_boxes)"
            )
        )
        wait_logged(page, n, 0)
        received, _ = frames.since(mark)
        results["study_bytes"].append(sum(map(len, received)))
        results["study_comm_bytes"].append(sum(len(f) for f in received if b"comm_msg" in f))
        results["state_bytes"].append(kernel_float(page, STATE_SIZE))
    # Render time: alternate two reports on the same image (different box counts).
    run_cell(page, TWO_REPORTS)
    for i in range(runs):
        which = "a" if i % 2 else "b"
        n = int(kernel_float(page, f"print('@@', {which}.n_boxes)"))
        t0 = kernel_float(page, f"t0 = time.time() * 1000\nw.show_report({which})\nprint('@@', t0)")
        entry = wait_logged(page, n, t0 + offset)
        results["report_ms"].append(entry["mutated"] - offset - t0)
        results["report_paint_ms"].append(entry["painted"] - offset - t0)
    return results


STATE_SIZE = """
def _size(widget):
    state = widget.get_state()
    total = 0
    for value in state.values():
        if isinstance(value, (bytes, bytearray, memoryview)):
            total += len(value)
        else:
            total += len(json.dumps(value, default=str))
    return total
print('@@', _size(w.viewer))
"""

TWO_REPORTS = """
import copy
a = w.report
b = copy.deepcopy(a)
b.findings = [f for f in b.findings if f.boxes][:-1] or b.findings[:1]
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="report renders to time")
    args = parser.parse_args()
    if find_chromium() is None:
        sys.exit("Chromium not found: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="cxr-bench-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "root").mkdir()
        (tmp / "home").mkdir()
        write_notebook(tmp / "root/bench.ipynb", [SETUP])
        lab = JupyterLab(tmp / "root", isolated_env(tmp / "home")).start()
        try:
            with sync_playwright() as pw:
                context = launch_chromium(pw, tmp / "profile")
                page = context.new_page()
                frames = WebSocketRecorder(page)
                open_and_run_notebook(page, lab, "bench.ipynb")
                page.wait_for_selector(".cxr-widget")
                results = measure(page, frames, args.runs)
                context.close()
        finally:
            lab.stop()

    med = {k: statistics.median(v) for k, v in results.items()}
    print(
        f"ReportGenWidget in Chromium (JupyterLab), NEMA chest radiograph RG1_UNCR; "
        f"medians of {args.runs} renders / 3 studies; {machine()}"
    )
    print_table(
        ["measure", "median", "min", "max", "target"],
        [
            _row("report set in kernel -> boxes in DOM", results["report_ms"], "ms", "< 100 ms"),
            _row("report set in kernel -> next frame", results["report_paint_ms"], "ms", ""),
            _row("websocket bytes to browser per study", results["study_bytes"], "KB", "< 300 KB"),
            _row("  of which widget (comm) messages", results["study_comm_bytes"], "KB", ""),
            _row("viewer synced state (buffers + JSON)", results["state_bytes"], "KB", ""),
        ],
    )
    del med


def _row(name: str, values: list[float], unit: str, target: str) -> tuple[str, ...]:
    scale = 1 / 1000 if unit == "KB" else 1
    fmt = (lambda v: f"{v * scale:.1f} {unit}") if unit == "KB" else (lambda v: f"{v:.1f} ms")
    return (name, fmt(statistics.median(values)), fmt(min(values)), fmt(max(values)), target)


if __name__ == "__main__":
    main()
