"""The tutorial notebooks: committed clean, and each runs top to bottom offline with real results.

Every notebook is executed headlessly with nbclient in a temporary copy of
notebooks/ (no workspace config.json, no endpoint key), one after the
other (2 cores), and its outputs are checked for something real.
"""

from __future__ import annotations

import ast
import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from cxr_widgets.images import PNG_MAGIC

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
EXPECTED = [
    "01_deploy.ipynb",
    "02_invoke.ipynb",
    "03_grounded_findings.ipynb",
    "04_widget.ipynb",
    "05_research_at_scale.ipynb",
    "06_review.ipynb",
    "07_evaluate.ipynb",
    "08_batch_endpoint.ipynb",
]
KERNEL = "cxr-widgets-test"
CELL_TIMEOUT = 180
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def _load(name: str) -> Any:
    return nbformat.read(NOTEBOOKS / name, as_version=4)


def _code_cells(nb: Any) -> list[Any]:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


# --- committed form ------------------------------------------------------------------


def test_the_notebooks_are_the_expected_ones() -> None:
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_committed_without_outputs(name: str) -> None:
    nb = _load(name)
    nbformat.validate(nb)
    assert set(nb.metadata) <= {"kernelspec", "language_info"}, "notebook metadata (widgets?)"
    for cell in nb.cells:
        assert "execution" not in cell.metadata, "execution timings saved"
        assert "widgets" not in cell.metadata
        if cell.cell_type == "code":
            assert cell.outputs == [], f"outputs saved in {name}: clear them before committing"
            assert cell.execution_count is None, f"execution count saved in {name}"


@pytest.mark.parametrize("name", EXPECTED)
def test_one_parameters_cell_at_the_top(name: str) -> None:
    cells = _code_cells(_load(name))
    first = cells[0].source
    assert first.startswith("# Parameters"), "the first code cell holds the parameters"
    assert re.search(r"^ENDPOINT = None\s+#", first, re.MULTILINE), "ENDPOINT = None  # ..."
    for cell in cells[1:]:
        assert not re.search(r"^ENDPOINT\s*=", cell.source, re.MULTILINE), "ENDPOINT set twice"


@pytest.mark.parametrize("name", EXPECTED)
def test_no_key_or_token_in_a_notebook(name: str) -> None:
    for cell in _code_cells(_load(name)):
        source = "\n".join(
            ln for ln in cell.source.splitlines() if not ln.lstrip().startswith(("%", "!"))
        )
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.keyword) and node.arg in ("key", "token", "api_key"):
                assert not isinstance(node.value, ast.Constant), (
                    f"{name}: {node.arg}= is a literal; read keys from environment variables"
                )
        assert not re.search(r"Bearer [A-Za-z0-9._-]{16,}", cell.source)


