"""study.py: one row of a request, its columns, the texts sent, and what a reader should know."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxr_widgets.errors import StudyError
from cxr_widgets.study import (
    COLUMNS,
    EMPTY_COMPARISON,
    IMAGE_COLUMNS,
    PRIOR_REPORT_WARNING,
    TEXT_COLUMNS,
    Study,
    burned_in_warning,
    describe_source,
    study_warnings,
    wire_texts,
)

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


def test_columns_are_the_documented_ones_in_order() -> None:
    assert COLUMNS == (
        "frontal_image",
        "lateral_image",
        "prior_image",
        "indication",
        "technique",
        "comparison",
        "prior_report",
    )
    assert IMAGE_COLUMNS + TEXT_COLUMNS == COLUMNS


def test_a_study_fills_the_columns_it_has_in_documented_order() -> None:
    study = Study(PNG, prior_image=PNG, technique="PA", indication="Cough.")
    assert study.columns == (
        "frontal_image",
        "prior_image",
        "indication",
        "technique",
        "comparison",
    )
    assert study.texts() == {"indication": "Cough.", "technique": "PA", "comparison": "None"}


@pytest.mark.parametrize("blank", ["", "   ", None])
def test_an_empty_comparison_is_sent_as_none_unless_opted_out(blank: str | None) -> None:
    assert Study(PNG, comparison=blank).comparison == EMPTY_COMPARISON == "None"  # type: ignore[arg-type]
    opted_out = Study(PNG, comparison=blank, empty_comparison="")  # type: ignore[arg-type]
    assert "comparison" not in opted_out.columns
    assert Study(PNG, comparison="CXR 2024-01-02").comparison == "CXR 2024-01-02"
    with pytest.raises(StudyError, match="empty_comparison must be text"):
        Study(PNG, empty_comparison=None)  # type: ignore[arg-type]


def test_wire_texts_is_the_one_rule_for_what_text_is_sent() -> None:
    assert wire_texts({"indication": " ", "technique": "AP"}) == {
        "technique": "AP",
        "comparison": "None",
    }
    assert wire_texts({"comparison": "Prior."}, empty_comparison="") == {"comparison": "Prior."}
    assert wire_texts({}, empty_comparison="") == {}
    assert wire_texts({"age": "70"}) == {"comparison": "None"}  # not a column: never sent


@pytest.mark.parametrize(
    ("kwargs", "field", "words"),
    [
        ({"frontal_image": None}, "frontal_image", "is required"),
        ({"frontal_image": ""}, "frontal_image", "empty path"),
        ({"frontal_image": b""}, "frontal_image", "0 bytes"),
        ({"frontal_image": 42}, "frontal_image", "has type int"),
        ({"frontal_image": PNG, "lateral_image": 3.5}, "lateral_image", "has type float"),
        ({"frontal_image": PNG, "indication": 5}, "indication", "must be text"),
    ],
)
def test_bad_fields_name_themselves(kwargs: dict, field: str, words: str) -> None:
    with pytest.raises(StudyError, match=words) as info:
        Study(**kwargs)
    assert info.value.field == field


def test_images_may_be_paths_bytes_pil_numpy_or_pydicom(rg1_path: Path) -> None:
    import pydicom

    for image in (
        rg1_path,
        str(rg1_path),
        PNG,
        Image.new("L", (4, 4)),
        np.zeros((4, 4), np.uint8),
        pydicom.dcmread(rg1_path),
    ):
        assert Study(image).columns[0] == "frontal_image"


def test_repr_names_fields_not_their_content() -> None:
    study = Study(
        PNG,
        indication="Fever in Mr Smith",
        prior_report="Smith: clear",
        study_id="acc-1",
    )
    text = repr(study)
    assert "Smith" not in text and "Fever" not in text
    assert "indication=<17 chars>" in text and "study_id='acc-1'" in text
    assert describe_source(PNG) == f"<{len(PNG)} bytes>"


def test_replace_makes_a_changed_copy() -> None:
    study = Study(PNG, indication="Cough.", study_id="s1")
    other = study.replace(indication="Fever.")
    assert (study.indication, other.indication) == ("Cough.", "Fever.")
    assert other.study_id == "s1" and other.comparison == "None"


def test_a_prior_report_without_a_prior_image_is_warned_about() -> None:
    assert study_warnings(Study(PNG, prior_report="Clear lungs.")) == [PRIOR_REPORT_WARNING]
    assert study_warnings(Study(PNG, prior_image=PNG, prior_report="Clear lungs.")) == []
    assert study_warnings(Study(PNG)) == []
    assert "BurnedInAnnotation=YES" in burned_in_warning("frontal_image")
