"""The image viewer in Chromium: frames per second while dragging window/level and
zooming, kernel messages during a drag, new study to first picture, zoom detail
latency and the bytes sent per study before any zoom.

Runs real JupyterLab and Debian's Chromium through the browser-test harness
(tests/browser/jupyter_harness.py).

* Frames/s: a script in the page presses the pointer on the image and moves it
  once per requestAnimationFrame for 2 s (a window/level drag), then sends one
  wheel event per frame (zoom around the cursor) and a pan drag. Frames/s is
  the number of canvas redraws (the viewer counts them) over the elapsed time;
  the frame time is the p95 interval between animation frames. The image is a
  2048 x 2048 16-bit array (RG1 resampled), shown from the default overview
  and from a full 2048 px overview (``ReportViewer(overview_side=2048)``).
  Every websocket frame the page sends to the kernel during the drag is counted.
* New study to first picture: the kernel stamps the wall clock and calls
  ``set_images`` on RG1 from its event loop (as a Generate result arrives);
  the page stamps the wall clock when the picture is first drawn. Both run on
  this machine's clock.
* Zoom detail: from the viewer's request for the visible region to the region
  decoded and drawn (the viewer waits 120 ms of quiet before asking).
* Bytes: every websocket frame the page receives from ``set_images`` to the
  first picture, and the overview buffer alone.

Run: .venv/bin/python bench/bench_viewer.py [--runs 5]  (needs Chromium; ~2 minutes)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from common import machine, print_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests/browser"))
from jupyter_harness import (
    JupyterLab,
    WebSocketRecorder,
    collapse_left_sidebar,
    find_chromium,
    isolated_env,
    launch_chromium,
    open_and_run_notebook,
    run_cell,
    write_notebook,
)

SETUP = """
import asyncio, json, time
import numpy as np
from PIL import Image
import pydicom
from pydicom.data import get_testdata_file
from cxr_widgets.widget.viewer import ReportViewer

rg1 = get_testdata_file("RG1_UNCR.dcm")
big = np.asarray(
    Image.fromarray(pydicom.dcmread(rg1).pixel_array.astype(np.int32), mode="I")
    .resize((2048, 2048), Image.Resampling.BILINEAR)
).astype(np.uint16)
viewers = {}

def out(value):
    print("@@" + json.dumps(value))
