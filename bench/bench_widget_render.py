"""ReportGenWidget in Chromium: time from a report set in the kernel to its boxes drawn,
and the bytes sent to the browser per study (the NEMA chest radiograph).

Runs real JupyterLab and Debian's Chromium through the browser-test harness
(tests/browser/jupyter_harness.py). The kernel and the browser share the
machine's clock: the kernel stamps ``time.time()`` just before
``w.show_report(report)``; a MutationObserver in the page stamps
``performance.timeOrigin + performance.now()`` when the report's ``.cxr-box``
nodes are added, and again at the next animation frame; an init script stamps
each widget message as it arrives on the page's websocket. The clock offset is
measured and subtracted.

By default the report is set from the kernel's event loop while no cell runs,
which is how the Generate button's result arrives. ``--trigger cell`` sets it
inside a running cell instead: then JupyterLab's own work for the executing
cell (prompt, new cell editor) and the execution messages queue in front of
the widget's message, adding ~50-70 ms on this machine to any widget, as the
minimal anywidget row shows. ``--nodelay`` turns on TCP_NODELAY for
jupyter-server's kernel websocket (Nagle's algorithm costs a Python websocket
client ~40 ms per message; in Chromium it made no measurable difference).

Three cases, interleaved so they share the machine's load: a minimal
anywidget drawing rects (the floor), a new report on the image already shown
(boxes and table only), and a new report with a new image (the display JPEG is
sent too; "image decoded" is when the viewer first draws the new image on its
canvas, which it stamps on its root element).

Bytes: every websocket frame the page receives while the sample study is
loaded and generated (through the buttons, and through load_study() and
generate() in code), with the widget (comm) messages counted apart; and the
size of the viewer's synced state (binary buffers + JSON) from the kernel.

Run: .venv/bin/python bench/bench_widget_render.py [--runs 15] [--studies 3]
     [--trigger loop|cell] [--nodelay]
(needs Chromium: apt-get install -y chromium; about 1.5 minutes).
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
([name, selector]) => {
  const stamp = () => performance.timeOrigin + performance.now();
  window.__cxrLogs = window.__cxrLogs || {};
  const log = (window.__cxrLogs[name] = []);
  const isBox = (node) => node.nodeType === 1 && node.matches(selector);
  // One entry per batch of mutations that adds boxes (a redraw replaces them all).
  const record = (mutations) => {
    if (mutations && !mutations.some((m) => [...m.addedNodes].some(isBox))) return;
    const entry = { n: document.querySelectorAll(selector).length, mutated: stamp(), painted: null };
    log.push(entry);
    requestAnimationFrame(() => { entry.painted = stamp(); });
  };
  new MutationObserver(record).observe(document.body, { childList: true, subtree: true });
  record(null);
}
"""

IMAGE_OBSERVER = """
() => {
  const images = (window.__cxrImages = []);
  // The viewer stamps data-picture-at (wall clock) when a new image is first drawn
  // on its canvas.
  new MutationObserver((mutations) => {
    for (const m of mutations) {
      const at = Number(m.target.dataset.pictureAt);
      if (m.target.classList.contains("cxr-viewer") && at) images.push(at);
    }
  }).observe(document.body, { attributes: true, attributeFilter: ["data-picture-at"], subtree: true });
}
"""

#: The floor: a minimal anywidget that draws ``n`` SVG rects when ``n`` changes, so the
#: table separates the Jupyter message path (kernel -> server -> websocket) from the viewer.
PROBE = '''
import anywidget, traitlets

class Probe(anywidget.AnyWidget):
    _esm = """
    function render({ model, el }) {
      const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
      const draw = () => {
        svg.replaceChildren();
        for (let i = 0; i < model.get("n"); i++) {
          const r = document.createElementNS("http://www.w3.org/2000/svg", "rect");
          r.setAttribute("class", "cxr-probe-box");
          r.setAttribute("width", 5); r.setAttribute("height", 5); r.setAttribute("x", 6 * i);
          svg.append(r);
        }
      };
      model.on("change:n", draw);
      draw();
      el.append(svg);
    }
    export default { render };
    """
    n = traitlets.Int(0).tag(sync=True)

probe = Probe()
probe
'''

SETUP = """
import time, json, dataclasses
from cxr_widgets import ReportGenWidget, sample_study
w = ReportGenWidget()
w
"""

#: Kernel-side size of the viewer's synced state: binary buffers + JSON.
STATE_SIZE = """
_state = w.viewer.get_state()
print('@@', sum(len(v) if isinstance(v, (bytes, bytearray, memoryview))
               else len(json.dumps(v, default=str)) for v in _state.values()))
"""

