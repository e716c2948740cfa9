"""``cxr-widgets evaluate``: a demo run's store against a reference file, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_evaluate import as_references, png_bytes

from cxr_widgets import DemoBackend, Study, run_batch
from cxr_widgets.cli import main


@pytest.fixture(scope="module")
def run_and_refs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("cli-eval")
    store = folder / "results.sqlite"
    studies = [Study(png_bytes(i), study_id=f"c{i}") for i in range(6)]
    result = run_batch(studies, DemoBackend(), store=store, progress=False)
    refs = as_references([r for r in result.reports if r is not None])
    refs[0]["findings"] = refs[0]["findings"][1:]  # one reference finding fewer
    refs[1]["findings"][0]["boxes"] = [[1.5, 0, 0.5, 0.5]]  # a bad box: listed, excluded
    path = folder / "references.json"
    path.write_text(json.dumps(refs))
    return store, path


def test_evaluate_command_prints_and_writes_everything(
    run_and_refs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, refs = run_and_refs
    out = tmp_path / "eval"
    code = main(["evaluate", str(store), str(refs), "--out", str(out), "--bootstrap", "50"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "5 studies evaluated (exact judge)" in captured.out
    assert "logical_precision" in captured.out and "rouge_l" in captured.out
    assert "excluded references 1" in captured.out
    assert "references 'c1' finding 1: box 1: box coordinate 1.5 is outside 0..1" in captured.err
    assert sorted(p.name for p in out.iterdir()) == [
        "evaluation.png",
        "per_finding.csv",
        "per_study.csv",
        "problems.csv",
        "summary.json",
    ]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["summary"]["logical_precision"]["n"] == 5
    assert summary["summary"]["logical_precision"]["value"] < 1.0  # c0 has an extra finding
    assert summary["provenance"]["references"]["path"] == str(refs)
    assert (out / "per_study.csv").read_text().count("\n") == 6


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.sqlite", "refs.json"], "no generated reports at"),
        (["{store}", "missing.json"], "no reference file at"),
        (["{store}", "{refs}", "--judge", "chat"], "--judge chat needs --chat-url"),
        (
            ["{store}", "{refs}", "--judge", "review"],
            'judge="review" needs references read from reviews',
        ),
        (["{store}", "{refs}", "--bootstrap", "-1"], "--bootstrap must be >= 0"),
    ],
)
def test_evaluate_command_bad_input_exits_2(
    run_and_refs: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    store, refs = run_and_refs
    argv = ["evaluate", *(a.format(store=store, refs=refs) for a in args)]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