# --- execution ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def notebook_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An isolated Jupyter home with a kernelspec for this interpreter; offline settings."""
    home = tmp_path_factory.mktemp("nbhome")
    spec_dir = home / ".local/share/jupyter/kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "cxr-widgets tests",
                "language": "python",
            }
        )
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        mp.setenv("JUPYTER_CONFIG_DIR", str(home / ".jupyter"))
        mp.setenv("JUPYTER_DATA_DIR", str(home / ".local/share/jupyter"))
        mp.setenv("JUPYTER_RUNTIME_DIR", str(home / ".local/share/jupyter/runtime"))
        mp.setenv("IPYTHONDIR", str(home / ".ipython"))
        mp.setenv("MPLCONFIGDIR", str(home / ".matplotlib"))
        mp.setenv("JUPYTER_PLATFORM_DIRS", "1")
        for name in ("CXR_ENDPOINT_KEY", "CXR_ENDPOINT_URI", "AZURE_CLIENT_SECRET"):
            mp.delenv(name, raising=False)
        yield home


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _dirty(repo: Path) -> str:
    """What running left behind that git would show (ignored files are fine)."""
    return _git(repo, "status", "--porcelain", "--untracked-files=all")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A committed copy of the checkout's notebooks/, docs/images and .gitignore to run in.

    Runs never touch the real files, and ``git status`` there shows whatever a
    run would leave in a user's checkout.
    """
    repo = tmp_path_factory.mktemp("checkout")
    shutil.copytree(
        NOTEBOOKS, repo / "notebooks", ignore=shutil.ignore_patterns("tutorial-outputs")
    )
    shutil.copytree(ROOT / "docs" / "images", repo / "docs" / "images")
    shutil.copy(ROOT / ".gitignore", repo / ".gitignore")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "checkout")
    return repo / "notebooks"


def _execute(name: str, workdir: Path) -> Any:
    from nbclient import NotebookClient

    nb = nbformat.read(workdir / name, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name=KERNEL,
        timeout=CELL_TIMEOUT,
        resources={"metadata": {"path": str(workdir)}},
        store_widget_state=True,
    )
    client.execute()  # raises CellExecutionError on any cell error
    nbformat.write(nb, workdir.parent.parent / f"executed-{name}")  # outside the checkout
    return nb


def _texts(nb: Any) -> str:
    """Everything the notebook printed or displayed as text."""
    parts = []
    for cell in _code_cells(nb):
        for output in cell.outputs:
            if output.output_type == "stream":
                parts.append(output.text)
            elif output.output_type in ("execute_result", "display_data"):
                parts.append(output.data.get("text/plain", ""))
                parts.append(output.data.get("text/html", ""))
    return "\n".join(parts)


def _pngs(nb: Any) -> list[bytes]:
    images = []
    for cell in _code_cells(nb):
        for output in cell.outputs:
            if (
                output.output_type in ("execute_result", "display_data")
                and "image/png" in output.data
            ):
                images.append(base64.b64decode(output.data["image/png"]))
    return images


def _assert_real_pngs(nb: Any, minimum: int) -> None:
    from PIL import Image

    pngs = _pngs(nb)
    assert len(pngs) >= minimum, f"expected at least {minimum} figures, got {len(pngs)}"
    for data in pngs:
        assert data.startswith(PNG_MAGIC)
        with Image.open(io.BytesIO(data)) as image:
            assert min(image.size) >= 100
            assert sum(1 for n in image.convert("L").histogram() if n) > 16  # not a blank


def check_deploy(nb: Any, workdir: Path) -> None:
    import yaml

    text = _texts(nb)
    assert "Dry run" in text
    start = text.index("# Dry run: nothing was sent to Azure.")
    stream = text[start:].split("\n\n\n")[0]
    endpoint, deployment = list(yaml.safe_load_all(stream))[:2]
    assert endpoint["auth_mode"] == "key"
    assert deployment["model"].startswith("azureml://registries/azureml/models/CxrReportGen/")
    assert deployment["instance_type"] == "Standard_NC24ads_A100_v4"
    assert deployment["request_settings"]["request_timeout_ms"] == 90_000
    assert deployment["liveness_probe"]["initial_delay"] >= 600
    assert "Not enough quota" in text
    assert (
        'az role assignment create --assignee "<user or identity>" --role "AzureML Data Scientist"'
        in text
    )


def check_invoke(nb: Any, workdir: Path) -> None:
    text = _texts(nb)
    assert '"input_data"' in text and "chars of base64" in text
    assert "http://127.0.0.1:" in text  # the local endpoint was called over HTTP
    assert "EndpointAuthError" in text and "401" in text
    assert re.search(r"\d+ findings, [1-9]\d* boxes", text)
    # Microsoft's sample gets its recorded answer; the NEMA studies canned findings, said so.
    assert "label: recorded CXRReportGen answer (Microsoft's sample)" in text
    assert "| DEMO: canned example findings" in text


def check_grounded(nb: Any, workdir: Path) -> None:
    from cxr_widgets import Report

    text = _texts(nb)
    assert "center_crop" in text and "full" in text
    assert "label: recorded CXRReportGen answer (Microsoft's sample)" in text
    assert "this package sends:" in text and "MONOCHROME1" in text
    _assert_real_pngs(nb, minimum=2)
    saved = Report.from_json(
        (workdir / "tutorial-outputs/03_grounded_findings/report.json").read_text(encoding="utf-8")
    )
    assert saved.n_boxes >= 1 and any(not f.grounded for f in saved.findings)
    assert (
        (workdir / "tutorial-outputs/03_grounded_findings/report.csv")
        .read_text()
        .startswith("study_id,finding,text,grounded,box")
    )
    assert (
        (workdir / "tutorial-outputs/03_grounded_findings/findings.png")
        .read_bytes()
        .startswith(PNG_MAGIC)
    )


def check_widget(nb: Any, workdir: Path) -> None:
    state = (
        nb.metadata.get("widgets", {})
        .get("application/vnd.jupyter.widget-state+json", {})
        .get("state", {})
    )
    assert state, "no widget state was saved"
    viewers = [
        model["state"]
        for model in state.values()
        if model["state"].get("_anywidget_id") == "cxr_widgets.widget.viewer.ReportViewer"
    ]
    assert len(viewers) == 1, "the panel's viewer model is missing from the saved state"
    viewer = viewers[0]
    assert viewer["has_report"] is True and viewer["demo"] is True
    assert viewer["boxes"], "the shown report has no boxes"
    assert {b["finding"] for b in viewer["boxes"]} <= {f["index"] for f in viewer["findings"]}
    frontal = viewer["images"]["frontal"]
    assert frontal["width"] > 0 and frontal["height"] > 0
    assert set(frontal["presets"]) >= {"file", "lung", "full"}
    text = _texts(nb)
    assert re.search(r"\d+ findings, [1-9]\d* boxes", text)
    assert "run 2:" in text  # the history lists both generations
    assert "label: recorded CXRReportGen answer (Microsoft's sample)" in text
    assert "label: DEMO: canned example findings" in text
    assert "views: ['frontal', 'prior'] - arrangement: views" in text
    assert re.search(r"with the prior: \d+ findings; without: \d+", text)
    assert "compared: run 2" in text  # the run with the prior beside the one without
    assert viewer["arrangement"] == "runs" and viewer["compare"] == 1 and viewer["compare_boxes"]
    exported = sorted(p.suffix for p in (workdir / "tutorial-outputs/04_widget/exports").iterdir())
    assert exported == [".csv", ".json", ".png"]


def check_scale(nb: Any, workdir: Path) -> None:
    text = _texts(nb)
    assert "<BatchResult interrupted 24 studies" in text
    resumed = re.search(r"second run: (\d+) studies read from the store, (\d+) sent", text)
    assert resumed, "the resumed run's figures are missing"
    assert int(resumed.group(1)) >= 8 and int(resumed.group(1)) + int(resumed.group(2)) == 24
    assert "third run: sent 0 requests, 24 studies from the store" in text
    assert "<table" in text  # a DataFrame
    assert "the run that sent the studies (the second run):" in text
    _assert_real_pngs(nb, minimum=2)
    lines = (
        (workdir / "tutorial-outputs/05_research_at_scale/results.jsonl")
        .read_text(encoding="utf-8")
        .splitlines()
    )
    assert len(lines) == 24
    assert all(json.loads(line)["status"] == "ok" for line in lines)


def check_review(nb: Any, workdir: Path) -> None:
    import jsonschema

    text = _texts(nb)
    assert "<BatchResult 12 studies: 12 ok" in text
    assert "reviewed studies: 3" in text
    out = workdir / "tutorial-outputs" / "06_review"
    reference = json.loads((out / "reference.json").read_text(encoding="utf-8"))
    schema = json.loads((ROOT / "docs/reference-set.schema.json").read_text(encoding="utf-8"))
    jsonschema.validate(reference, schema)
    assert len(reference) == 3  # the three reviewed studies (in the order the run stored them)
    added = [f for e in reference for f in e["findings"] if f["source"] == "added"]
    assert [f["text"] for f in added] == ["Small right apical pneumothorax."]
    radfact = json.loads((out / "radfact.json").read_text(encoding="utf-8"))
    assert len(radfact) == 3 and all(
        {"example_id", "prediction", "target"} <= set(e) for e in radfact
    )
    assert (out / "reference.csv").read_text(encoding="utf-8").startswith("study_id,reviewer,")
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    tables = [
        m["state"]
        for m in state.values()
        if m["state"].get("_anywidget_id") == "cxr_widgets.widget.browser._Table"
    ]
    assert tables and tables[0]["summary"]["studies"] == 12
    # The report panel's review of one study, in its own file, read back by ReviewStore.
    from cxr_widgets.review import ReviewStore

    with ReviewStore(out / "panel-reviews.sqlite") as panel_reviews:
        (entry,) = panel_reviews.reference_set()
    assert f"reviewed as {entry['study_id']}" in text
    assert len(entry["findings"]) >= 1  # every finding but the first (unsure) was agreed


def check_batch_endpoint(nb: Any, workdir: Path) -> None:
    text = _texts(nb)
    assert "modelBatchDeployment.schema.json" in text and "mini_batch_size: 1" in text
    assert "simulated job: 3 mini-batches, 0 failed" in text
    assert "stored 12 reports (0 were already stored)" in text
    assert "submit these shards again: batch_input_00003.csv" in text
    assert "complete: True" in text
    assert "12 reports;" in text
    assert "12 studies in the browser" in text  # the batch job's store opens in StudyBrowser
    out = workdir / "tutorial-outputs" / "08_batch_endpoint"
    assert sorted(p.name for p in (out / "shards" / "inputs").iterdir()) == [
        f"batch_input_0000{i}.csv" for i in (1, 2, 3)
    ]


def check_evaluate(nb: Any, workdir: Path) -> None:
    text = _texts(nb)
    assert "missing: {'generated_only': [], 'reference_only': ['S999']}" in text
    assert "<Comparison frontal only vs with prior on 12 studies>" in text
    _assert_real_pngs(nb, minimum=2)  # the evaluation figure and the comparison
    out = workdir / "tutorial-outputs" / "07_evaluate"
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    precision = summary["summary"]["logical_precision"]
    assert precision["n"] == 12 and 0 < precision["value"] < 1  # the reader rejected some
    assert precision["ci_low"] <= precision["value"] <= precision["ci_high"]
    assert summary["counts"]["reference_only"] == 1
    assert json.loads((out / "comparison.json").read_text(encoding="utf-8"))["studies"] == 12
    assert (out / "evaluation.png").read_bytes().startswith(PNG_MAGIC)


CHECKS: dict[str, Callable[[Any, Path], None]] = {
    "01_deploy.ipynb": check_deploy,
    "02_invoke.ipynb": check_invoke,
    "03_grounded_findings.ipynb": check_grounded,
    "04_widget.ipynb": check_widget,
    "05_research_at_scale.ipynb": check_scale,
    "06_review.ipynb": check_review,
    "07_evaluate.ipynb": check_evaluate,
    "08_batch_endpoint.ipynb": check_batch_endpoint,
}


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_runs_offline(name: str, notebook_env: Path, workdir: Path) -> None:
    assert not (workdir / "config.json").exists()
    assert "CXR_ENDPOINT_KEY" not in os.environ
    nb = _execute(name, workdir)
    CHECKS[name](nb, workdir)
    assert _dirty(workdir.parent) == "", f"{name} left files in the checkout"
