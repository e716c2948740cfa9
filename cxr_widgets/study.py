"""Study: one row of a CXRReportGen request, validated."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import StudyError

#: Request columns in the order the model documentation lists them.
COLUMNS: tuple[str, ...] = (
    "frontal_image",
    "lateral_image",
    "prior_image",
    "indication",
    "technique",
    "comparison",
    "prior_report",
)
IMAGE_COLUMNS: tuple[str, ...] = COLUMNS[:3]
TEXT_COLUMNS: tuple[str, ...] = COLUMNS[3:]
#: Sent as ``comparison`` when a study has none, as Microsoft's official clients
#: do (the CXRReportGen deployment notebook's sample inputs, and healthcareai-examples'
#: ``CxrReportGenClient.create_payload``), so results can be compared with theirs.
EMPTY_COMPARISON = "None"


def wire_texts(
    texts: Mapping[str, str | None], empty_comparison: str = EMPTY_COMPARISON
) -> dict[str, str]:
    """The text columns as sent: empty ones left out, an empty comparison as
    ``empty_comparison`` (``""`` sends no comparison at all)."""
    values = {
        column: text
        for column in TEXT_COLUMNS
        if (text := texts.get(column) or "") and text.strip()
    }
    if "comparison" not in values and empty_comparison.strip():
        values["comparison"] = empty_comparison
    return values


def describe_source(source: Any) -> str:
    """A short, patient-free description of an image source for messages."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    name = type(source).__name__
    if name == "FileDataset" or name == "Dataset":
        return "<pydicom Dataset>"
    return f"<{type(source).__module__}.{name}>"


PRIOR_REPORT_WARNING = (
    "a prior report was given without a prior image: the model uses the prior report only "
    "together with a prior image (as MAIRA-2's processor does), so it was probably ignored; "
    "add the prior image"
)


def burned_in_warning(column: str) -> str:
    """The warning for an image whose DICOM header says BurnedInAnnotation=YES."""
    return (
        f"{column}: the DICOM says BurnedInAnnotation=YES, so its pixels may show patient "
        "data (a name, an ID, a date); they were sent and are drawn as they are. Check "
        "before sharing pictures or exports."
    )


def study_warnings(study: Study) -> list[str]:
    """What a reader should know about a study before trusting its report."""
    notes = []
    if study.prior_report.strip() and study.prior_image is None:
        notes.append(PRIOR_REPORT_WARNING)
    return notes


_IMAGE_TYPES = "a path, bytes, a PIL image, a numpy array or a pydicom Dataset"


def _check_image(name: str, value: Any, required: bool) -> None:
    if value is None:
        if required:
            raise StudyError(
                f"{name} is required: give the current frontal chest X-ray as {_IMAGE_TYPES}.",
                field=name,
            )
        return
    if isinstance(value, (str, os.PathLike)):
        if not os.fspath(value):
            raise StudyError(f"{name} is an empty path: give the image file's path.", field=name)
        return
    if isinstance(value, (bytes, bytearray, memoryview)):
        if len(value) == 0:
            raise StudyError(
                f"{name} is empty (0 bytes): give the image file's content.", field=name
            )
        return
    module = type(value).__module__ or ""
    if module.startswith(("PIL.", "numpy", "pydicom")):
        return
    raise StudyError(
        f"{name} has type {type(value).__name__}; expected {_IMAGE_TYPES}.", field=name
    )


@dataclass(eq=False)
class Study:
    """One chest X-ray study: the current frontal image and optional context.

    Images may be a path (PNG, JPEG or DICOM), bytes, a PIL image, a numpy
    array or a pydicom Dataset. Empty text fields are left out of the request,
    except ``comparison``: an empty one becomes ``empty_comparison`` (``"None"``,
    what Microsoft's official clients send; pass ``empty_comparison=""`` to send
    nothing). ``study_id`` is yours (for example an accession number alias);
    it is never sent.
    """

    frontal_image: Any
    lateral_image: Any = None
    prior_image: Any = None
    indication: str = ""
    technique: str = ""
    comparison: str = ""
    prior_report: str = ""
    study_id: str = field(default="", kw_only=True)
    empty_comparison: str = field(default=EMPTY_COMPARISON, kw_only=True, repr=False)

    def __post_init__(self) -> None:
        _check_image("frontal_image", self.frontal_image, required=True)
        _check_image("lateral_image", self.lateral_image, required=False)
        _check_image("prior_image", self.prior_image, required=False)
        for name in TEXT_COLUMNS:
            value = getattr(self, name)
            if value is None:
                setattr(self, name, "")
            elif not isinstance(value, str):
                raise StudyError(
                    f"{name} must be text (str), not {type(value).__name__}.", field=name
                )
        if not isinstance(self.study_id, str):
            self.study_id = str(self.study_id)
        if not isinstance(self.empty_comparison, str):
            raise StudyError(
                'empty_comparison must be text: "None" (the default) or "" to send no comparison.',
                field="empty_comparison",
            )
        # Normalised here, once, so that every reader of the study (requests, sizes,
        # result-store keys) sees the value that is sent.
        self.comparison = wire_texts({"comparison": self.comparison}, self.empty_comparison).get(
            "comparison", self.comparison
        )

    @property
    def columns(self) -> tuple[str, ...]:
        """The request columns this study fills, in the documented order."""
        used = []
        for name in COLUMNS:
            value = getattr(self, name)
            if name in IMAGE_COLUMNS:
                if value is not None:
                    used.append(name)
            elif value.strip():
                used.append(name)
        return tuple(used)

    def texts(self) -> dict[str, str]:
        """The non-empty text fields (as sent)."""
        return {name: getattr(self, name) for name in TEXT_COLUMNS if getattr(self, name).strip()}

    def __repr__(self) -> str:
        # No patient text in reprs: say which fields are present, not what they hold.
        parts = [f"frontal_image={describe_source(self.frontal_image)!r}"]
        for name in ("lateral_image", "prior_image"):
            if getattr(self, name) is not None:
                parts.append(f"{name}={describe_source(getattr(self, name))!r}")
        for name in TEXT_COLUMNS:
            value = getattr(self, name)
            if value:
                parts.append(f"{name}=<{len(value)} chars>")
        if self.study_id:
            parts.append(f"study_id={self.study_id!r}")
        return f"Study({', '.join(parts)})"

    def replace(self, **changes: Any) -> Study:
        """A copy with some fields changed."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return Study(**values)
