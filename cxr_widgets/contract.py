"""The CXRReportGen wire format, both directions, in one place.

Request: ``{"input_data": {"columns": [...], "index": [...], "data": [[...]]}}``.
Response: documented as ``{"output": [[text, boxes], ...]}``, but the deployed
service answers a list of records ``[{"output": "<JSON string>"}, ...]``, one
per study. :func:`parse_response` accepts both.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from .errors import RequestError, ResponseFormatError
from .images.sniff import JPEG_MAGIC, is_png_or_jpeg
from .report import Box, Finding, Report, repair_box, validate_box
from .study import (
    COLUMNS,
    IMAGE_COLUMNS,
    Study,
    burned_in_warning,
    study_warnings,
    wire_texts,
)

MAX_STUDIES_PER_REQUEST = 10
#: An older Azure ML limit answered 413 above 1.5 MB; keep requests under it.
DEFAULT_REQUEST_BUDGET = 1_500_000

#: Largest answer a client reads (decoded): ten studies' findings take a few KB, so this
#: only stops a hostile or broken server (a 100 MB body, a gzip bomb) from filling memory.
MAX_RESPONSE_BYTES = 8_000_000


@dataclass
class EncodedStudy:
    """One study as it travels: its columns, row values and prepared images."""

    study: Study
    columns: tuple[str, ...]
    row: list[str]
    images: dict[str, Any] = field(default_factory=dict)  # column -> PreparedImage

    @property
    def frontal(self) -> Any:
        return self.images["frontal_image"]

    @cached_property
    def size(self) -> int:
        """Exact bytes this study's row adds to a request body (see :func:`request_size`)."""
        return row_bytes(self.row)

    @cached_property
    def digest(self) -> str:
        """sha256 of this study's row as sent (images and texts)."""
        return hashlib.sha256(_dumps(list(self.row))).hexdigest()

    @property
    def warnings(self) -> list[str]:
        """What a reader of this study's report should know (see :func:`study_warnings`)."""
        notes = study_warnings(self.study)
        for column, prepared in self.images.items():
            # PreparedImage.burned_in_annotation: True, False or None (unknown).
            if getattr(prepared, "burned_in_annotation", None) is True:
                notes.append(burned_in_warning(column))
        return notes


@dataclass
class PreparedRequest:
    """A request payload with the studies it encodes."""

    payload: dict[str, Any]
    studies: list[EncodedStudy]

    @property
    def body(self) -> bytes:
        return _dumps(self.payload)

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.payload["input_data"]["columns"])


def encode_study(study: Study, **image_options: Any) -> EncodedStudy:
    """Prepare a study's images and lay out its row in the documented column order."""
    from .images import prepare_image

    if not isinstance(study, Study):
        raise RequestError(f"expected a Study, got {type(study).__name__}")
    images: dict[str, Any] = {}
    row: list[str] = []
    for column in study.columns:
        value = getattr(study, column)
        if column in IMAGE_COLUMNS:
            prepared = prepare_image(value, name=column, **image_options)
            images[column] = prepared
            row.append(prepared.base64)
        else:
            row.append(value)
    return EncodedStudy(study=study, columns=study.columns, row=row, images=images)


def assemble_request(encoded: Sequence[EncodedStudy]) -> PreparedRequest:
    """Put already encoded studies (same columns, 1 to 10) into one request."""
    if not encoded:
        raise RequestError("a request needs at least one study")
    if len(encoded) > MAX_STUDIES_PER_REQUEST:
        raise RequestError(
            f"{len(encoded)} studies in one request; the endpoint takes at most "
            f"{MAX_STUDIES_PER_REQUEST}. Use run_batch() to split them."
        )
    columns = encoded[0].columns
    for position, item in enumerate(encoded):
        if item.columns != columns:
            raise RequestError(
                f"study {position} fills columns {list(item.columns)} but study 0 fills "
                f"{list(columns)}; studies in one request must fill the same columns. "
                "Use run_batch(), which groups studies by their columns."
            )
    payload = request_payload(columns, [item.row for item in encoded])
    return PreparedRequest(payload=payload, studies=list(encoded))


