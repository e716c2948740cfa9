"""scripts/demo.sh as a user runs it: one printed link opens the widget notebook in Chromium.

The script runs in its own environment (a fresh HOME with no Jupyter settings,
a free PORT, its scratch folder in a temporary CXR_DEMO_DIR), as a user's
first start would. The link must open notebooks/04_widget.ipynb directly:
no login page, no "Jupyter news" pop-up, and the repository's notebooks untouched.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from jupyter_harness import free_port, isolated_env, launch_chromium

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"http://127\.0\.0\.1:\d+/\S*")
NEWS = ".Toastify__toast"


def git_status() -> str:
    return subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[str], Path]]:
    """Start scripts/demo.sh; yield the printed link, everything it printed, its folder."""
    home = tmp_path_factory.mktemp("demo-home")
    demo_dir = tmp_path_factory.mktemp("demo-dir")
    port = free_port()
    env = isolated_env(home, {"PORT": str(port), "CXR_DEMO_DIR": str(demo_dir)})
    env.pop("JUPYTER_CONFIG_PATH", None)
    process = subprocess.Popen(
        ["bash", "scripts/demo.sh"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # Ctrl-C goes to the script's whole group
    )
    printed: list[str] = []
    link = None
    deadline = time.monotonic() + 180
    assert process.stdout is not None
    while time.monotonic() < deadline and link is None:
        line = process.stdout.readline()
        if not line:
            break
        printed.append(line.rstrip())
        if "Open: " in line:
            link = LINK.search(line).group(0)  # type: ignore[union-attr]
    try:
        assert link, "demo.sh printed no link:\n" + "\n".join(printed)
        assert f":{port}/" in link
        yield link, printed, demo_dir
    finally:
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        process.stdout.close()


def test_demo_prints_one_link_that_opens_the_widget_notebook(
    demo: tuple[str, list[str], Path], tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    before = git_status()
    link, printed, demo_dir = demo
    assert [LINK.search(line).group(0) for line in printed if LINK.search(line)] == [link]
    assert "token=" in link and link.split("?")[0].endswith("/lab/tree/notebooks/04_widget.ipynb")
    assert any("ssh -L" in line for line in printed)  # how to reach it from another machine

    with sync_playwright() as p:
        context = launch_chromium(p, tmp_path / "chromium")
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.goto(link)
            title = page.locator(".jp-NotebookPanel .jp-RenderedMarkdown h1").first
            title.wait_for(timeout=90_000)
            assert page.locator("input[type=password]").count() == 0  # no login page
            tab = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current")
            assert "04_widget.ipynb" in tab.inner_text()
            assert "The widget" in title.inner_text()
            # The news question comes a few seconds after start-up when it comes at all.
            time.sleep(8)
            toasts = page.locator(NEWS).all_inner_texts()
            assert not [t for t in toasts if "news" in t.lower()], toasts
            page.screenshot(path=str(tmp_path / "demo.png"))
        finally:
            context.close()
    # The demo ran on its copy: the repository's notebooks and tree are unchanged.
    assert (demo_dir / "notebooks/04_widget.ipynb").is_file()
    assert git_status() == before
    # Its default scratch folder, .demo/, is ignored by git too.
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", ".demo/notebooks/04_widget.ipynb"], cwd=ROOT
    )
    assert ignored.returncode == 0
