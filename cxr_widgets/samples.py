"""Sample studies: Microsoft's CXRReportGen sample and the NEMA DICOM radiograph.

- ``sample_study()`` (``"microsoft"``): the frontal and lateral chest
  radiographs of Microsoft's official CXRReportGen deploy notebook, shipped in
  ``cxr_widgets/data/microsoft_sample`` (MIT License, Copyright (c) Microsoft
  Corporation; see the ``LICENSE`` there), with the answer the model gave for
  them in that notebook (:func:`recorded_answer`). The offline backends
  return that recorded answer for exactly this study.
- ``sample_study("nema")``: RG1, a public NEMA test image in ``pydicom-data``
  (a chest CR, 1841 x 1955, MONOCHROME1, 15 bits stored): the DICOM example.
  Its texts are made up; they describe no real patient, and the offline
  backends answer it with canned DEMO findings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from .errors import ImageError
from .report import Finding
from .study import Study

#: The folder with Microsoft's sample images, their MIT notice and the recorded answer.
MICROSOFT_SAMPLE_DIR = Path(__file__).resolve().parent / "data" / "microsoft_sample"

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


def microsoft_sample_paths() -> tuple[Path, Path]:
    """The frontal and lateral JPEGs of Microsoft's sample study (shipped in the package)."""
    paths = (MICROSOFT_SAMPLE_DIR / "cxr_frontal.jpg", MICROSOFT_SAMPLE_DIR / "cxr_lateral.jpg")
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise ImageError(
            f"Microsoft's sample image(s) {missing} are missing from {MICROSOFT_SAMPLE_DIR}: "
            "reinstall cxr-widgets (pip install --force-reinstall cxr-widgets).",
            source=", ".join(missing),
        )
    return paths


@dataclass(frozen=True)
class RecordedAnswer:
    """CXRReportGen's answer to Microsoft's sample, as saved in Microsoft's notebook.

    ``model`` says what is known of the model version (Microsoft does not
    state it); ``source`` names the repository, commit, notebook and cell;
    ``inputs`` the texts that were sent with the two images.
    """

    findings: tuple[Finding, ...]
    model: str
    source: dict[str, Any]
    inputs: dict[str, str]


@lru_cache(maxsize=1)
def recorded_answer() -> RecordedAnswer:
    """The recorded answer to Microsoft's sample (``data/microsoft_sample/answer.json``)."""
    data = json.loads((MICROSOFT_SAMPLE_DIR / "answer.json").read_text(encoding="utf-8"))
    from .report import Box

    findings = tuple(
        Finding(text, [Box.from_list(b) for b in boxes or []]) for text, boxes in data["findings"]
    )
    return RecordedAnswer(findings, data["model"], data["source"], data["inputs"])


SampleName = Literal["microsoft", "nema"]


def sample_study(which: SampleName = "microsoft", *, with_prior: bool = False) -> Study:
    """A ready-made study: Microsoft's sample (default) or the NEMA DICOM ``"nema"``.

    ``"microsoft"``: the frontal and lateral JPEGs of Microsoft's official
    notebook with the texts it sent (no indication or technique); the offline
    backends return the model's recorded answer for it. It has no prior.

    ``"nema"``: the NEMA chest CR ``RG1_UNCR`` (DICOM, MONOCHROME1) with short
    made-up texts. With ``with_prior=True`` it also has a prior image,
    comparison and prior report. There is no real prior of this patient:
    ``RG1_J2KI`` (the same radiograph, lossy JPEG 2000) stands in for it, so
    the model sees an unchanged prior. For demonstration and research only.
    """
    if which == "microsoft":
        if with_prior:
            raise ValueError(
                "Microsoft's sample study has no prior image; for a study with a prior use "
                "sample_study('nema', with_prior=True)"
            )
        frontal, lateral = microsoft_sample_paths()
        return Study(frontal_image=frontal, lateral_image=lateral, study_id="sample-microsoft")
    if which != "nema":
        raise ValueError(f"unknown sample {which!r}: use 'microsoft' or 'nema'")
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
