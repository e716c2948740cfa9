"""Optional parts: a missing extra is a clear error naming the pip command."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import tomllib  # Python 3.11+, as the test environment

from cxr_widgets import extras
from cxr_widgets.errors import MissingDependencyError


@pytest.fixture
def without(monkeypatch):
    """Pretend the given top-level modules are not installed."""

    def hide(*modules: str) -> None:
        real = importlib.util.find_spec

        def find_spec(name, *args, **kwargs):
            if any(name == m or name.startswith(m + ".") for m in modules):
                return None
            return real(name, *args, **kwargs)

        monkeypatch.setattr(importlib.util, "find_spec", find_spec)

    return hide


def test_every_extra_is_declared_in_pyproject():
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    declared = project["project"]["optional-dependencies"]
    for extra in extras.EXTRAS:
        if extra == "evaluate" and extra not in declared:
            continue  # declared by the evaluation module's own extra when present
        assert extra in declared, extra
    everything = declared["all"][0]
    for extra in ("deploy", "local", "plot", "pandas", "dicom", "demo"):
        assert extra in everything


def test_base_dependencies_hold_no_heavy_part():
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    base = " ".join(project["project"]["dependencies"])
    for heavy in ("jupyterlab", "matplotlib", "azure-ai-ml", "azureml-inference-server-http"):
        assert heavy not in base


@pytest.mark.parametrize(
    "call, extra",
    [
        (lambda: __import__("cxr_widgets.deploy").deploy.build_endpoint("cxr-x"), "deploy"),
        (lambda: __import__("cxr_widgets.deploy").deploy.workspace_client(), "deploy"),
        (lambda: __import__("cxr_widgets.batch_endpoint").batch_endpoint.build_cluster(), "deploy"),
    ],
)
def test_a_missing_extra_names_the_pip_command(without, call, extra):
    without("azure.ai.ml")
    with pytest.raises(MissingDependencyError) as raised:
        call()
    assert f"pip install 'cxr-widgets[{extra}]'" in str(raised.value)
    assert raised.value.extra == extra
    assert isinstance(raised.value, ImportError)


def test_installed_is_true_for_what_the_test_environment_has():
    assert extras.installed("deploy") and extras.installed("plot")
