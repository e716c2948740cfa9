"""The wheel carries the prebuilt JupyterLab extension and the server extension's config:
installed from the wheel, JupyterLab lists both as enabled with no build step."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (path,) = out.glob("cxr_widgets-*.whl")
    return path


@pytest.mark.slow
def test_the_wheel_holds_the_built_extension_and_the_server_config(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    data = [n for n in names if ".data/data/" in n]
    prefix = "share/jupyter/labextensions/cxr-widgets-labextension/"
    assert any(n.endswith(prefix + "package.json") for n in data)
    assert any(n.endswith(prefix + "install.json") for n in data)
    assert any("/static/remoteEntry." in n for n in data)
    assert any(n.endswith("etc/jupyter/jupyter_server_config.d/cxr_widgets.json") for n in data)
    assert not any("node_modules" in n or n.endswith(".ts") for n in names)


@pytest.mark.slow
def test_installed_from_the_wheel_jupyterlab_lists_it_enabled(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "env"
    venv.EnvBuilder(with_pip=True).create(target)
    python = target / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    # JupyterLab of the test environment reads the new environment's data and config folders.
    env = dict(os.environ)
    env.update(
        JUPYTER_PATH=str(target / "share" / "jupyter"),
        JUPYTER_CONFIG_PATH=str(target / "etc" / "jupyter"),
        PYTHONPATH=str(next((target / "lib").glob("python*/site-packages"))),
        HOME=str(tmp_path),
    )
    jupyter = Path(sys.executable).parent / "jupyter"
    listed = subprocess.run(
        [str(jupyter), "labextension", "list"], env=env, capture_output=True, text=True, timeout=120
    )
    text = listed.stdout + listed.stderr
    line = next(ln for ln in text.splitlines() if "cxr-widgets-labextension" in ln)
    assert "enabled" in line and "OK" in line and "python, cxr-widgets" in line
    assert str(target) in text  # found in the new environment, not in this checkout
    server = subprocess.run(
        [str(jupyter), "server", "extension", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "cxr_widgets enabled" in (server.stdout + server.stderr).replace("\x1b[32m", "").replace(
        "\x1b[0m", ""
    )
