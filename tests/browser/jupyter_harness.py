"""Drive real JupyterLab in Debian's Chromium: server, browser and notebook runs.

Shared by the browser tests (tests/browser/conftest.py) and the render
benchmark (bench/bench_widget_render.py). Chromium is Debian's, launched by
Playwright with ``executable_path``; Jupyter, Chromium and gunicorn get a
temporary HOME and JUPYTER_* folders; Run All is clicked only once the
toolbar names a kernel (JupyterLab 4 drops it while it says "No Kernel").
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The kernel reads the local endpoint's key from this variable; no notebook holds it.
KEY_ENV = "CXR_BROWSER_TEST_KEY"

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

CELL_EDITOR = ".jp-NotebookPanel .jp-Cell .jp-InputArea-editor"
KERNEL_NAME = ".jp-NotebookPanel-toolbar .jp-Toolbar-kernelName"
KERNEL_IDLE = '.jp-Notebook-ExecutionIndicator[data-status="idle"]'
CODE_PROMPT = ".jp-NotebookPanel .jp-CodeCell .jp-InputPrompt"


class HarnessError(RuntimeError):
    """The browser harness could not reach the state a test needs."""


def find_chromium() -> str | None:
    """Debian's Chromium, or ``chromium`` on PATH; None when neither exists."""
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    return shutil.which("chromium")


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody is listening on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def isolated_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment keeping Jupyter, IPython, matplotlib, Chromium and gunicorn in ``home``."""
    env = dict(os.environ)
    env.update(
        HOME=str(home),
        JUPYTER_CONFIG_DIR=str(home / ".jupyter"),
        JUPYTER_DATA_DIR=str(home / ".local/share/jupyter"),
        JUPYTER_RUNTIME_DIR=str(home / ".local/share/jupyter/runtime"),
        IPYTHONDIR=str(home / ".ipython"),
        MPLCONFIGDIR=str(home / ".matplotlib"),
        JUPYTER_PLATFORM_DIRS="1",
        PYTHONUNBUFFERED="1",
    )
    env.pop("JUPYTERLAB_SETTINGS_DIR", None)
    env.pop("JUPYTERLAB_WORKSPACES_DIR", None)
    env.update(extra or {})
    return env


#: JupyterLab user settings for the tests: no "Jupyter news" toast, no update checks,
#: and widget state saved with the notebook (so tests can check what a saved file holds).
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyter-widgets/jupyterlab-manager/plugin": {"saveState": True},
}


def _write_lab_settings(config_dir: Path) -> None:
    for plugin, settings in LAB_SETTINGS.items():
        path = config_dir / "lab/user-settings" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings))


@dataclass
class JupyterLab:
    """A JupyterLab server on 127.0.0.1 serving ``root_dir``; stop() when done."""

    root_dir: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> JupyterLab:
        _write_lab_settings(Path(self.env["JUPYTER_CONFIG_DIR"]))
        self.log_path = Path(self.env["HOME"]) / f"jupyterlab-{self.port}.log"
        cmd = [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            "--no-browser",
            "--allow-root",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root_dir}",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--ServerApp.port_retries=0",
        ]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.root_dir
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise HarnessError(
                    f"JupyterLab exited with code {self.process.returncode}; log:\n{self.log()}"
                )
            try:
                self.api("GET", "/api/status")
                return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.3)
        self.stop()
        raise HarnessError(f"JupyterLab did not answer within {timeout:.0f} s; log:\n{self.log()}")

    def api(self, method: str, path: str) -> Any:
        """Call the server's REST API with the token; the decoded JSON answer (or None)."""
        sep = "&" if "?" in path else "?"
        req = urllib.request.Request(f"{self.base_url}{path}{sep}token={self.token}", method=method)
        with urllib.request.urlopen(req, timeout=5) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """Stop every kernel the server runs (between notebooks, to spare the 2 cores)."""
        for kernel in self.api("GET", "/api/kernels"):
            with contextlib.suppress(urllib.error.HTTPError):
                self.api("DELETE", f"/api/kernels/{kernel['id']}")

    def notebook_url(self, name: str) -> str:
        # ?reset drops the saved workspace, so earlier tabs are not restored.
        return f"{self.base_url}/lab/tree/{name}?reset&token={self.token}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path else ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def launch_chromium(
    playwright: Any,
    user_data_dir: Path,
    executable: str | None = None,
    *,
    viewport: tuple[int, int] = (1400, 1000),
    device_scale_factor: float = 1,
) -> Any:
    """A headless Chromium context with a fresh profile in ``user_data_dir``; ``viewport``
    in CSS pixels, ``device_scale_factor`` device pixels per CSS pixel (2 at 200 % zoom)."""
    executable = executable or find_chromium()
    if executable is None:
        raise HarnessError("Chromium not found: apt-get install -y chromium")
    return playwright.chromium.launch_persistent_context(
        str(user_data_dir),
        executable_path=executable,
        headless=True,
        args=CHROMIUM_FLAGS,
        viewport={"width": viewport[0], "height": viewport[1]},
        device_scale_factor=device_scale_factor,
    )