#: Two reports on the same image with different box counts (a: all, b: one box fewer),
#: and ``trigger``: run an action in this cell (delay None) or later from the kernel's
#: event loop while no cell runs, as the Generate button's result arrives.
TWO_REPORTS = """
import asyncio
a = w.report
b = dataclasses.replace(a, findings=[f for f in a.findings if f.boxes][:-1])
from PIL import Image
base = Image.open(w.studypanel.slots["frontal"].source).convert("L")  # the frontal on screen
shown = base  # "same image" reports reuse it
stamps = []

def trigger(action, delay):
    def go():
        t0 = time.time() * 1000
        action()
        stamps.append([t0, time.time() * 1000])
    if delay is None:
        go()
    else:
        asyncio.get_running_loop().call_later(delay, go)

print('@@', json.dumps([a.n_boxes, b.n_boxes]))
"""

#: Show a report; ``{fresh}`` True gives it a new image (the radiograph one or two grey
#: levels brighter, so its display JPEG differs and is sent again, as for a new study).
SHOW = """
if {fresh}:
    shown = base.point(lambda v: min(255, v + 1 + {run} % 2))
_r = dataclasses.replace({which})
trigger(lambda r=_r, i=shown: w.show_report(r, image=i), {delay})  # the image it is shown on
print('@@', 0)
"""

PROBE_SET = """
trigger(lambda: setattr(probe, "n", {n}), {delay})
print('@@', 0)
"""

LOAD_AND_GENERATE = """
w.studypanel.slots['frontal'].clear()
print('@@', 0)
"""


#: Installed before JupyterLab loads: stamps the arrival of every widget (comm) message
#: on the page's websockets, before JupyterLab's own handler runs.
WS_STAMPS = """
(() => {
  const stamp = () => performance.timeOrigin + performance.now();
  const arrivals = (window.__cxrWs = []);
  const decoder = new TextDecoder();
  const Original = window.WebSocket;
  window.WebSocket = class extends Original {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (event) => {
        const t = stamp();
        const data = event.data;
        const head = typeof data === "string" ? data.slice(0, 800)
          : data instanceof ArrayBuffer
            ? decoder.decode(new Uint8Array(data, 0, Math.min(800, data.byteLength))) : "";
        if (head.includes('"comm_msg"')) arrivals.push(t);
      });
    }
  };
})();
"""


def first_arrival(page, since_ms: float) -> float:
    """Browser time of the first comm message that arrived after ``since_ms``, allowing
    for the error of the clock offset (a loaded machine can make a message arrive
    within a millisecond of the kernel's stamp)."""
    later = [t for t in page.evaluate("() => window.__cxrWs") if t >= since_ms - CLOCK_SLACK_MS]
    if not later:
        raise TimeoutError("no widget message arrived")
    return max(later[0], since_ms)


#: How far before the kernel's stamp (after subtracting the measured offset) a message
#: may appear to arrive: the offset is measured to about a millisecond.
CLOCK_SLACK_MS = 3.0


#: jupyter_server_config.py for --nodelay: Tornado leaves Nagle's algorithm on unless a
#: handler calls set_nodelay(True), and jupyter-server's kernel websocket does not.
NODELAY_CONFIG = """
from jupyter_server.services.kernels.websocket import KernelWebsocketHandler

_open = KernelWebsocketHandler.open


async def _open_nodelay(self, *args, **kwargs):
    self.set_nodelay(True)
    return await _open(self, *args, **kwargs)


KernelWebsocketHandler.open = _open_nodelay
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


def wait_logged(page, name: str, n: int, since_ms: float, timeout: float = 30.0) -> dict:
    """The first ``name`` observer entry with ``n`` boxes stamped after ``since_ms``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in page.evaluate("(name) => window.__cxrLogs[name]", name):
            if entry["n"] == n and entry["mutated"] >= since_ms and entry["painted"]:
                return entry
        time.sleep(0.02)
    log = page.evaluate("(name) => window.__cxrLogs[name]", name)
    raise TimeoutError(f"{n} boxes never appeared after {since_ms:.0f}; observer log: {log}")


