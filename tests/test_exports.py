"""cxr_widgets.exports: safe file names from hostile study ids, files only inside the folder."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import pytest
from PIL import Image

from cxr_widgets import Box, DemoBackend, Finding, Report, sample_study
from cxr_widgets.exports import MAX_STEM, export_report, safe_stem

HOSTILE_IDS = [
    "images/chest.png",
    "../x",
    "../../etc/passwd",
    "/etc/passwd",
    "C:\\Windows\\system32",
    "..",
    ".",
    "",
    ".hidden",
    "-rf",
    "CON",
    "nul.txt",
    "a" * 500,
    "name\x00with-nul",
    "tab\there",
    "line\nbreak",
    "Ünïcödé/胸部",
    "=HYPERLINK(1)",
    "a/b",
    "a_b",
]


@pytest.mark.parametrize("study_id", HOSTILE_IDS)
def test_safe_stem_is_a_plain_short_name(study_id: str) -> None:
    stem = safe_stem(study_id)
    assert stem and len(stem) <= MAX_STEM
    assert os.sep not in stem and "/" not in stem and "\\" not in stem
    assert ".." not in stem and not stem.startswith((".", "-"))
    assert all(c.isascii() and (c.isalnum() or c in "._-") for c in stem)
    assert stem.split(".")[0].upper() not in {"CON", "NUL"}


def test_safe_stem_keeps_plain_ids_and_keeps_different_ids_apart() -> None:
    assert safe_stem("study-001") == "study-001"
    assert safe_stem("RG1_UNCR.v2") == "RG1_UNCR.v2"
    stems = [safe_stem(s) for s in HOSTILE_IDS]
    assert len(set(stems)) == len(stems)  # "a/b" and "a_b" do not collide
    assert safe_stem("a" * 500) != safe_stem("a" * 499)


@pytest.mark.parametrize("study_id", ["images/chest.png", "../x", "/tmp/evil", "../../../../x"])
def test_export_writes_only_inside_the_folder(tmp_path: Path, study_id: str) -> None:
    folder = tmp_path / "out"
    report = Report(findings=[Finding("Opacity.", [Box(0.1, 0.1, 0.4, 0.4)])], study_id=study_id)
    frontal = Image.new("L", (64, 80), 128)
    paths = export_report(report, frontal, folder, study_id)
    assert set(paths) == {"json", "csv", "png"}
    for path in paths.values():
        assert path.parent.resolve() == folder.resolve() and path.is_file()
    everything = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert everything == sorted(p.relative_to(tmp_path) for p in paths.values())
    assert Report.from_json(paths["json"].read_text()).study_id == study_id


def test_export_never_overwrites(tmp_path: Path) -> None:
    report = DemoBackend().generate(sample_study())
    first = export_report(report, sample_study().frontal_image, tmp_path, "same", ("json", "csv"))
    first["json"].write_text("the user's own notes")
    second = export_report(report, None, tmp_path, "same", ("json", "csv"))
    assert first["json"].read_text() == "the user's own notes"
    assert second["json"] != first["json"] and second["json"].parent == tmp_path
    assert second["json"].stem == second["csv"].stem  # one run's files share one name
    rows = list(csv.DictReader(io.StringIO(second["csv"].read_text())))
    assert len(rows) == len(report.to_records())


def test_png_export_without_an_image_says_what_to_pass(tmp_path: Path) -> None:
    from cxr_widgets.errors import CxrWidgetsError

    report = Report(findings=[Finding("Normal.")])
    with pytest.raises(CxrWidgetsError, match="frontal"):
        export_report(report, None, tmp_path, "x", ("png",))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="unknown export kinds"):
        export_report(report, None, tmp_path, "x", ("pdf",))