# --- notebooks -----------------------------------------------------------------


def write_notebook(path: Path, cells: list[str]) -> Path:
    """A notebook with one code cell per string (Python 3 kernel)."""
    nb = {
        "cells": [
            {
                "cell_type": "code",
                "execution_count": None,
                "id": f"cell-{i}",
                "metadata": {},
                "outputs": [],
                "source": src,
            }
            for i, src in enumerate(cells)
        ],
        "metadata": {
            "kernelspec": {
                "display_name": "Python 3 (ipykernel)",
                "language": "python",
                "name": "python3",
            },
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb, indent=1))
    return path


def dismiss_popups(page: Any) -> None:
    """Close the "Jupyter news" toast and any other notification that overlaps the notebook."""
    for label in ("No", "Dismiss"):
        buttons = page.locator(f'.Toastify__toast button:has-text("{label}")')
        for i in range(buttons.count()):
            # The toast may vanish between count() and click().
            with contextlib.suppress(Exception):
                buttons.nth(i).click(timeout=1000)
    page.evaluate(
        "() => document.querySelectorAll('.Toastify__toast-container').forEach(e => e.remove())"
    )


def _prompts(page: Any) -> list[str]:
    return [t.strip() for t in page.locator(CODE_PROMPT).all_inner_texts()]


def wait_for_kernel(page: Any, timeout: float = 60.0) -> str:
    """Wait until the notebook has a named, idle kernel; its display name."""
    page.wait_for_selector(CELL_EDITOR, timeout=timeout * 1000)
    deadline = time.monotonic() + timeout
    name = ""
    while time.monotonic() < deadline:
        name = page.locator(KERNEL_NAME).first.inner_text().strip()
        idle = page.locator(KERNEL_IDLE).count() > 0
        if name and name != "No Kernel" and idle:
            return name
        time.sleep(0.2)
    raise HarnessError(f"kernel not ready after {timeout:.0f} s (toolbar says {name!r})")


def click_run_all(page: Any) -> None:
    """Run menu > Run All Cells."""
    page.locator('.lm-MenuBar-itemLabel:text-is("Run")').click()
    page.locator('.lm-Menu-itemLabel:text-is("Run All Cells")').click()


def error_outputs(page: Any) -> list[str]:
    """Text of every traceback shown in the notebook."""
    sel = '.jp-NotebookPanel .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
    return [t for t in page.locator(sel).all_inner_texts() if "Traceback" in t or "Error" in t]


def wait_cells_done(page: Any, timeout: float) -> None:
    """Wait until every code cell shows ``[n]:``; raise with the traceback if one failed."""
    deadline = time.monotonic() + timeout
    prompts: list[str] = []
    while time.monotonic() < deadline:
        prompts = _prompts(page)
        busy = any("*" in p for p in prompts)
        if not busy:
            errors = error_outputs(page)
            if errors:
                raise HarnessError("a notebook cell failed:\n" + "\n".join(errors)[-3000:])
            if prompts and all(re.fullmatch(r"\[\d+\]:", p) for p in prompts):
                return
        time.sleep(0.2)
    raise HarnessError(f"cells not finished after {timeout:.0f} s; prompts: {prompts}")


