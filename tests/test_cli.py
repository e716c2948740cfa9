"""The cxr-widgets command line: help, manifests, runs on the NEMA radiograph, exit codes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cxr_widgets.cli import main
from cxr_widgets.errors import ManifestError
from cxr_widgets.manifest import MANIFEST_COLUMNS, read_manifest, write_manifest

CLI = [sys.executable, "-m", "cxr_widgets.cli"]


@pytest.fixture
def images(tmp_path: Path, rg1_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copyfile(rg1_path, folder / "rg1.dcm")
    return folder


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- manifests -------------------------------------------------------------------------


def test_manifest_reads_studies_relative_to_its_folder(tmp_path: Path, images: Path) -> None:
    manifest = write(
        tmp_path / "m.csv",
        "\ufeffFrontal,indication,Prior,study_id\n"
        "images/rg1.dcm,Cough.,,a1\n"
        "\n"
        f'{images / "rg1.dcm"},"Fever, two days.",images/rg1.dcm,\n',
    )
    first, second = read_manifest(manifest)
    assert first.frontal_image == images / "rg1.dcm" and first.prior_image is None
    assert first.columns == ("frontal_image", "indication") and first.study_id == "a1"
    assert second.indication == "Fever, two days."
    assert second.columns == ("frontal_image", "prior_image", "indication")
    assert second.study_id == str(images / "rg1.dcm")  # default: the frontal path as written


def test_write_manifest_round_trips(tmp_path: Path, images: Path) -> None:
    path = write_manifest(
        tmp_path / "m.csv",
        [{"study_id": "x", "frontal": images / "rg1.dcm", "indication": 'a "quoted", text'}],
    )
    assert path.read_text().splitlines()[0] == ",".join(MANIFEST_COLUMNS)
    assert "images/rg1.dcm" in path.read_text()  # relative inside the folder
    (study,) = read_manifest(path)
    assert study.indication == 'a "quoted", text' and study.study_id == "x"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, r"does not exist; check the path"),
        ("", r"is empty; it needs a header row"),
        ("\n \n", r"is empty"),
        ("frontal,indication\n", r"has a header but no studies"),
        (
            "frontal,age\nimages/rg1.dcm,40\n",
            r"unknown column 'age'; allowed columns: study_id, frontal",
        ),
        ("indication\nCough\n", r"no 'frontal' column"),
        ("frontal,indication\n,Cough\n", r"row 2: no frontal image"),
        (
            "frontal\nimages/rg1.dcm\nimages/nope.dcm\n",
            r"row 3: the frontal image 'images/nope.dcm' does not exist",
        ),
        (
            "frontal,lateral\nimages/rg1.dcm,images\n",
            r"row 2: the lateral image 'images' is a folder",
        ),
        ("frontal,frontal_image\nimages/rg1.dcm,x\n", r"column 'frontal' appears twice"),
        ("frontal\nimages/rg1.dcm,extra\n", r"row 2: 2 values but the header has 1 columns"),
    ],
)
def test_bad_manifests_are_named_precisely(
    tmp_path: Path, images: Path, text: str | None, message: str
) -> None:
    path = tmp_path / "m.csv"
    if text is not None:
        write(path, text)
    with pytest.raises(ManifestError, match=message):
        read_manifest(path)


def test_manifest_that_is_not_text(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_bytes(b"\xff\xfe\x00\x81binary")
    with pytest.raises(ManifestError, match="not a UTF-8 text file"):
        read_manifest(path)


# --- help and usage errors ---------------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["serve"], ["run"], ["sample"]])
def test_help_for_each_command(command: list[str]) -> None:
    done = subprocess.run([*CLI, *command, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: cxr-widgets")
    if command == ["run"]:
        assert "--store" in done.stdout and "--scoring-uri" in done.stdout
        assert "manifest columns" in done.stdout
    if command == ["serve"]:
        assert "--port" in done.stdout and "127.0.0.1" in done.stdout


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "cxr-widgets"
    done = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("cxr-widgets ")


@pytest.mark.parametrize(
    ("manifest_text", "expected"),
    [
        (None, "does not exist"),
        ("", "is empty"),
        ("frontal,age\nimages/rg1.dcm,40\n", "unknown column 'age'"),
        (
            "frontal\nimages/missing.dcm\n",
            "row 2: the frontal image 'images/missing.dcm' does not exist",
        ),
    ],
)
def test_bad_manifest_exits_2_with_one_line(
    tmp_path: Path, images: Path, manifest_text: str | None, expected: str
) -> None:
    manifest = tmp_path / "m.csv"
    if manifest_text is not None:
        write(manifest, manifest_text)
    done = subprocess.run(
        [*CLI, "run", str(manifest), "--no-progress"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cxr-widgets run: error:"), done.stderr
    assert expected in lines[0] and "Traceback" not in done.stderr
    assert not (tmp_path / "m.results.sqlite").exists()  # nothing was started


def test_usage_errors_exit_2(
    tmp_path: Path, images: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write(tmp_path / "m.csv", "frontal\nimages/rg1.dcm\n")
    assert main(["run", str(manifest), "--out", str(tmp_path / "x.txt")]) == 2
    assert "use a file name ending in .jsonl or .csv" in capsys.readouterr().err
    assert main(["run", str(manifest), "--batch-size", "11"]) == 2
    assert "at most 10" in capsys.readouterr().err
    assert main(["run", str(manifest), "--demo", "--scoring-uri", "http://127.0.0.1:1/score"]) == 2
    assert "--demo answers offline" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(manifest), "--max-in-flight", "0"])
    assert exit_info.value.code == 2
    assert "expected a number >= 1" in capsys.readouterr().err
