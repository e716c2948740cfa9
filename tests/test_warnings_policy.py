"""The suite fails on warnings from the project's code and ignores named dependencies' own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROJECT_WARNS = """
from cxr_widgets import EndpointConfig

def test_plain_http_to_another_host():
    EndpointConfig("http://example.org/score")  # warns: unencrypted, no pytest.warns here
"""

DEPENDENCY_WARNS = """
import warnings

def test_a_dependency_deprecation():
    warnings.warn_explicit(
        "The `ordered` option is deprecated.", DeprecationWarning, "schema.py", 129,
        module="marshmallow.schema",
    )
"""


def run_pytest(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    test = tmp_path / "test_case.py"
    test.write_text(source)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-c",
            str(ROOT / "pyproject.toml"),
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            str(test),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_warning_from_the_project_fails_the_test(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, PROJECT_WARNS)
    assert result.returncode == 1, result.stdout
    assert "UserWarning" in result.stdout and "unencrypted" in result.stdout


def test_a_named_dependencys_deprecation_is_ignored(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, DEPENDENCY_WARNS)
    assert result.returncode == 0, result.stdout
    assert "1 passed" in result.stdout
