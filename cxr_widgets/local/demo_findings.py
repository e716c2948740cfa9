"""Canned demo findings and the scoring logic shared by the local endpoint and DemoBackend.

The findings are fixed examples, never a reading of the image: the model
documentation's example answer and two variants. Which one a study gets is
chosen from a hash of its content, so the same study always gets the same
answer and different studies get different (but plausible) ones. Boxes lie on
the ``(k + 0.5) / 100`` grid the model emits.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from ..contract import ResponseShape, format_response, validate_request
from ..report import Box, Finding
from ..study import COLUMNS, EMPTY_COMPARISON, IMAGE_COLUMNS

_Wire = list[tuple[str, list[list[float]] | None]]

#: The model documentation's response example ("Use CXRReportGen REST API").
DOCUMENTATION_EXAMPLE: _Wire = [
    ("The heart size is normal.", None),
    ("Lungs demonstrate blunting of both costophrenic angles.", [[0.005, 0.555, 0.965, 0.865]]),
    (
        "There is an area of increased radiodensity overlying the left lower lung.",
        [[0.555, 0.405, 0.885, 0.745]],
    ),
    (
        "Healed fractures of the left fourth, fifth, sixth, seventh, and eighth "
        "posterior ribs are noted.",
        [[0.585, 0.135, 0.925, 0.725]],
    ),
]

#: Two more canned answers, so a batch of demo reports is not all alike.
VARIANTS: tuple[_Wire, ...] = (
    DOCUMENTATION_EXAMPLE,
    [
        ("The cardiomediastinal silhouette is within normal limits.", None),
        ("There is a small right pleural effusion.", [[0.065, 0.605, 0.455, 0.885]]),
        (
            "Patchy opacity in the right lower lung may represent atelectasis.",
            [[0.115, 0.455, 0.445, 0.775]],
        ),
        ("No pneumothorax is seen.", None),
    ],
    [
        ("The heart is mildly enlarged.", [[0.355, 0.455, 0.815, 0.815]]),
        (
            "There is mild pulmonary vascular congestion.",
            [[0.205, 0.255, 0.485, 0.695], [0.515, 0.255, 0.795, 0.695]],
        ),
        ("No focal consolidation, pleural effusion or pneumothorax.", None),
    ],
)


def study_digest(row: Mapping[str, bytes | str]) -> str:
    """sha256 of one study's content (decoded image bytes and text), column-order free."""
    digest = hashlib.sha256()
    for column in COLUMNS:
        if column in row:
            value = row[column]
            data = value if isinstance(value, bytes) else value.encode("utf-8")
            digest.update(f"{column}:{len(data)}:".encode())
            digest.update(data)
    return digest.hexdigest()


def wire_digest(columns: Sequence[str], values: Sequence[str]) -> str:
    """:func:`study_digest` of a request row as sent (images still base64).

    Clients use it to match their studies with the endpoint's request log:
    ``wire_digest(encoded.columns, encoded.row)``.
    """
    row: dict[str, bytes | str] = {}
    for column, value in zip(columns, values, strict=True):
        row[column] = base64.b64decode(value) if column in IMAGE_COLUMNS else value
    return study_digest(row)


def answer_digest(findings: Sequence[Finding]) -> str:
    """sha256 of one study's answer (its findings as sent), as in the request log's ``answers``.

    A client checks a stored report against the endpoint's log with
    ``answer_digest(report.findings)``.
    """
    wire = json.dumps([f.to_wire() for f in findings], separators=(",", ":"))
    return hashlib.sha256(wire.encode("utf-8")).hexdigest()


def demo_findings(row: Mapping[str, bytes | str]) -> list[Finding]:
    """The canned findings for one validated study row (chosen by its content hash)."""
    # "None" is how a study without a comparison is sent: it chooses as no comparison does.
    chosen = {k: v for k, v in row.items() if not (k == "comparison" and v == EMPTY_COMPARISON)}
    variant = VARIANTS[int(study_digest(chosen)[:8], 16) % len(VARIANTS)]
    return [Finding(text, [Box.from_list(b) for b in boxes or []]) for text, boxes in variant]


def answer_rows(rows: Sequence[Mapping[str, bytes | str]], shape: ResponseShape = "records") -> Any:
    """The JSON-ready response body for validated rows.

    ``records`` is what the deployed service sends; ``documented`` is the
    documentation's ``{"output": [...]}`` (a list of those per study when
    there are several).
    """
    outputs = [demo_findings(row) for row in rows]
    if shape == "documented" and len(outputs) != 1:
        return {"output": [format_response([o], "documented")["output"] for o in outputs]}
    return format_response(outputs, shape)


def score_payload(payload: Any, shape: ResponseShape = "records") -> Any:
    """Validate a request payload as the endpoint does and answer it with demo findings.

    Raises :class:`~cxr_widgets.errors.RequestError` (the endpoint's 400).
    """
    return answer_rows(validate_request(payload), shape)
