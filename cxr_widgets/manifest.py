"""Batch manifests: a CSV file, one study per row, read into :class:`Study` objects.

Columns (header names, any case): ``frontal`` (required), ``lateral``,
``prior`` (image paths, relative to the manifest's folder or absolute),
``indication``, ``technique``, ``comparison``, ``prior_report`` and an
optional ``study_id`` (default: the frontal path as written; a default that
repeats gets ``@row N``). The request column names (``frontal_image``, ...) are
accepted too. UTF-8 (with or without BOM) and UTF-16 (with or without BOM) are
read. Every problem (a path to a FIFO or device, a study id given twice, ...) is
reported as a :class:`ManifestError` naming the row, before anything is sent.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

from .errors import ManifestError, StudyError
from .study import Study

__all__ = ["MANIFEST_COLUMNS", "format_manifest", "read_manifest", "write_manifest"]

#: Manifest columns, in the order :func:`write_manifest` writes them.
MANIFEST_COLUMNS: tuple[str, ...] = (
    "study_id",
    "frontal",
    "lateral",
    "prior",
    "indication",
    "technique",
    "comparison",
    "prior_report",
)
_IMAGE_COLUMNS = ("frontal", "lateral", "prior")
_ALIASES = {"frontal_image": "frontal", "lateral_image": "lateral", "prior_image": "prior"}
_STUDY_FIELDS = {"frontal": "frontal_image", "lateral": "lateral_image", "prior": "prior_image"}


def _header(names: list[str], path: Path) -> list[str]:
    columns = []
    for position, raw in enumerate(names, start=1):
        name = (raw or "").strip().lower()
        name = _ALIASES.get(name, name)
        if not name:
            raise ManifestError(
                f"{path}: column {position} of the header has no name; every column needs "
                f"one of {', '.join(MANIFEST_COLUMNS)}."
            )
        if name not in MANIFEST_COLUMNS:
            raise ManifestError(
                f"{path}: unknown column {raw.strip()!r}; allowed columns: "
                f"{', '.join(MANIFEST_COLUMNS)} (frontal is required)."
            )
        if name in columns:
            raise ManifestError(f"{path}: the column {name!r} appears twice in the header.")
        columns.append(name)
    if "frontal" not in columns:
        raise ManifestError(
            f"{path}: no 'frontal' column; the header must name the frontal image column "
            f"(allowed columns: {', '.join(MANIFEST_COLUMNS)})."
        )
    return columns


def read_manifest(path: str | os.PathLike[str], *, check_files: bool = True) -> list[Study]:
    """The studies in a CSV manifest, in file order.

    Rows are numbered as in a spreadsheet (the header is row 1). Raises
    :class:`ManifestError` for a missing or empty file, an unknown or missing
    column, a row without a frontal image, or (``check_files``) an image file
    that does not exist.
    """
    path = Path(path)
    kind = _not_a_file(path)
    if kind == "missing":
        raise ManifestError(f"the manifest {path} does not exist; check the path.")
    if kind == "folder":
        raise ManifestError(f"the manifest {path} is a folder; give the CSV file inside it.")
    if kind:
        raise ManifestError(
            f"the manifest {path} is {kind}, not a regular file; give a CSV file (it is "
            "not read: reading could block or never end)."
        )
    folder = path.resolve().parent
    try:
        text = _decode(path.read_bytes(), path)
        lines = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise ManifestError(f"{path} is not valid CSV ({exc}).") from None
    numbered = [(n, row) for n, row in enumerate(lines, start=1) if any(c.strip() for c in row)]
    if not numbered:
        raise ManifestError(
            f"the manifest {path} is empty; it needs a header row (frontal, lateral, prior, "
            "indication, technique, comparison, prior_report, study_id) and one row per study."
        )
    _, names = numbered[0]
    columns = _header(names, path)
    rows = numbered[1:]
    if not rows:
        raise ManifestError(
            f"the manifest {path} has a header but no studies; add one row per study."
        )
    studies = []
    given: dict[str, int] = {}  # explicit study id -> its row
    defaulted: set[str] = set()
    for number, values in rows:
        if len(values) > len(columns) and any(v.strip() for v in values[len(columns) :]):
            raise ManifestError(
                f"{path}, row {number}: {len(values)} values but the header has "
                f"{len(columns)} columns (a comma inside a text needs quotes)."
            )
        record = {name: (values[i] if i < len(values) else "") for i, name in enumerate(columns)}
        study_id = record.get("study_id", "").strip()
        if study_id:
            if study_id in given:
                raise ManifestError(
                    f"{path}, row {number}: the study_id {study_id!r} is also in row "
                    f"{given[study_id]}; study ids must be unique (they name results and "
                    "exports)."
                )
            given[study_id] = number
        else:
            study_id = record["frontal"].strip()
            if study_id in defaulted or study_id in given:
                study_id = f"{study_id}@row {number}"
            defaulted.add(study_id)
        record["study_id"] = study_id
        studies.append(_study(record, number, path, folder, check_files))
    return studies


def _not_a_file(path: Path) -> str:
    """ "" for a regular file; else what it is ("missing", "folder", "a FIFO", ...)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if stat.S_ISREG(mode):
        return ""
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _decode(data: bytes, path: Path) -> str:
    """The manifest's text: UTF-8 (BOM or not) or UTF-16 (BOM or not, told by its zero bytes)."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    elif len(data) >= 4 and data[1::2].count(0) > len(data) // 4 and not data[0::2].count(0):
        encoding = "utf-16-le"  # ASCII-range text: every second byte zero
    elif len(data) >= 4 and data[0::2].count(0) > len(data) // 4 and not data[1::2].count(0):
        encoding = "utf-16-be"
    else:
        encoding = "utf-8-sig"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError:
        raise ManifestError(
            f"{path} is not UTF-8 or UTF-16 text; save the manifest as CSV (UTF-8)."
        ) from None


def _study(
    record: Mapping[str, str], number: int, path: Path, folder: Path, check_files: bool
) -> Study:
    where = f"{path}, row {number}"
    fields: dict[str, object] = {}
    for column in _IMAGE_COLUMNS:
        value = record.get(column, "").strip()
        if not value:
            if column == "frontal":
                raise ManifestError(f"{where}: no frontal image; every study needs one.")
            continue
        image = Path(value).expanduser()
        if not image.is_absolute():
            image = folder / image
        kind = _not_a_file(image) if check_files else ""
        if kind:
            what = {"missing": "does not exist", "folder": "is a folder, not a file"}.get(
                kind, f"is {kind}, not a regular file"
            )
            raise ManifestError(
                f"{where}: the {column} image {value!r} {what} (looked for {image})."
            )
        fields[_STUDY_FIELDS[column]] = image
    for column in ("indication", "technique", "comparison", "prior_report"):
        fields[column] = record.get(column, "").strip()
    study_id = record["study_id"]
    try:
        return Study(**fields, study_id=study_id)  # type: ignore[arg-type]
    except StudyError as exc:
        raise ManifestError(f"{where}: {exc}") from None


def format_manifest(
    rows: Iterable[Mapping[str, str | os.PathLike[str]]], folder: str | os.PathLike[str]
) -> str:
    """Manifest CSV text; image paths inside ``folder`` (the manifest's) are made relative."""
    folder = Path(folder).resolve()
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(MANIFEST_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        out: dict[str, str] = {}
        for name in MANIFEST_COLUMNS:
            value = row.get(name) or ""
            if name in _IMAGE_COLUMNS and value:
                image = Path(value).resolve()
                try:
                    value = image.relative_to(folder).as_posix()
                except ValueError:
                    value = str(image)
            out[name] = str(value)
        writer.writerow(out)
    return buffer.getvalue()


def write_manifest(
    path: str | os.PathLike[str], rows: Iterable[Mapping[str, str | os.PathLike[str]]]
) -> Path:
    """Write a manifest CSV; image paths inside the manifest's folder are made relative."""
    path = Path(path)
    text = format_manifest(rows, path.resolve().parent)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)
    return path
