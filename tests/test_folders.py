"""Output folders: made when missing, one clear error when they cannot be (every writer)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cxr_widgets import DemoBackend, ResultStore
from cxr_widgets.cli import main
from cxr_widgets.errors import ConfigError, CxrWidgetsError, StoreError
from cxr_widgets.exports import export_report
from cxr_widgets.folders import make_folder, writable_file
from cxr_widgets.samples import sample_study


@pytest.fixture
def blocked(tmp_path: Path) -> Path:
    """A path whose parent is a file: no folder can be made there (root or not)."""
    (tmp_path / "a-file").write_text("mine")
    return tmp_path / "a-file" / "out"


def test_make_folder_makes_parents_and_returns_the_folder(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "x" / "y", purpose="the exports", fix="choose another.")
    assert folder == tmp_path / "x" / "y" and folder.is_dir()
    assert make_folder(folder, purpose="the exports", fix="-") == folder  # exists: fine


def test_make_folder_names_the_folder_the_purpose_the_reason_and_the_fix(blocked: Path) -> None:
    with pytest.raises(StoreError) as info:
        make_folder(blocked, purpose="the result store", fix="give another.", error=StoreError)
    message = str(info.value)
    assert message == (
        f"cannot create the folder {blocked} for the result store (Not a directory); give another."
    )
    assert (blocked.parent).read_text() == "mine"  # nothing the user had is touched


def test_writable_file_checks_the_file_and_its_folder(tmp_path: Path) -> None:
    path = writable_file(tmp_path / "new" / "r.jsonl", purpose="--out", fix="-")
    assert path.parent.is_dir() and not path.exists()  # the folder is made, no file yet
    if os.geteuid() == 0:
        return  # root writes through file modes; a read-only mount is tested in test_store
    path.write_text("x")
    path.chmod(0o444)
    with pytest.raises(ConfigError, match=r"cannot write .*r\.jsonl \(--out\): .* is read-only"):
        writable_file(path, purpose="--out", fix="-", error=ConfigError)


def test_every_writer_says_the_same_when_the_folder_cannot_be_made(
    blocked: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = DemoBackend().generate(sample_study("nema"))
    with pytest.raises(CxrWidgetsError, match=r"cannot create the folder .* for the exports"):
        export_report(report, None, blocked, "s", ("json",))
    with pytest.raises(StoreError, match=r"cannot create the folder .* for the result store"):
        ResultStore(blocked / "r.sqlite")
    manifest = blocked.parent.parent / "m.csv"
    manifest.write_text(f"frontal,study_id\n{sample_study('nema').frontal_image},s1\n")
    assert main(["run", str(manifest), "--out", str(blocked / "r.jsonl")]) == 2
    error = capsys.readouterr().err
    assert f"cannot create the folder {blocked} for --out {blocked / 'r.jsonl'}" in error
    assert "Nothing was sent" in error
