"""The session history: every generation, to switch back and compare."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from ..report import Report
from ..study import Study


class RunRecord(NamedTuple):
    """One generation: what was sent (summarised, no patient text) and what came back.

    ``state`` is the form as it was sent (a ``StudyState``: the prepared images,
    which are also the images shown with this run, and the texts), so picking the
    run brings its study back.
    """

    summary: str
    report: Report
    study: Study
    when: datetime
    endpoint: str
    seconds: float
    state: Any = None

    @property
    def images(self) -> dict[str, Any]:
        """The prepared images sent in this run, by request column."""
        return {} if self.state is None else self.state.images


def run_label(record: RunRecord, number: int, total: int) -> str:
    """``run 3 of 3 — 14:02:11, demo (offline), 4 findings``."""
    findings = len(record.report.findings)
    return (
        f"run {number} of {total} — {record.when:%H:%M:%S}, {record.endpoint}, "
        f"{findings} finding{'s' if findings != 1 else ''}"
    )
