"""Fixtures for browser tests: one JupyterLab server and one Chromium for the session.

Every test under tests/browser is marked ``browser``. Without Chromium or
Playwright the tests are skipped with the reason, except under ``CI=true``
where .ci/run installs Chromium: there a missing browser fails loudly.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from jupyter_harness import KEY_ENV, JupyterLab, find_chromium, isolated_env, launch_chromium

HERE = Path(__file__).parent


def _missing() -> str | None:
    """Why browser tests cannot run here, or None."""
    if find_chromium() is None:
        return "Chromium not installed (apt-get install -y chromium; .ci/run does this)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright not importable (pip install playwright)"
    return None


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _missing()
    for item in items:
        if HERE not in Path(str(item.path)).parents:
            continue
        item.add_marker(pytest.mark.browser)
        if reason and not _in_ci():
            item.add_marker(pytest.mark.skip(reason=f"browser test: {reason}"))


@pytest.fixture(scope="session")
def browser_ready() -> None:
    """Fail loudly (CI) when the browser stack is missing."""
    reason = _missing()
    if reason:
        pytest.fail(f"CI=true but browser tests cannot run: {reason}")


@pytest.fixture(scope="session")
def endpoint_key() -> str:
    """A fresh key the kernel sees only through its environment."""
    return secrets.token_urlsafe(24)


@pytest.fixture(scope="session")
def lab_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("browser-home")


@pytest.fixture(scope="session")
def lab_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder JupyterLab serves; tests write their notebooks here."""
    return tmp_path_factory.mktemp("lab-root")


@pytest.fixture(scope="session")
def jupyter_lab(
    browser_ready: None, lab_home: Path, lab_root: Path, endpoint_key: str
) -> Iterator[JupyterLab]:
    """One JupyterLab server for the browser tests, in an isolated home."""
    env = isolated_env(lab_home, {KEY_ENV: endpoint_key})
    lab = JupyterLab(root_dir=lab_root, env=env).start()
    yield lab
    lab.stop()


# Module scope, not session or package: while Playwright's sync API is started it keeps
# an event loop running in the main thread, so asyncio.run() in any test collected after
# these would fail. (Without __init__.py, pytest 9 ends a "package" fixture only at the
# end of the session.) A Chromium launch costs about a second per module.
@pytest.fixture(scope="module")
def chromium(browser_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A headless Chromium (persistent context with a fresh profile) per test module."""
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    pw = sync_playwright().start()
    context = launch_chromium(pw, profile)
    yield context
    context.close()
    pw.stop()


@pytest.fixture
def page(chromium: object, jupyter_lab: JupyterLab) -> Iterator[object]:
    """A fresh tab; its kernels are shut down afterwards to spare the CPU."""
    tab = chromium.new_page()  # type: ignore[attr-defined]
    tab.set_default_timeout(30_000)
    yield tab
    tab.close()
    jupyter_lab.shutdown_kernels()
