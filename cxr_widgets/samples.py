"""Sample studies built from the NEMA chest radiograph in ``pydicom-data``.

RG1 is a public NEMA test image (a chest CR, 1841 x 1955, MONOCHROME1,
15 bits stored). The texts below are made up for demonstration and
research; they describe no real patient.
"""

from __future__ import annotations

from pathlib import Path

from .errors import ImageError
from .study import Study

#: The frontal chest radiograph used by the samples (uncompressed DICOM).
SAMPLE_FRONTAL = "RG1_UNCR.dcm"
#: A stand-in prior: the same radiograph, lossy JPEG 2000 compressed.
SAMPLE_PRIOR = "RG1_J2KI.dcm"

SAMPLE_INDICATION = "Cough for two weeks."
SAMPLE_TECHNIQUE = "PA view of the chest."
SAMPLE_COMPARISON = "Prior chest radiograph (stand-in image)."
SAMPLE_PRIOR_REPORT = "No acute cardiopulmonary process."


def sample_path(name: str = SAMPLE_FRONTAL) -> Path:
    """The path of a ``pydicom-data`` test file such as ``RG1_UNCR.dcm``.

    Raises :class:`ImageError` naming ``pip install pydicom-data`` when the
    package (or the file) is not installed.
    """
    try:
        from pydicom.data import get_testdata_file
    except ImportError:
        raise ImageError(
            "pydicom is not installed, so the sample radiograph is unavailable: "
            "pip install pydicom pydicom-data",
            source=name,
        ) from None
    try:
        path = get_testdata_file(name, download=False)  # never reach the network
    except (OSError, ValueError, RuntimeError):
        path = None
    if path is None:
        raise ImageError(
            f"the sample file {name} was not found: it ships with the pydicom-data "
            "package (pip install pydicom-data, or pip install 'cxr-widgets[demo]').",
            source=name,
        )
    return Path(path)


def sample_study(with_prior: bool = False) -> Study:
    """A ready-made study: the NEMA chest CR ``RG1_UNCR`` with short made-up texts.

    With ``with_prior=True`` the study also has a prior image, comparison and
    prior report. There is no real prior of this patient: ``RG1_J2KI`` (the
    same radiograph, lossy JPEG 2000) stands in for it, so the model sees an
    unchanged prior. For demonstration and research only.
    """
    study = Study(
        frontal_image=sample_path(SAMPLE_FRONTAL),
        indication=SAMPLE_INDICATION,
        technique=SAMPLE_TECHNIQUE,
        study_id="sample-RG1",
    )
    if with_prior:
        study = study.replace(
            prior_image=sample_path(SAMPLE_PRIOR),
            comparison=SAMPLE_COMPARISON,
            prior_report=SAMPLE_PRIOR_REPORT,
            study_id="sample-RG1-with-prior",
        )
    return study
