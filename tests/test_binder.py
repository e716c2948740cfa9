"""binder/ cannot silently rot: everything it names exists, parses and provides what the notebooks import.

Why checks instead of a fresh install: a real repo2docker build needs Docker
and minutes of downloads, and even a fresh venv install costs minutes of CI
on 2 cores. The ways binder/ actually breaks are all caught here, offline:
a requirement that does not resolve or no longer matches what the project
is tested with, an extra renamed in pyproject.toml, a postBuild that does
not parse or is not executable, a notebook renamed under the Binder link, a
notebook importing a module nothing in binder/ installs, and postBuild's
own sanity checks (run here against the project's environment).
"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
BINDER = ROOT / "binder"
NOTEBOOKS = ROOT / "notebooks"
#: The notebook the README's Binder link opens in JupyterLab.
WIDGET_NOTEBOOK = "notebooks/04_widget.ipynb"
BINDER_LINK = re.compile(
    r"https://mybinder\.org/v2/gh/[^/\s]+/[^/\s]+/[^?\s]+\?urlpath=lab/tree/([^\s)\"'>]+)"
)


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _requirements() -> list[Requirement]:
    lines = (BINDER / "requirements.txt").read_text(encoding="utf-8").splitlines()
    return [Requirement(line.split("#")[0].strip()) for line in lines if line.split("#")[0].strip()]


def _postbuild_commands() -> list[list[str]]:
    text = (BINDER / "postBuild").read_text(encoding="utf-8")
    commands = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and not line.startswith("set "):
            commands.append(shlex.split(line))
    return commands


def _installed_extras() -> set[str]:
    """The extras postBuild installs with the project (``pip install -e ".[a,b]"``)."""
    extras: set[str] = set()
    found = False
    for argv in _postbuild_commands():
        if argv[:4] != ["python", "-m", "pip", "install"]:
            continue
        for arg in argv[4:]:
            match = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", arg)
            if match:
                found = True
                extras.update(filter(None, (match.group(1) or "").split(",")))
    assert found, "postBuild must install the project itself (pip install -e '.[all]')"
    return _expand(extras)


def _expand(extras: set[str]) -> set[str]:
    """The extras with those they name of the project itself (``all`` -> ``demo``, ...)."""
    declared = _pyproject()["project"].get("optional-dependencies", {})
    name = canonicalize_name(_pyproject()["project"]["name"])
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in declared.get(extra, []):
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == name:
                todo.extend(requirement.extras)
    return seen


def test_binder_files_exist() -> None:
    assert (BINDER / "requirements.txt").is_file()
    assert (BINDER / "postBuild").is_file()
    assert not (BINDER / "environment.yml").exists(), "repo2docker would ignore requirements.txt"


def test_requirements_are_installed_and_satisfied() -> None:
    requirements = _requirements()
    assert requirements, "binder/requirements.txt lists nothing"
    for requirement in requirements:
        try:
            version = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            pytest.fail(f"binder/requirements.txt names {requirement.name}, not installed here")
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{requirement}: the project is tested with {version}"
        )


def test_runtime_matches_requires_python() -> None:
    runtime = (BINDER / "runtime.txt").read_text(encoding="utf-8").strip()
    match = re.fullmatch(r"python-(\d+\.\d+)", runtime)
    assert match, f"runtime.txt must read python-X.Y, not {runtime!r}"
    requires = SpecifierSet(_pyproject()["project"]["requires-python"])
    assert requires.contains(Version(match.group(1) + ".0"))


def test_postbuild_parses_and_is_executable() -> None:
    bash = shutil.which("bash")
    assert bash, "bash is needed to check postBuild"
    subprocess.run([bash, "-n", str(BINDER / "postBuild")], check=True)
    assert (BINDER / "postBuild").read_text().startswith("#!/bin/bash\n")
    assert (BINDER / "postBuild").stat().st_mode & 0o111, "postBuild must be executable"
    tracked = subprocess.run(
        ["git", "ls-files", "-s", "binder/postBuild"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    if tracked:  # committed: the executable bit must be in git too, or Binder gets 100644
        assert tracked.startswith("100755"), tracked


def test_postbuild_extras_exist_in_pyproject() -> None:
    extras = _installed_extras()
    declared = _pyproject()["project"].get("optional-dependencies", {})
    assert "demo" in extras, "the notebooks need the [demo] extra (pydicom-data, pandas)"
    missing = extras - set(declared)
    assert not missing, f"postBuild installs extras {sorted(missing)} that pyproject.toml lacks"
    names = {Requirement(r).name for r in declared["demo"]}
    assert "pydicom-data" in names


def test_postbuild_checks_pass_here() -> None:
    """postBuild's own sanity checks (``python -c ...``) succeed in the project's environment."""
    checks = [argv for argv in _postbuild_commands() if argv[:2] == ["python", "-c"]]
    assert checks, "postBuild should check that the sample and the widget import"
    for argv in checks:
        subprocess.run([sys.executable, *argv[1:]], check=True, cwd=ROOT, capture_output=True)


def _distribution_closure(roots: list[Requirement], extras: set[str]) -> set[str]:
    """Every installed distribution binder's install would bring in (transitively)."""
    environment = default_environment()
    seen: set[str] = set()
    todo = [(r, set(extras) if r.name == "cxr-widgets" else set()) for r in roots]
    while todo:
        requirement, wanted = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(requirement.name) or []
        except metadata.PackageNotFoundError:
            continue
        for text in requires:
            child = Requirement(text)
            contexts = [{**environment, "extra": e} for e in wanted or {""}]
            if child.marker is None or any(child.marker.evaluate(c) for c in contexts):
                todo.append((child, set(child.extras)))
    return seen


