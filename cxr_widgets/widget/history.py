"""The session history: every generation, to switch back and compare."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from ..report import Report
from ..study import IMAGE_COLUMNS, TEXT_COLUMNS, Study


class RunRecord(NamedTuple):
    """One generation: what was sent (summarised, no patient text) and what came back."""

    summary: str
    report: Report
    study: Study
    when: datetime
    endpoint: str
    seconds: float


def study_summary(study: Study, prepared: dict[str, Any] | None = None) -> str:
    """Which images and texts a study has, e.g. ``frontal DICOM 1841x1955 + prior; indication``.

    Never includes the texts themselves.
    """
    images = []
    for column in IMAGE_COLUMNS:
        if getattr(study, column) is None:
            continue
        name = column.removesuffix("_image")
        image = (prepared or {}).get(column)
        if image is not None and name == "frontal":
            kind = image.describe().split(",")[0].rsplit(" ", 1)[0]
            name = f"frontal {kind}"
        images.append(name)
    texts = [c.replace("_", " ") for c in TEXT_COLUMNS if getattr(study, c).strip()]
    return " + ".join(images) + (f"; {', '.join(texts)}" if texts else "")


def run_label(record: RunRecord, number: int, total: int) -> str:
    """``run 3 of 3 — 14:02:11, demo (offline), 4 findings``."""
    findings = len(record.report.findings)
    return (
        f"run {number} of {total} — {record.when:%H:%M:%S}, {record.endpoint}, "
        f"{findings} finding{'s' if findings != 1 else ''}"
    )