def open_and_run_notebook(page: Any, lab: JupyterLab, name: str, timeout: float = 120.0) -> None:
    """Open ``name`` (relative to the server root), Run All, and wait for every cell to finish."""
    page.goto(lab.notebook_url(name), timeout=timeout * 1000)
    wait_for_kernel(page, timeout=timeout)
    dismiss_popups(page)
    for _attempt in range(5):
        click_run_all(page)
        # A Run All clicked too early is silently dropped: confirm it started.
        try:
            page.wait_for_function(
                """(sel) => [...document.querySelectorAll(sel)]
                     .some(e => /\\[(\\*|\\d+)\\]/.test(e.textContent))""",
                arg=CODE_PROMPT,
                timeout=5000,
            )
            break
        except Exception:
            continue
    else:
        raise HarnessError(f"Run All never started in {name}; prompts: {_prompts(page)}")
    wait_cells_done(page, timeout)
    dismiss_popups(page)


def save_notebook(page: Any, path: Path, timeout: float = 30.0) -> str:
    """File > Save Notebook; wait until ``path`` on disk changed; its text."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    page.locator('.lm-MenuBar-itemLabel:text-is("File")').click()
    page.locator('.lm-Menu-itemLabel:text-is("Save Notebook")').click()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_mtime_ns != before:
            time.sleep(0.2)  # let the server finish writing
            return path.read_text()
        time.sleep(0.1)
    raise HarnessError(f"{path.name} was not saved within {timeout:.0f} s")


def run_cell(page: Any, code: str, timeout: float = 60.0) -> str:
    """Append a code cell with ``code``, run it and return its text output."""
    cells = page.locator(".jp-NotebookPanel .jp-Cell")
    before = cells.count()
    cells.nth(before - 1).locator(".jp-InputPrompt").click()  # select, command mode
    page.keyboard.press("Escape")
    page.keyboard.press("b")  # insert a cell below
    page.wait_for_function(
        "([sel, n]) => document.querySelectorAll(sel).length > n",
        arg=[".jp-NotebookPanel .jp-Cell", before],
    )
    new_cell = cells.nth(before)
    new_cell.locator(".cm-content").click()
    # insert_text bypasses key handling, so the editor does not auto-close brackets.
    page.keyboard.insert_text(code)
    page.keyboard.press("Shift+Enter")
    prompt = new_cell.locator(".jp-InputPrompt")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = prompt.inner_text().strip()
        if re.fullmatch(r"\[\d+\]:", text):
            break
        time.sleep(0.1)
    else:
        raise HarnessError(f"cell did not finish in {timeout:.0f} s: {code[:80]!r}")
    output = new_cell.locator(".jp-OutputArea-output").all_inner_texts()
    text = "\n".join(output)
    if "Traceback" in text:
        raise HarnessError(f"cell failed:\n{text[-3000:]}")
    return text


def collapse_left_sidebar(page: Any) -> None:
    """Hide the file browser so the notebook (and the widget) gets the full width."""
    current = page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current")
    if current.count():
        current.first.click()


class WebSocketRecorder:
    """Every websocket frame the page sends and receives (kernel channels included)."""

    def __init__(self, page: Any) -> None:
        self.received: list[bytes] = []
        self.sent: list[bytes] = []
        page.on("websocket", self._attach)

    def _attach(self, ws: Any) -> None:
        ws.on("framereceived", lambda payload: self.received.append(_as_bytes(payload)))
        ws.on("framesent", lambda payload: self.sent.append(_as_bytes(payload)))

    def mark(self) -> tuple[int, int]:
        """Positions to measure from (see :meth:`since`)."""
        return len(self.received), len(self.sent)

    def since(self, mark: tuple[int, int]) -> tuple[list[bytes], list[bytes]]:
        """Frames received and sent after ``mark``."""
        return self.received[mark[0] :], self.sent[mark[1] :]

    def contains(self, needle: str) -> bool:
        data = needle.encode()
        return any(data in frame for frame in (*self.received, *self.sent))


def _as_bytes(payload: str | bytes) -> bytes:
    return payload.encode() if isinstance(payload, str) else bytes(payload)


#: Where the README's and docs' screenshots live.
DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"


def screenshot_for_docs(locator: Any, folder: Path, name: str) -> Path:
    """Screenshot ``locator`` to ``folder/name`` (the test's own folder) and, with
    ``CXR_UPDATE_SCREENSHOT=1``, copy it to ``docs/images/name``: a plain test run
    leaves the checkout as it was."""
    path = folder / name
    locator.screenshot(path=str(path))
    if os.environ.get("CXR_UPDATE_SCREENSHOT") == "1":
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_IMAGES / name)
    return path