def request_payload(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> dict[str, Any]:
    """The request's JSON object for ``rows`` of values in ``columns`` (no checks: build
    studies' requests with :func:`build_request`; this is the frame they share)."""
    return {
        "input_data": {
            "columns": list(columns),
            "index": list(range(len(rows))),
            "data": [list(row) for row in rows],
        }
    }


def _dumps(value: Any) -> bytes:
    """The body encoding, the only one: compact JSON, ASCII-escaped (``\\uXXXX``)."""
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


# --- exact sizes ----------------------------------------------------------------------
# A body is the frame ``{"input_data":{"columns":[...],"index":[0,...],"data":[`` +
# rows joined by "," + ``]}}``. Each row's size is measured with the body's own
# encoding, so non-ASCII text (6 bytes per escaped character) and quotes count exactly.


def row_bytes(row: Sequence[str]) -> int:
    """Exact bytes one study's row takes in a request body (its ``[...]``, no comma)."""
    return len(_dumps(list(row)))


def frame_bytes(columns: Sequence[str], n_rows: int) -> int:
    """Exact bytes of a request body for ``n_rows`` rows, without the rows themselves
    (the commas between rows included)."""
    if n_rows < 0:
        raise ValueError(f"n_rows must be >= 0, got {n_rows}")
    return len(_dumps(request_payload(columns, [[]] * n_rows))) - 2 * n_rows


def request_size(encoded: Sequence[EncodedStudy]) -> int:
    """Exact size in bytes of the body :func:`assemble_request` builds from ``encoded``.

    The one size rule of the package: the batch packer and the widget use it
    (with :attr:`EncodedStudy.size` cached per study) instead of estimating.
    """
    if not encoded:
        raise RequestError("a request needs at least one study")
    return frame_bytes(encoded[0].columns, len(encoded)) + sum(item.size for item in encoded)


def request_bytes(images: Mapping[str, Any], texts: Mapping[str, str]) -> int:
    """Size of the body of a one-study request from prepared images and text fields.

    ``images`` maps image columns to PreparedImage objects; texts are sent as
    :func:`~cxr_widgets.study.wire_texts` says (empty ones left out, an empty
    comparison as ``"None"``). Works before a frontal image is loaded.
    """
    values = {column: prepared.base64 for column, prepared in images.items()}
    values.update(wire_texts(texts))
    columns = [column for column in COLUMNS if column in values]
    row = [values[column] for column in columns]
    return frame_bytes(columns, 1) + row_bytes(row)


def prepare_request(studies: Study | Iterable[Study], **image_options: Any) -> PreparedRequest:
    """Encode studies into one request, keeping the prepared images."""
    if isinstance(studies, Study):
        studies = [studies]
    elif isinstance(studies, (str, bytes, os.PathLike)) or not isinstance(studies, Iterable):
        raise RequestError(
            f"expected a Study or a list of studies, got {type(studies).__name__}; "
            "wrap images in a Study, e.g. Study(frontal_image=path)"
        )
    return assemble_request([encode_study(s, **image_options) for s in studies])


def build_request(studies: Study | Iterable[Study], **image_options: Any) -> dict[str, Any]:
    """The exact JSON payload for 1 to 10 studies that fill the same columns."""
    return prepare_request(studies, **image_options).payload


# --- the server side of the request ------------------------------------------


def _decode_image_value(value: str, where: str) -> bytes:
    try:
        data = base64.b64decode(value.encode("ascii"), validate=False)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise RequestError(f"{where}: not base64-encoded image bytes") from None
    if not is_png_or_jpeg(data):
        raise RequestError(f"{where}: the image is not PNG or JPEG (send PNG or JPEG bytes)")
    _check_complete(data, where)
    return data


def _check_complete(data: bytes, where: str) -> None:
    """RequestError when the image stops early (a cut base64 string, a damaged file)."""
    from PIL import Image

    problem = None
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()  # PNG: every chunk and its CRC up to IEND
    except Exception as exc:  # Pillow raises many kinds for damaged data
        problem = type(exc).__name__
    if problem is None and data.startswith(JPEG_MAGIC) and b"\xff\xd9" not in data[-64:]:
        problem = "no end-of-image marker"
    if problem is not None:
        raise RequestError(
            f"{where}: the image data is cut short or damaged ({problem}); send the whole "
            "PNG or JPEG file, base64-encoded"
        )


def validate_request(
    payload: Any, max_studies: int = MAX_STUDIES_PER_REQUEST
) -> list[dict[str, Any]]:
    """Check a request as the endpoint does; return one dict per study.

    Image columns come back as decoded bytes, text columns as strings.
    Raises :class:`RequestError` naming the first problem found.
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("input_data"), dict):
        raise RequestError('the request must be a JSON object with an "input_data" object')
    input_data = payload["input_data"]
    columns = input_data.get("columns")
    index = input_data.get("index")
    data = input_data.get("data")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise RequestError('"columns" must be a list of column names')
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown:
        raise RequestError(f"unknown column(s) {unknown}; allowed: {list(COLUMNS)}")
    if len(set(columns)) != len(columns):
        raise RequestError('"columns" names a column twice')
    if "frontal_image" not in columns:
        raise RequestError('"columns" must include "frontal_image"')
    if not isinstance(data, list) or not all(isinstance(r, list) for r in data):
        raise RequestError('"data" must be a list of rows (lists)')
    if not isinstance(index, list) or len(index) != len(data):
        raise RequestError('"index" must be a list with one entry per row of "data"')
    if len(data) > max_studies:
        raise RequestError(f"{len(data)} rows; at most {max_studies} studies per request")
    rows = []
    for number, values in enumerate(data):
        if len(values) != len(columns):
            raise RequestError(
                f"row {number} has {len(values)} values but there are {len(columns)} columns"
            )
        row: dict[str, Any] = {}
        for column, value in zip(columns, values, strict=True):
            if not isinstance(value, str):
                raise RequestError(f"row {number}, {column}: values must be strings")
            if column in IMAGE_COLUMNS:
                row[column] = _decode_image_value(value, f"row {number}, {column}")
            else:
                row[column] = value
        rows.append(row)
    return rows


ResponseShape = Literal["records", "documented"]


def format_response(outputs: Sequence[Sequence[Finding]], shape: ResponseShape = "records") -> Any:
    """The JSON-ready body an endpoint sends for ``outputs`` (findings per study).

    ``records``: what the deployed service sends, one ``{"output": "<JSON>"}``
    per study. ``documented``: ``{"output": [...]}``, one study only.
    """
    wire = [[f.to_wire() for f in findings] for findings in outputs]
    if shape == "records":
        return [{"output": json.dumps(item)} for item in wire]
    if shape == "documented":
        if len(wire) != 1:
            raise ValueError("the documented shape carries exactly one study")
        return {"output": wire[0]}
    raise ValueError(f"unknown response shape {shape!r}")


# --- the client side of the response ------------------------------------------


def _loads(text: str | bytes, what: str) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ResponseFormatError(f"{what} is not valid JSON ({exc.__class__.__name__})") from None


def _decode_output(output: Any, what: str) -> Any:
    """An ``output`` value, decoded when it is a JSON string (at most twice)."""
    for _ in range(2):
        if not isinstance(output, (str, bytes, bytearray)):
            break
        output = _loads(bytes(output) if isinstance(output, bytearray) else output, what)
    return output


def _is_study_list(value: Any) -> bool:
    """True for a list of studies' outputs ``[[[text, boxes], ...], ...]`` or ``["<JSON>", ...]``.

    A single study's findings start with their text, ``[["text", boxes], ...]``,
    so an item whose first element is a string marks one study.
    """
    if not value or not isinstance(value, list):
        return False
    for item in value:
        if isinstance(item, (str, bytes)):
            if not item.lstrip().startswith("[" if isinstance(item, str) else b"["):
                return False  # plain text: a malformed finding, not a study's JSON
            continue
        if not isinstance(item, list):
            return False
        if item and not isinstance(item[0], list):
            return False
    return True


def _split_outputs(body: Any, n_studies: int | None) -> list[Any]:
    """The per-study ``output`` values, decoded from JSON strings but not validated."""
    if isinstance(body, dict):
        if "output" not in body:
            keys = ", ".join(sorted(map(str, body))[:5])
            raise ResponseFormatError(f'the response has no "output" (keys: {keys or "none"})')
        output = _decode_output(body["output"], '"output"')
        if not isinstance(output, list):
            raise ResponseFormatError(f'"output" must be a list, got {type(output).__name__}')
        if n_studies != 1 and _is_study_list(output):
            # {"output": [study0, study1, ...]}: several studies in the documented shape.
            return [_decode_output(o, f'study {n} "output"') for n, o in enumerate(output)]
        return [output]
    if isinstance(body, list):
        outputs = []
        for number, record in enumerate(body):
            if not isinstance(record, dict) or "output" not in record:
                raise ResponseFormatError(
                    f'study {number}: expected a record {{"output": ...}}, '
                    f"got {type(record).__name__}"
                )
            outputs.append(_decode_output(record["output"], f'study {number} "output"'))
        return outputs
    raise ResponseFormatError(
        f"the response must be a JSON object or list, got {type(body).__name__}"
    )


def _parse_findings(
    output: Any, study: int, strict: bool, repair_boxes: bool = False
) -> tuple[list[Finding], list[str]]:
    findings: list[Finding] = []
    warnings: list[str] = []
    if not isinstance(output, list):
        message = f'"output" must be a list of findings, got {type(output).__name__}'
        if strict:
            raise ResponseFormatError(f"study {study}: {message}")
        return findings, [f"{message}; no findings kept"]

    def problem(message: str) -> None:
        if strict:  # nothing is dropped in strict mode: the whole answer is refused
            for suffix in ("; box dropped", "; boxes dropped", "; dropped"):
                message = message.removesuffix(suffix)
            raise ResponseFormatError(f"study {study}, {message}")
        warnings.append(message)

    for number, item in enumerate(output, start=1):
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            problem(f"finding {number}: expected [text, boxes], got {_short_type(item)}; dropped")
            continue
        text, boxes = item
        if not isinstance(text, str):
            problem(f"finding {number}: text must be a string, got {_short_type(text)}; dropped")
            continue
        if boxes is None:
            findings.append(Finding(text, []))
            continue
        if not isinstance(boxes, (list, tuple)):
            problem(f"finding {number}: boxes must be null or a list, got {_short_type(boxes)}")
            findings.append(Finding(text, []))
            continue
        if boxes and not any(isinstance(b, (list, tuple)) for b in boxes):
            problem(
                f"finding {number}: boxes must be a list of [x_min, y_min, x_max, y_max] "
                f"lists, got a flat list of {len(boxes)} values; boxes dropped"
            )
            findings.append(Finding(text, []))
            continue
        kept = []
        for box_number, values in enumerate(boxes, start=1):
            if repair_boxes:
                box, note = repair_box(values)
                if note:  # a warning, never an error: the finding is kept
                    what = "box repaired" if box else "box dropped"
                    warnings.append(f"finding {number}, box {box_number}: {note}; {what}")
                if box:
                    kept.append(box)
                continue
            reason = validate_box(values)
            if reason:
                problem(f"finding {number}, box {box_number}: {reason}; box dropped")
            else:
                kept.append(Box.from_list(values))
        findings.append(Finding(text, kept))
    return findings, warnings


def _short_type(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)}"
    return type(value).__name__


PLAIN_TEXT_WARNING = "the answer was plain text, not JSON: kept as one finding without a box"


def parse_response(
    body: Any,
    n_studies: int | None = None,
    strict: bool = True,
    *,
    repair_boxes: bool = False,
) -> list[Report]:
    """Reports from any CXRReportGen response shape (str, bytes or parsed JSON).

    In strict mode any invalid finding or box raises
    :class:`ResponseFormatError` naming the study, finding and problem; with
    ``strict=False`` the valid parts are kept and each report lists warnings,
    and a plain-text answer (not JSON) for one study becomes one finding
    without a box. ``repair_boxes=True`` (what the client uses) never refuses
    a report for a box: swapped corners are put in order, coordinates just
    outside 0..1 clamped, and a box that cannot be placed is dropped, each
    with a warning (:func:`~cxr_widgets.report.repair_box`).
    A number of reports different from ``n_studies`` is always an error.
    """
    if isinstance(body, (bytes, bytearray, memoryview)):
        body = bytes(body)
    if isinstance(body, (str, bytes)):
        if not strict and n_studies in (None, 1):
            text = _plain_text(body)
            if text is not None:
                return [Report(findings=[Finding(text, [])], warnings=[PLAIN_TEXT_WARNING])]
        body = _loads(body, "the response body")
        if isinstance(body, str):  # some servers JSON-encode the JSON once more
            body = _loads(body, "the response body")
    outputs = _split_outputs(body, n_studies)
    if n_studies is not None and len(outputs) != n_studies:
        raise ResponseFormatError(
            f"the endpoint answered {len(outputs)} report(s) for {n_studies} stud"
            f"{'y' if n_studies == 1 else 'ies'} sent"
        )
    reports = []
    for number, output in enumerate(outputs):
        findings, warnings = _parse_findings(output, number, strict, repair_boxes)
        reports.append(Report(findings=findings, warnings=warnings))
    return reports


def _plain_text(body: str | bytes) -> str | None:
    """The text of a body that is prose rather than JSON, or None."""
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError:
            return None
    text = " ".join(body.split())
    if not text or text[0] in '[{"' or not any(ch.isalpha() for ch in text):
        return None
    try:
        json.loads(body)
    except (ValueError, RecursionError):
        return text
    return None