def wait_image(page, since_ms: float, timeout: float = 30.0) -> float:
    """Browser time of the first viewer image decoded after ``since_ms``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        later = [t for t in page.evaluate("() => window.__cxrImages") if t >= since_ms]
        if later:
            return later[0]
        time.sleep(0.02)
    raise TimeoutError("the viewer image never loaded")


def kernel_value(page, code: str):
    """Run ``code`` in the kernel; the JSON it printed after '@@'."""
    out = run_cell(page, code)
    return json.loads(next(ln for ln in out.splitlines() if ln.startswith("@@"))[2:])


def triggered(page, code: str, delay: float | None) -> tuple[float, float]:
    """Run ``code`` (which calls ``trigger``); the kernel's stamps before and after the action."""
    kernel_value(page, code)
    if delay is not None:
        time.sleep(delay + 0.3)  # the action runs while no cell executes
    return tuple(kernel_value(page, "print('@@', json.dumps(stamps[-1]))"))


def measure(
    page, frames: WebSocketRecorder, runs: int, studies: int, delay: float | None
) -> dict[str, list[float]]:
    page.evaluate(OBSERVER, ["viewer", BOX])
    page.evaluate(OBSERVER, ["probe", ".cxr-probe-box"])
    page.evaluate(IMAGE_OBSERVER)
    offset = clock_offset_ms(page)
    results: dict[str, list[float]] = {k: [] for k in ROWS}
    results["clock_offset_ms"] = [offset]
    # Bytes per study: load the sample study into an empty form and generate.
    for _ in range(studies):
        kernel_value(page, LOAD_AND_GENERATE)
        mark = frames.mark()
        n = kernel_value(
            page, "w.load_study(sample_study()); r = w.generate(); print('@@', r.n_boxes)"
        )
        wait_logged(page, "viewer", n, 0)
        received, _ = frames.since(mark)
        results["study_bytes"].append(sum(map(len, received)))
        results["study_comm_bytes"].append(sum(len(f) for f in received if b"comm_msg" in f))
        results["state_bytes"].append(kernel_value(page, STATE_SIZE))
    # The same through the buttons, as a researcher does it (spinner updates included).
    n = kernel_value(page, "print('@@', w.report.n_boxes)")
    for _ in range(studies):
        kernel_value(page, LOAD_AND_GENERATE)
        mark = frames.mark()
        since = time.time() * 1000 + offset
        page.click(".cxr-widget button.cxr-load-sample")
        page.locator(
            '.cxr-widget .cxr-prep[data-slot="frontal"]', has_text="cxr_frontal.jpg"
        ).wait_for()
        page.click(".cxr-widget button.cxr-generate")
        wait_logged(page, "viewer", n, since)
        page.wait_for_function(
            "() => !document.querySelector('.cxr-widget button.cxr-generate').disabled"
        )
        time.sleep(0.3)  # trailing status messages
        received, _ = frames.since(mark)
        results["ui_study_bytes"].append(sum(map(len, received)))
    counts = dict(zip("ab", kernel_value(page, TWO_REPORTS), strict=True))
    # Render times; the three cases interleaved so that they share the machine's load.
    for i in range(runs):
        which = "ab"[i % 2 == 0]  # starts with b: a is on screen after generate
        t0, _ = triggered(page, PROBE_SET.format(n=counts[which], delay=delay), delay)
        entry = wait_logged(page, "probe", counts[which], t0 + offset)
        results["probe_ms"].append(entry["mutated"] - offset - t0)
        results["probe_ws_ms"].append(first_arrival(page, t0 + offset) - offset - t0)
        for fresh, prefix in ((False, "report"), (True, "image")):
            mark = frames.mark()
            code = SHOW.format(which=which, fresh=fresh, run=i, delay=delay)
            t0, t1 = triggered(page, code, delay)
            entry = wait_logged(page, "viewer", counts[which], t0 + offset)
            results[f"{prefix}_kernel_ms"].append(t1 - t0)
            results[f"{prefix}_boxes_ms"].append(entry["mutated"] - offset - t0)
            results[f"{prefix}_ws_ms"].append(first_arrival(page, t0 + offset) - offset - t0)
            results[f"{prefix}_paint_ms"].append(entry["painted"] - offset - t0)
            if fresh:
                results["image_decoded_ms"].append(wait_image(page, t0 + offset) - offset - t0)
            time.sleep(0.05)
            received, _ = frames.since(mark)
            results[f"{prefix}_comm_bytes"].append(
                sum(len(f) for f in received if b"comm_msg" in f)
            )
    return results


#: --trigger -> delay passed to the kernel's trigger(): None runs inside the cell.
TRIGGERS: dict[str, float | None] = {"loop": 0.2, "cell": None}
TRIGGER_TEXT = {"loop": "from the kernel's event loop", "cell": "inside a running cell"}

