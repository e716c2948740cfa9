"""The NEMA sample studies from pydicom-data: paths, studies and what they cost to send.

Microsoft's sample study and its recorded answer: tests/test_recorded_sample.py.
"""

from __future__ import annotations

import json

import pydicom
import pytest

from cxr_widgets import Study, build_request, prepare_image
from cxr_widgets.contract import DEFAULT_REQUEST_BUDGET
from cxr_widgets.errors import ImageError
from cxr_widgets.samples import sample_path, sample_study


def test_sample_path_is_the_nema_chest_radiograph() -> None:
    path = sample_path()
    assert path.name == "RG1_UNCR.dcm" and path.is_file()
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert (ds.Columns, ds.Rows) == (1841, 1955)
    assert sample_path("RG1_J2KI.dcm").is_file()


def test_missing_sample_names_the_package() -> None:
    with pytest.raises(ImageError, match="pip install pydicom-data"):
        sample_path("NO_SUCH_FILE.dcm")


def test_nema_sample_study() -> None:
    study = sample_study("nema")
    # An empty comparison is sent as "None", as the official clients do.
    assert study.columns == ("frontal_image", "indication", "technique", "comparison")
    assert study.frontal_image == sample_path()
    assert study.indication and study.technique
    with_prior = sample_study("nema", with_prior=True)
    assert with_prior.prior_image == sample_path("RG1_J2KI.dcm")
    assert with_prior.columns == (
        "frontal_image",
        "prior_image",
        "indication",
        "technique",
        "comparison",
        "prior_report",
    )


def test_full_three_image_study_fits_the_request_budget() -> None:
    """The default image size is chosen so that this holds for the sample radiograph."""
    base = sample_study("nema", with_prior=True)
    study = Study(
        frontal_image=base.frontal_image,
        lateral_image=sample_path("RG1_UNCI.dcm"),
        prior_image=base.prior_image,
        indication=base.indication,
        technique=base.technique,
        comparison=base.comparison,
        prior_report=base.prior_report,
    )
    body = json.dumps(build_request(study), separators=(",", ":")).encode()
    assert len(body) < DEFAULT_REQUEST_BUDGET
    # ... which full resolution would not: three full-size images are over budget.
    full = prepare_image(study.frontal_image, full_resolution=True)
    assert 3 * len(full.base64) > DEFAULT_REQUEST_BUDGET
