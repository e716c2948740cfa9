"""Read a batch job's ``predictions.csv`` and load it into the results store.

Microsoft's CXRReportGen batch notebook reads ``predictions.csv`` with no
header and decodes column 1 of a row as the findings JSON. Each row also
carries its row number in the input file (column 0) and the input file's name
(last column), which is how rows are matched back to studies here: by
(file, row) through ``shards.json``, never by position in the output, whose
order is not guaranteed once several mini-batches run at once.

Everything that does not line up is named: rows whose file or row number is
unknown, the same row twice with different answers, answers that are not valid
findings, and studies with no row at all. A shard with any such study is
"incomplete" and can be submitted again on its own.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..contract import parse_response
from ..errors import ConfigError, ResponseFormatError
from ..report import Provenance, Report
from .shards import SHARD_SUFFIX, ShardSet


@dataclass(frozen=True)
class PredictionRow:
    """One line of ``predictions.csv``."""

    line: int
    shard: str | None
    row: int | None
    output: str


@dataclass
class IngestResult:
    """What :func:`ingest` stored, and everything it could not."""

    stored: int = 0
    already_stored: int = 0
    duplicates: int = 0
    unmatched: list[str] = field(default_factory=list)  # descriptions of output lines
    conflicts: dict[str, str] = field(default_factory=dict)  # study id -> why
    invalid: dict[str, str] = field(default_factory=dict)  # study id -> parse error
    missing: dict[str, list[str]] = field(default_factory=dict)  # shard -> study ids
    failed_shards: dict[str, str] = field(default_factory=dict)  # shard -> job error

    @property
    def incomplete_shards(self) -> list[str]:
        """Shards to submit again: a study of theirs has no stored answer."""
        names = set(self.missing) | set(self.failed_shards)
        names |= {self._shard_of[s] for s in (*self.conflicts, *self.invalid)}
        return sorted(names)

    @property
    def complete(self) -> bool:
        return not (self.incomplete_shards or self.unmatched)

    _shard_of: dict[str, str] = field(default_factory=dict, repr=False)

    def summary(self) -> str:
        """A few lines for the terminal or a notebook."""
        lines = [f"stored {self.stored} reports ({self.already_stored} were already stored)"]
        if self.duplicates:
            lines.append(f"{self.duplicates} output rows were exact repeats (ignored)")
        if self.unmatched:
            lines.append(f"{len(self.unmatched)} output rows match no input: {self.unmatched[:3]}")
        for name, why in self.failed_shards.items():
            lines.append(f"shard {name} failed in the job: {why}")
        for name, ids in self.missing.items():
            lines.append(f"shard {name}: no answer for {len(ids)} studies ({', '.join(ids[:3])})")
        for study, why in {**self.conflicts, **self.invalid}.items():
            lines.append(f"study {study}: {why}")
        if self.incomplete_shards:
            lines.append("submit these shards again: " + ", ".join(self.incomplete_shards))
        return "\n".join(lines)


def _as_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def read_predictions(path: str | os.PathLike[str]) -> list[PredictionRow]:
    """The rows of a ``predictions.csv`` (no header: row number, findings JSON, file name)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"{path} does not exist: download the job's 'score' output first "
            "(collect(), or `cxr-widgets batch-endpoint collect JOB`)"
        )
    csv.field_size_limit(1 << 26)
    rows = []
    with open(path, encoding="utf-8", newline="") as handle:
        for line, values in enumerate(csv.reader(handle), 1):
            if not values:
                continue
            shard = values[-1] if len(values) >= 3 and values[-1].endswith(SHARD_SUFFIX) else None
            number = _as_int(values[0]) if len(values) >= 2 else None
            output = values[1] if len(values) >= 2 else values[0]
            rows.append(PredictionRow(line, shard, number, output))
    return rows


def _report(
    output: str, study_id: str, size: tuple[int, int] | None, shard_set: ShardSet, demo: bool
) -> Report:
    """The report of one output row, built once with where it came from."""
    from .. import __version__

    parsed = parse_response(json.dumps([{"output": output}]), n_studies=1)[0]
    kind = "simulated batch job" if demo else "azureml-batch-endpoint"
    return Report(
        findings=list(parsed.findings),
        image_size=tuple(size) if size else None,
        warnings=list(parsed.warnings),
        demo=demo or parsed.demo,
        source=shard_set.identity,
        study_id=study_id,
        provenance=Provenance(
            backend=kind,
            endpoint=shard_set.identity,
            image_options=shard_set.image_options,
            package_version=__version__,
        ),
    )


def ingest(
    predictions: str | os.PathLike[str] | list[PredictionRow],
    shard_set: ShardSet,
    store: Any,
    *,
    failed_shards: dict[str, str] | None = None,
    demo: bool = False,
) -> IngestResult:
    """Match output rows to studies through ``shard_set`` and store each answer.

    ``store``: a :class:`~cxr_widgets.store.ResultStore` (or its path). Reports
    are stored under the same keys :func:`~cxr_widgets.run_batch` uses for the
    same prepared studies and the shard set's identity. ``failed_shards``:
    mini-batches the job reported as failed. ``demo``: the answers are canned
    (the offline simulation), so the reports say so.
    """
    from ..store import ResultStore

    owned = not isinstance(store, ResultStore)
    result_store = ResultStore(store) if owned else store
    rows = predictions if isinstance(predictions, list) else read_predictions(predictions)
    result = IngestResult(failed_shards=dict(failed_shards or {}))
    by_name = {shard.name: shard for shard in shard_set.shards}
    result._shard_of = {sid: s.name for s in shard_set.shards for sid in s.study_ids}
    single = shard_set.shards[0] if len(shard_set.shards) == 1 else None

    answers: dict[tuple[str, int], str] = {}
    for row in rows:
        shard = by_name.get(row.shard) if row.shard else single
        if shard is None:
            where = row.shard or "no file name (and more than one shard)"
            result.unmatched.append(f"line {row.line}: file {where}")
            continue
        if row.row is None or not 0 <= row.row < shard.rows:
            result.unmatched.append(f"line {row.line}: row {row.row} of {shard.name}")
            continue
        place = (shard.name, row.row)
        if place in answers:
            if answers[place] == row.output:
                result.duplicates += 1
            else:
                study = shard.study_ids[row.row]
                result.conflicts[study] = (
                    f"two different answers for row {row.row} of {shard.name} "
                    f"(lines of predictions.csv disagree); neither was stored"
                )
            continue
        answers[place] = row.output

    stored_keys = result_store.ok_keys()
    items = []
    for shard in shard_set.shards:
        missing = []
        for number, (study, key) in enumerate(zip(shard.study_ids, shard.keys, strict=True)):
            output = answers.get((shard.name, number))
            if study in result.conflicts:
                continue
            if output is None:
                if key not in stored_keys and shard.name not in result.failed_shards:
                    missing.append(study)
                continue
            try:
                size = shard.image_sizes[number] if shard.image_sizes else None
                report = _report(output, study, size, shard_set, demo)
            except ResponseFormatError as exc:
                result.invalid[study] = f"the answer in row {number} of {shard.name}: {exc}"
                continue
            if key in stored_keys:
                result.already_stored += 1
                continue
            items.append((key, report, study))
        if missing:
            result.missing[shard.name] = missing
    try:
        if items:
            result_store.put_many_ok(items)
        result.stored = len(items)
    finally:
        if owned:
            result_store.close()
    return result