#: Result key -> (label, unit, target).
ROWS: dict[str, tuple[str, str, str]] = {
    "probe_ws_ms": ("floor: minimal anywidget, kernel -> message in page", "ms", ""),
    "probe_ms": ("floor: minimal anywidget, kernel -> rects in DOM", "ms", ""),
    "report_kernel_ms": ("new report, same image: kernel show_report()", "ms", ""),
    "report_ws_ms": ("new report, same image: kernel -> message in page", "ms", ""),
    "report_boxes_ms": ("new report, same image: kernel -> boxes in DOM", "ms", "< 100 ms"),
    "report_paint_ms": ("new report, same image: kernel -> next frame", "ms", ""),
    "report_comm_bytes": ("new report, same image: widget bytes", "KB", ""),
    "image_kernel_ms": ("new image + report: kernel show_report()", "ms", ""),
    "image_ws_ms": ("new image + report: kernel -> first message in page", "ms", ""),
    "image_boxes_ms": ("new image + report: kernel -> boxes in DOM", "ms", "< 100 ms"),
    "image_paint_ms": ("new image + report: kernel -> next frame", "ms", ""),
    "image_decoded_ms": ("new image + report: kernel -> image decoded", "ms", ""),
    "image_comm_bytes": ("new image + report: widget bytes", "KB", ""),
    "ui_study_bytes": ("Load sample study + Generate buttons: websocket bytes", "KB", "<= 1.5 MB"),
    "study_bytes": ("load_study() + generate() in code: websocket bytes", "KB", "<= 1.5 MB"),
    "study_comm_bytes": ("  of which widget (comm) messages", "KB", ""),
    "state_bytes": ("viewer synced state (buffers + JSON)", "KB", ""),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="report renders to time per case")
    parser.add_argument("--studies", type=int, default=3, help="study loads to count bytes")
    parser.add_argument(
        "--trigger",
        choices=sorted(TRIGGERS),
        default="loop",
        help="set the report from the kernel's event loop while no cell runs (loop, as the "
        "Generate button does) or inside a running cell (cell)",
    )
    parser.add_argument(
        "--nodelay",
        action="store_true",
        help="set TCP_NODELAY on JupyterLab's kernel websockets (jupyter-server leaves "
        "Nagle's algorithm on; this shows what that costs)",
    )
    args = parser.parse_args()
    if find_chromium() is None:
        sys.exit("Chromium not found: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="cxr-bench-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "root").mkdir()
        (tmp / "home").mkdir()
        write_notebook(tmp / "root/bench.ipynb", [SETUP, PROBE])
        env = isolated_env(tmp / "home")
        if args.nodelay:
            config = Path(env["JUPYTER_CONFIG_DIR"]) / "jupyter_server_config.py"
            config.parent.mkdir(parents=True, exist_ok=True)
            config.write_text(NODELAY_CONFIG)
        lab = JupyterLab(tmp / "root", env).start()
        try:
            with sync_playwright() as pw:
                context = launch_chromium(pw, tmp / "profile")
                context.add_init_script(WS_STAMPS)
                page = context.new_page()
                frames = WebSocketRecorder(page)
                open_and_run_notebook(page, lab, "bench.ipynb")
                page.wait_for_selector(".cxr-widget")
                results = measure(page, frames, args.runs, args.studies, TRIGGERS[args.trigger])
                context.close()
        finally:
            lab.stop()

    print(
        "ReportGenWidget in Chromium (JupyterLab 4, headless), NEMA chest radiograph "
        f"RG1_UNCR; {args.runs} renders per case, {args.studies} study loads; {machine()}; "
        f"browser clock - kernel clock = {results['clock_offset_ms'][0]:+.2f} ms (subtracted); "
        f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after; "
        f"report set {TRIGGER_TEXT[args.trigger]}; "
        f"kernel websocket TCP_NODELAY {'on (--nodelay)' if args.nodelay else 'off (default)'}"
    )
    print_table(
        ["measure", "median", "min", "max", "target"],
        [_row(*ROWS[key], results[key]) for key in ROWS],
    )


def _row(label: str, unit: str, target: str, values: list[float]) -> tuple[str, ...]:
    def fmt(v: float) -> str:
        return f"{v / 1000:.1f} KB" if unit == "KB" else f"{v:.1f} ms"

    return (label, fmt(statistics.median(values)), fmt(min(values)), fmt(max(values)), target)


if __name__ == "__main__":
    main()