"""

#: In the page: press on the last viewer's first pane and drive it once per frame.
DRIVE = """async ([kind, ms]) => {
  const root = [...document.querySelectorAll('.cxr-viewer')].pop();
  const pane = root.querySelector('.cxr-pane');
  const r = pane.getBoundingClientRect();
  const x0 = r.left + r.width / 2, y0 = r.top + r.height / 2;
  const opts = (x, y, extra) => ({bubbles: true, clientX: x, clientY: y, pointerId: 1,
                                  button: 0, buttons: 1, isPrimary: true, ...extra});
  const frames0 = +pane.dataset.frames;
  const stamps = [];
  if (kind !== 'zoom') {
    pane.dispatchEvent(new PointerEvent('pointerdown', opts(x0, y0, {shiftKey: kind === 'pan'})));
  }
  const t0 = performance.now();
  await new Promise((done) => {
    const tick = (t) => {
      stamps.push(t);
      const k = stamps.length;
      const dx = 120 * Math.sin(k / 9), dy = 80 * Math.cos(k / 13);
      if (kind === 'zoom') {
        pane.dispatchEvent(new WheelEvent('wheel', {bubbles: true, cancelable: true,
          clientX: x0 + dx, clientY: y0 + dy, deltaY: k % 60 < 30 ? -40 : 40}));
      } else {
        pane.dispatchEvent(new PointerEvent('pointermove', opts(x0 + dx, y0 + dy, {shiftKey: kind === 'pan'})));
      }
      if (t - t0 < ms) requestAnimationFrame(tick); else done();
    };
    requestAnimationFrame(tick);
  });
  const elapsed = performance.now() - t0;
  await new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)));
  const draws = +pane.dataset.frames - frames0;
  if (kind !== 'zoom') pane.dispatchEvent(new PointerEvent('pointerup', opts(x0, y0, {buttons: 0})));
  const gaps = stamps.slice(1).map((t, i) => t - stamps[i]).sort((a, b) => a - b);
  return {draws, elapsed, p95: gaps[Math.floor(gaps.length * 0.95)] || 0};
}"""


def row(label: str, values: list[float], form: str = "{:.0f}") -> list[str]:
    return [label, form.format(statistics.median(values)), form.format(max(values))]


def kernel(page, code: str):
    import json

    text = run_cell(page, code)
    line = next((ln for ln in text.splitlines() if ln.startswith("@@")), None)
    return json.loads(line[2:]) if line else None


def show(page, call: str, picture: bool = True) -> None:
    before = page.locator(".cxr-viewer").count()
    run_cell(page, f"v = {call}\nv")
    page.wait_for_function(
        "n => document.querySelectorAll('.cxr-viewer').length > n", arg=before, timeout=60_000
    )
    if picture:
        page.wait_for_function(
            "() => [...document.querySelectorAll('.cxr-viewer')].pop().dataset.pictureAt",
            timeout=60_000,
        )
    page.locator(".cxr-viewer >> nth=-1").scroll_into_view_if_needed()
    page.wait_for_timeout(300)


def drive(page, frames: WebSocketRecorder, kind: str, ms: int = 2000) -> dict:
    page.locator(".cxr-viewer >> nth=-1").scroll_into_view_if_needed()
    mark = frames.mark()
    result = page.evaluate(DRIVE, [kind, ms])
    _received, sent = frames.since(mark)
    # The pointerup at the end saves the window once: count only what came before it.
    result["sent"] = max(0, len(sent) - (0 if kind == "zoom" else 1))
    result["fps"] = result["draws"] / (result["elapsed"] / 1000)
    page.wait_for_timeout(500)
    return result


def first_picture(page, frames: WebSocketRecorder) -> tuple[float, float, int]:
    """ms from set_images in the kernel to RG1's first picture (the preview) and to its
    overview drawn in the page; bytes received from set_images to the overview."""
    show(page, "ReportViewer()", picture=False)
    mark = frames.mark()
    kernel(
        page,
        "stamp = {}\n"
        "def go():\n"
        "    stamp['t'] = time.time()\n"
        "    v.set_images(rg1)\n"
        "asyncio.get_event_loop().call_later(0.3, go)\nout(1)",
    )
    page.wait_for_function(
        "() => [...document.querySelectorAll('.cxr-viewer')].pop().dataset.sharpAt",
        timeout=60_000,
    )
    first, sharp = page.evaluate(
        "() => { const d = [...document.querySelectorAll('.cxr-viewer')].pop().dataset;"
        " return [+d.pictureAt, +d.sharpAt]; }"
    )
    page.wait_for_timeout(200)
    received, _ = frames.since(mark)
    t0 = 1000 * kernel(page, "out(stamp['t'])")
    # Frames of the cells run meanwhile are small; the widget's are the bulk.
    return min(first, sharp) - t0, sharp - t0, sum(len(f) for f in received)


def detail_latency(page) -> float:
    st = page.evaluate(
        "() => +([...document.querySelectorAll('.cxr-viewer')].pop().dataset.details || 0)"
    )
    run_cell(page, "v.camera = {'zoom': 10, 'x': 600 + 300 * np.random.rand(), 'y': 900}")
    page.wait_for_function(
        "n => +[...document.querySelectorAll('.cxr-viewer')].pop().dataset.details > n",
        arg=st,
        timeout=60_000,
    )
    return float(
        page.evaluate("() => [...document.querySelectorAll('.cxr-viewer')].pop().dataset.detailMs")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if find_chromium() is None:
        sys.exit("Chromium not found: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        home, root = Path(tmp) / "home", Path(tmp) / "root"
        home.mkdir()
        root.mkdir()
        write_notebook(root / "bench.ipynb", [SETUP])
        lab = JupyterLab(root_dir=root, env=isolated_env(home)).start()
        try:
            with sync_playwright() as pw:
                context = launch_chromium(pw, home / "chromium")
                page = context.new_page()
                page.set_default_timeout(60_000)
                frames = WebSocketRecorder(page)
                open_and_run_notebook(page, lab, "bench.ipynb", timeout=180)
                collapse_left_sidebar(page)
                rows = []
                for side in (1024, 2048):
                    show(page, f"ReportViewer(overview_side={side})\nv.set_images(big)")
                    ow = kernel(page, "out([v.images['frontal']['ow'], len(v.frontal_pixels)])")
                    for kind, label in (
                        ("wl", "window/level drag"),
                        ("zoom", "wheel zoom"),
                        ("pan", "pan drag"),
                    ):
                        r = [drive(page, frames, kind) for _ in range(max(1, args.runs // 2))]
                        rows.append(
                            [
                                f"2048x2048 16-bit, overview {ow[0]} px",
                                label,
                                f"{statistics.median(x['fps'] for x in r):.0f}",
                                f"{statistics.median(x['p95'] for x in r):.1f}",
                                max(x["sent"] for x in r),
                            ]
                        )
                print(f"\nViewer interaction on {machine()}, headless Chromium (--disable-gpu)\n")
                print_table(
                    [
                        "image",
                        "interaction (2 s, one event per frame)",
                        "frames/s",
                        "p95 frame ms",
                        "kernel msgs",
                    ],
                    rows,
                )

                firsts, sharps, sizes = [], [], []
                for _ in range(args.runs):
                    first, sharp, size = first_picture(page, frames)
                    firsts.append(first)
                    sharps.append(sharp)
                    sizes.append(size)
                parts = kernel(
                    page,
                    "from cxr_widgets.widget.viewer_pixels import preview\n"
                    "out([len(v.frontal_pixels), len(json.dumps(v.images)),"
                    " len(preview(v.pixels['frontal']).data)])",
                )
                details = [detail_latency(page) for _ in range(args.runs)]
                print("\nRG1 (1841 x 1955, 15-bit MONOCHROME1)\n")
                print_table(
                    ["measure", "median", "max"],
                    [
                        row("new study to first picture (ms)", firsts),
                        row("new study to overview drawn (ms)", sharps),
                        row("zoom detail, request to drawn (ms)", details),
                        row("bytes received, set_images to overview", sizes, "{:,.0f}"),
                        ["  the 16-bit overview buffer", f"{parts[0]:,}", ""],
                        ["  the quick preview buffer", f"{parts[2]:,}", ""],
                        ["  image metadata and presets (JSON)", f"{parts[1]:,}", ""],
                    ],
                )
                context.close()
        finally:
            lab.stop()


if __name__ == "__main__":
    main()
