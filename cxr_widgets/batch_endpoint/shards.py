"""Input shards for an Azure ML batch endpoint: CSV files of prepared studies.

Microsoft's batch notebook for CXRReportGen writes a pandas CSV whose first,
unnamed column is the row index, followed by the contract's columns with
base64 images. We write the same layout with the *study id* in that first
column, one file per mini-batch item, at most one request's worth of studies
per file (10 studies and the request budget, the same limits an online
request has), and file names zero-padded so that they sort in input order.

The shards go to ``FOLDER/inputs/`` (the folder the job reads: every file
in it is scored); beside it, ``FOLDER/shards.json`` records for every file the study ids, their
store keys and row count, so that outputs can be matched to inputs by name
and nothing is ever aligned by position alone.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..batch import prepared_key
from ..contract import (
    DEFAULT_REQUEST_BUDGET,
    MAX_STUDIES_PER_REQUEST,
    EncodedStudy,
    assemble_request,
    encode_study,
)
from ..errors import ConfigError, CxrWidgetsError, RequestError
from ..folders import make_folder
from ..study import Study

#: The deployment reads every file of the input folder; this prefix and a
#: zero-padded number make their order the input order.
SHARD_PREFIX = "batch_input_"
SHARD_SUFFIX = ".csv"
#: The file beside the input folder that says which study is in which row.
SHARD_MANIFEST = "shards.json"
#: The folder of shard files, the batch job's input (nothing else may be in it).
INPUT_FOLDER = "inputs"
#: pandas writes the index column with an empty header; the official notebook's CSV has it.
STUDY_ID_HEADER = ""
MANIFEST_VERSION = 1
#: At least this many digits, so that names sort the same as numbers up to 99,999 files.
MIN_DIGITS = 5


@dataclass(frozen=True)
class Shard:
    """One input file: its name and, row by row, the study ids and store keys."""

    name: str
    study_ids: tuple[str, ...]
    keys: tuple[str, ...]
    columns: tuple[str, ...]
    nbytes: int
    #: Width and height of each row's frontal image as the user gave it (for drawing boxes).
    image_sizes: tuple[tuple[int, int], ...] = ()

    @property
    def rows(self) -> int:
        return len(self.study_ids)


@dataclass(frozen=True)
class PreparationFailure:
    """A study that could not be prepared, so it is in no shard."""

    index: int
    study_id: str
    error_type: str
    message: str


@dataclass
class ShardSet:
    """The shards of one run, as written to ``folder``."""

    folder: Path
    shards: list[Shard]
    identity: str
    image_options: dict[str, Any]
    failures: list[PreparationFailure] = field(default_factory=list)

    @property
    def input_folder(self) -> Path:
        """The folder to upload as the job's ``uri_folder`` input."""
        return self.folder / INPUT_FOLDER

    @property
    def studies(self) -> int:
        return sum(shard.rows for shard in self.shards)

    def shard(self, name: str) -> Shard:
        for shard in self.shards:
            if shard.name == name:
                return shard
        raise KeyError(f"no shard named {name!r} in {self.folder}")

    def paths(self, names: Iterable[str] | None = None) -> list[Path]:
        """The shard files (all, or those named), in order."""
        wanted = None if names is None else set(names)
        return [
            self.input_folder / s.name for s in self.shards if wanted is None or s.name in wanted
        ]

    def save(self) -> Path:
        path = self.folder / SHARD_MANIFEST
        data = {
            "version": MANIFEST_VERSION,
            "identity": self.identity,
            "image_options": self.image_options,
            "shards": [asdict(shard) for shard in self.shards],
            "failures": [asdict(failure) for failure in self.failures],
        }
        temporary = path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(data, indent=1), encoding="utf-8")
        os.replace(temporary, path)
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> ShardSet:
        """The shard set written to ``folder`` by :func:`write_shards`."""
        folder = Path(folder)
        path = folder / SHARD_MANIFEST
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(
                f"{path} does not exist: point at the folder written by write_shards() "
                "(or `cxr-widgets batch-endpoint submit --dry-run --out DIR`)"
            ) from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path} cannot be read ({exc}); write the shards again") from None
        if not isinstance(data, dict) or data.get("version") != MANIFEST_VERSION:
            raise ConfigError(
                f"{path} is not a shard manifest of this version of cxr-widgets; "
                "write the shards again"
            )
        shards = [
            Shard(
                name=s["name"],
                study_ids=tuple(s["study_ids"]),
                keys=tuple(s["keys"]),
                columns=tuple(s["columns"]),
                nbytes=int(s["nbytes"]),
                image_sizes=tuple(tuple(size) for size in s.get("image_sizes", ())),
            )
            for s in data["shards"]
        ]
        failures = [PreparationFailure(**f) for f in data.get("failures", [])]
        return cls(folder, shards, data["identity"], data["image_options"], failures)


def shard_name(number: int, digits: int) -> str:
    """``batch_input_00001.csv`` for shard 1 of up to 99,999."""
    return f"{SHARD_PREFIX}{number:0{digits}d}{SHARD_SUFFIX}"


def _digits(count: int) -> int:
    return max(MIN_DIGITS, len(str(max(count, 1))))