def _notebook_imports() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        for cell in cells:
            if cell["cell_type"] != "code":
                continue
            source = "".join(cell["source"])
            source = "\n".join(
                ln for ln in source.splitlines() if not ln.lstrip().startswith(("%", "!"))
            )
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], set()).add(path.name)
    return found


def test_every_notebook_import_is_installed_by_binder() -> None:
    project = _pyproject()["project"]
    roots = [Requirement(project["name"]), *_requirements()]
    extras = _installed_extras()
    closure = _distribution_closure(roots, extras)
    # The project's own declared dependencies come from pyproject.toml (the source of truth
    # for a fresh install), not from this environment's possibly older install metadata.
    declared = list(project["dependencies"])
    for extra in extras:
        declared += [
            r
            for r in project["optional-dependencies"][extra]
            if canonicalize_name(Requirement(r).name) != canonicalize_name(project["name"])
        ]
    closure |= _distribution_closure([Requirement(r) for r in declared], set())
    providers = metadata.packages_distributions()
    imports = _notebook_imports()
    assert imports, "no notebook imports found: are the notebooks there?"
    for module, notebooks in sorted(imports.items()):
        if module in sys.stdlib_module_names or module == "cxr_widgets":
            continue
        dists = {canonicalize_name(d) for d in providers.get(module, [])}
        assert dists, f"{module} (imported by {sorted(notebooks)}) is not installed at all"
        assert dists & closure, (
            f"{sorted(notebooks)} import {module} (from {sorted(dists)}), which nothing in "
            "binder/ installs: add it to binder/requirements.txt or the [demo] extra"
        )


def test_binder_link_targets_exist() -> None:
    assert (ROOT / WIDGET_NOTEBOOK).is_file(), f"the Binder link opens {WIDGET_NOTEBOOK}"
    texts = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for path in texts:
        if not path.is_file():
            continue
        for target in BINDER_LINK.findall(path.read_text(encoding="utf-8")):
            assert (ROOT / target).exists(), (
                f"{path.name} links Binder to {target}, which is missing"
            )
