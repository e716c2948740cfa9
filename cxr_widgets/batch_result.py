"""What a batch run produced: reports in input order, failures, figures, exports."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .report import RECORD_FIELDS, Report, records_to_csv
from .store import write_jsonl

__all__ = ["BatchResult", "StudyFailure"]


@dataclass
class StudyFailure:
    """Why one study has no report."""

    index: int
    study_id: str
    error_type: str
    message: str
    request_id: str | None = None
    from_store: bool = False


@dataclass
class BatchResult:
    """What a batch run produced, in the order the studies were given."""

    reports: list[Report | None]
    failures: list[StudyFailure]
    keys: list[str | None]
    studies: int = 0
    sent: int = 0  # studies sent (and answered or failed) in this run
    skipped: int = 0  # answered before, read from the store
    stored: int = 0  # studies whose answer is in the store (committed now, or before)
    duplicates: int = 0  # same content as another study of this run: answered once for both
    requests: int = 0  # requests sent (client.send calls)
    retries: int = 0  # retries inside the client (429 / 5xx / dropped connections)
    busy: int = 0  # 429 answers seen (inside the client's retries or raised)
    splits: int = 0  # requests split to isolate a study the endpoint refused
    wall_time: float = 0.0
    prepare_time: float = 0.0  # summed over preparation threads
    final_limit: int = 0  # requests in flight allowed at the end (adaptive)
    peak_limit: int = 0
    backoffs: int = 0  # times the limit was lowered (429s, or latency up with no throughput)
    #: What held the run back most of the time: the endpoint, image preparation, or the cap.
    limited_by: str | None = None
    interrupted: bool = False
    store_path: str | None = None
    stopped: str | None = None  # why the run stopped early (the error raised), if it did
    #: Study ids whose DICOM says BurnedInAnnotation YES: the pixels may show a name.
    burned_in: list[str] = field(default_factory=list)
    #: Each study's prepared frontal image (the image its boxes were made for), in input
    #: order, with ``run_batch(keep_images=True)``; None where not kept (the default, to
    #: bound memory), not prepared in this run (answered from the store) or failed.
    images: list[Any] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return sum(r is not None for r in self.reports)

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def errors(self) -> dict[int, StudyFailure]:
        """Failures by study index."""
        return {f.index: f for f in self.failures}

    def summary(self) -> dict[str, Any]:
        """The run's figures (no patient text)."""
        minutes = self.wall_time / 60 if self.wall_time else 0.0
        return {
            "studies": self.studies,
            "ok": self.ok,
            "failed": self.failed,
            "skipped (from store)": self.skipped,
            "duplicates": self.duplicates,
            "requests": self.requests,
            "retries": self.retries,
            "429 seen": self.busy,
            "wall time (s)": round(self.wall_time, 2),
            "studies/min": round(self.sent / minutes, 1) if minutes and self.sent else 0.0,
            "requests in flight (peak)": self.peak_limit,
            "limited by": self.limited_by or "",
        }

    def to_records(self) -> list[dict[str, Any]]:
        """One row per finding and box; one row per failed study with its error."""
        failures = self.errors
        rows: list[dict[str, Any]] = []
        for index, report in enumerate(self.reports):
            if report is not None:
                for record in report.to_records():
                    rows.append({"index": index, "status": "ok", "error": "", **record})
            elif index in failures:
                failure = failures[index]
                row = {name: None for name in RECORD_FIELDS}
                row.update(
                    index=index,
                    status="error",
                    error=f"{failure.error_type}: {failure.message}",
                    study_id=failure.study_id,
                )
                rows.append(row)
        return rows

    def to_dataframe(self) -> Any:
        """:meth:`to_records` as a pandas DataFrame (needs pandas)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("to_dataframe() needs pandas: pip install pandas") from None
        return pd.DataFrame(self.to_records(), columns=["index", "status", "error", *RECORD_FIELDS])

    def export_jsonl(self, path: str | os.PathLike[str]) -> int:
        """One line per study in input order (report, or error); returns the line count."""
        failures = self.errors
        lines = []
        for index, report in enumerate(self.reports):
            line: dict[str, Any] = {"index": index, "key": self.keys[index]}
            if report is not None:
                line.update(study_id=report.study_id, status="ok", report=report.to_dict())
            elif index in failures:
                f = failures[index]
                line.update(
                    study_id=f.study_id,
                    status="error",
                    error={"type": f.error_type, "message": f.message},
                )
            else:
                line.update(status="not run")
            lines.append(line)
        return write_jsonl(path, lines)

    def export_csv(self, path: str | os.PathLike[str]) -> int:
        """One row per finding and box of every report, in input order; returns rows."""
        records = [r for rep in self.reports if rep is not None for r in rep.to_records()]
        records_to_csv(records, path)
        return len(records)

    def export(self, path: str | os.PathLike[str]) -> int:
        """JSONL or CSV, chosen by the file's extension (.jsonl/.json or .csv)."""
        suffix = Path(path).suffix.lower()
        if suffix == ".csv":
            return self.export_csv(path)
        if suffix in (".jsonl", ".json", ".ndjson"):
            return self.export_jsonl(path)
        raise ConfigError(f"cannot export to {path}: use a .jsonl or .csv file name")

    def __repr__(self) -> str:
        flag = " interrupted" if self.interrupted else ""
        return (
            f"<BatchResult{flag} {self.studies} studies: {self.ok} ok, {self.failed} failed, "
            f"{self.skipped} from store; {self.requests} requests in {self.wall_time:.1f} s>"
        )