def _check_ids(studies: Sequence[Study]) -> None:
    seen: dict[str, int] = {}
    for position, study in enumerate(studies):
        if not study.study_id:
            raise RequestError(
                f"studies[{position}] has no study_id; batch endpoint outputs are matched to "
                "inputs by study id: give every Study a unique study_id (a manifest does)"
            )
        if study.study_id in seen:
            raise RequestError(
                f"study id {study.study_id!r} is used by studies[{seen[study.study_id]}] and "
                f"studies[{position}]; study ids must be unique to match outputs to inputs"
            )
        seen[study.study_id] = position


def _pack(
    encoded: list[tuple[int, EncodedStudy]], per_shard: int, budget: int | None
) -> list[list[tuple[int, EncodedStudy]]]:
    """Group studies with the same columns into shards within ``per_shard`` and ``budget``."""
    groups: dict[tuple[str, ...], list[list[tuple[int, EncodedStudy]]]] = {}
    order: list[list[tuple[int, EncodedStudy]]] = []
    for item in encoded:
        columns = item[1].columns
        current = groups.setdefault(columns, [])
        if current:
            shard = current[-1]
            candidate = [e for _, e in shard] + [item[1]]
            fits = len(shard) < per_shard and (
                budget is None or len(assemble_request(candidate).body) <= budget
            )
            if fits:
                shard.append(item)
                continue
        shard = [item]
        current.append(shard)
        order.append(shard)
    return order


def write_shards(
    studies: Iterable[Study],
    folder: str | os.PathLike[str],
    *,
    image_options: dict[str, Any] | None = None,
    identity: str = "azureml-batch-endpoint",
    studies_per_shard: int = MAX_STUDIES_PER_REQUEST,
    max_shard_bytes: int | None = DEFAULT_REQUEST_BUDGET,
    overwrite: bool = False,
) -> ShardSet:
    """Prepare ``studies`` exactly as :func:`~cxr_widgets.run_batch` does and write CSV shards.

    ``image_options`` are those of the backend whose answers you will compare
    with (``client.image_options``). A file holds at most ``studies_per_shard``
    studies (1 to 10) of the same columns, within ``max_shard_bytes`` measured
    as the request the same studies would make. Studies whose images cannot be
    prepared are listed in ``ShardSet.failures`` and left out. Returns the
    :class:`ShardSet`, also saved as ``shards.json`` in ``folder``.
    """
    if not isinstance(studies_per_shard, int) or not (
        1 <= studies_per_shard <= MAX_STUDIES_PER_REQUEST
    ):
        raise ConfigError(
            f"studies_per_shard must be 1 to {MAX_STUDIES_PER_REQUEST}, got {studies_per_shard!r}"
        )
    studies = list(studies)
    _check_ids(studies)
    folder = Path(folder)
    inputs = folder / INPUT_FOLDER
    if inputs.exists() and any(inputs.iterdir()) and not overwrite:
        raise ConfigError(
            f"{inputs} already holds shards: a batch job reads every file in its input "
            "folder, so each run needs a folder of its own; choose another folder or pass "
            "overwrite=True to replace them"
        )
    make_folder(inputs, purpose="the shards", fix="choose another folder.", error=ConfigError)
    for old in inputs.iterdir():
        if old.is_file() and old.name.startswith(SHARD_PREFIX):
            old.unlink()
    options = dict(image_options or {})

    encoded: list[tuple[int, EncodedStudy]] = []
    failures: list[PreparationFailure] = []
    for index, study in enumerate(studies):
        try:
            encoded.append((index, encode_study(study, **options)))
        except CxrWidgetsError as exc:
            failures.append(PreparationFailure(index, study.study_id, type(exc).__name__, str(exc)))

    packed = _pack(encoded, studies_per_shard, max_shard_bytes)
    digits = _digits(len(packed))
    shards = []
    for number, group in enumerate(packed, 1):
        name = shard_name(number, digits)
        columns = group[0][1].columns
        with open(inputs / name, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow([STUDY_ID_HEADER, *columns])
            for _, item in group:
                writer.writerow([item.study.study_id, *item.row])
        shards.append(
            Shard(
                name=name,
                study_ids=tuple(item.study.study_id for _, item in group),
                keys=tuple(prepared_key(item, identity, options) for _, item in group),
                columns=columns,
                nbytes=(inputs / name).stat().st_size,
                image_sizes=tuple(tuple(item.frontal.original_size) for _, item in group),
            )
        )
    shard_set = ShardSet(folder, shards, identity, options, failures)
    shard_set.save()
    return shard_set


def read_shard(path: str | os.PathLike[str]) -> tuple[list[str], list[str], list[list[str]]]:
    """A shard file as (study ids, columns, rows of values), as a scoring script reads it."""
    csv.field_size_limit(1 << 30)  # base64 images are far longer than csv's default limit
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header or len(header) < 2:
            raise RequestError(f"{Path(path).name} has no header row of columns")
        ids, rows = [], []
        for line, values in enumerate(reader, 2):
            if len(values) != len(header):
                raise RequestError(
                    f"{Path(path).name} line {line} has {len(values)} values for "
                    f"{len(header)} columns"
                )
            ids.append(values[0])
            rows.append(values[1:])
    return ids, header[1:], rows
