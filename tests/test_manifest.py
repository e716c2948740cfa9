"""Batch manifests: reading, writing, and every bad manifest named precisely."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from text_files import write

from cxr_widgets.errors import ManifestError
from cxr_widgets.manifest import MANIFEST_COLUMNS, format_manifest, read_manifest, write_manifest

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
    # An empty comparison is sent as "None", as the official clients do (study.py).
    assert first.columns == ("frontal_image", "indication", "comparison")
    assert first.comparison == "None" and first.study_id == "a1"
    assert second.indication == "Fever, two days."
    assert second.columns == ("frontal_image", "prior_image", "indication", "comparison")
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
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x02\x00")
    with pytest.raises(ManifestError, match="not UTF-8 or UTF-16 text"):
        read_manifest(path)


def test_paths_to_a_fifo_or_device_say_so(tmp_path: Path, images: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    manifest = write(tmp_path / "m.csv", f"frontal\n{fifo}\n")
    with pytest.raises(ManifestError, match=r"row 2: the frontal image .* is a FIFO"):
        read_manifest(manifest)
    manifest = write(tmp_path / "m.csv", "frontal,lateral\nimages/rg1.dcm,/dev/zero\n")
    with pytest.raises(ManifestError, match="lateral image '/dev/zero' is a device"):
        read_manifest(manifest)
    fifo_manifest = tmp_path / "m.fifo.csv"
    os.mkfifo(fifo_manifest)
    with pytest.raises(ManifestError, match=r"is a FIFO .*, not a regular file"):
        read_manifest(fifo_manifest)  # refused at once: opening it would block


def test_a_fifo_manifest_does_not_hang_the_command_line(tmp_path: Path) -> None:
    fifo = tmp_path / "m.csv"
    os.mkfifo(fifo)
    done = subprocess.run(
        [sys.executable, "-m", "cxr_widgets.cli", "run", str(fifo), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "is a FIFO" in done.stderr


def test_duplicate_study_ids_are_reported(tmp_path: Path, images: Path) -> None:
    manifest = write(
        tmp_path / "m.csv",
        "frontal,study_id,indication\nimages/rg1.dcm,a,x\nimages/rg1.dcm,b,y\nimages/rg1.dcm,a,z\n",
    )
    with pytest.raises(ManifestError, match="row 4: the study_id 'a' is also in row 2"):
        read_manifest(manifest)
    # Without ids the frontal path names a study; a repeat gets its row, not the same id.
    manifest = write(tmp_path / "m.csv", "frontal,indication\nimages/rg1.dcm,x\nimages/rg1.dcm,y\n")
    first, second = read_manifest(manifest)
    assert first.study_id == "images/rg1.dcm" and second.study_id == "images/rg1.dcm@row 3"


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-16", "utf-8-sig"])
def test_utf16_manifests_with_or_without_bom_are_read(
    tmp_path: Path, images: Path, encoding: str
) -> None:
    text = "frontal,indication,study_id\nimages/rg1.dcm,Toux sèche.,a\n"
    path = tmp_path / "m.csv"
    path.write_bytes(text.encode(encoding))  # "utf-16" writes a BOM; -le/-be do not
    (study,) = read_manifest(path)
    assert study.indication == "Toux sèche." and study.study_id == "a"


def test_format_manifest_is_what_write_manifest_writes(tmp_path: Path, images: Path) -> None:
    rows = [{"study_id": "x", "frontal": images / "rg1.dcm", "comparison": "=1+1"}]
    path = write_manifest(tmp_path / "m.csv", rows)
    assert path.read_text(encoding="utf-8") == format_manifest(rows, tmp_path)
