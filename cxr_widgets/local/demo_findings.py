"""The offline answers shared by the local endpoint and DemoBackend.

Two kinds of answer, chosen per study:

- **Microsoft's sample study** (``cxr_widgets/data/microsoft_sample``: the
  frontal and lateral JPEGs of the official deploy notebook, no prior, empty
  indication and technique, comparison empty or ``"None"``) gets the answer
  CXRReportGen really gave for it, recorded in that notebook
  (:data:`RECORDED_LABEL`). The study is recognised by a digest of its decoded
  pixels, so it matches whether the JPEGs are sent as they are or as
  :func:`~cxr_widgets.prepare_image` prepares them with its default options
  (or at full resolution). Any other image, option or text gets canned findings.
- **Every other study** gets canned findings (:data:`DEMO_LABEL`): fixed
  examples, never a reading of the image. Which of the three canned answers
  a study gets depends only on a hash of its frontal image's bytes, so the
  same image always gets the same answer and the texts (indication,
  technique, comparison, prior report) never change it. A real model reads
  them; the demo does not.

Boxes lie on the ``(k + 0.5) / 100`` grid the model emits.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from ..contract import ResponseShape, format_response, validate_request
from ..report import DEMO_NOTICE, Box, Finding, Report
from ..samples import microsoft_sample_paths, recorded_answer
from ..study import COLUMNS, EMPTY_COMPARISON, IMAGE_COLUMNS

#: How a recorded answer is marked wherever it is shown.
RECORDED_LABEL = "recorded CXRReportGen answer (Microsoft's sample)"
#: How canned findings are marked wherever they are shown.
DEMO_LABEL = DEMO_NOTICE
#: How the offline answers are chosen, in one sentence for a user (tooltips, banners).
DEMO_CHOICE = (
    "Offline there is no model: Microsoft's sample study (as shipped, with no indication or "
    "technique) gets the answer CXRReportGen gave for it in Microsoft's notebook; any other "
    "study gets one of three canned answers, chosen from a hash of its frontal image alone, "
    "so the texts never change it."
)
#: The short stamps drawn on pictures: canned findings, recorded answer.
DEMO_STAMP, RECORDED_STAMP = "DEMO", "RECORDED"

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


@lru_cache(maxsize=1)
def _sample_sizes() -> tuple[tuple[int, int], ...]:
    from PIL import Image

    sizes = []
    for path in microsoft_sample_paths():
        with Image.open(path) as image:
            sizes.append(image.size)
    return tuple(sizes)


@lru_cache(maxsize=1)
def _sample_digests() -> tuple[frozenset[str], frozenset[str]]:
    """Digests of the sample's frontal and lateral images as they may arrive.

    As the JPEG files, as prepared with the default options and at full
    resolution: computed here with this installation's decoder and
    :func:`~cxr_widgets.prepare_image`, so they match what it sends.
    """
    from ..images import prepare_image

    found = []
    for path in microsoft_sample_paths():
        data = path.read_bytes()
        forms = (data, prepare_image(data).png, prepare_image(data, full_resolution=True).png)
        found.append(frozenset(d for d in map(pixel_digest, forms) if d))
    return found[0], found[1]


def pixel_digest(data: bytes) -> str | None:
    """sha256 of an image's decoded 8-bit grayscale pixels and size, or None.

    Only images with the aspect ratio of one of the sample's images are
    decoded (a header read decides), so other studies cost nothing.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if not any(abs(width * h - height * w) <= max(w, h) for w, h in _sample_sizes()):
                return None
            gray = image.convert("L")
            return hashlib.sha256(f"{width}x{height}:".encode() + gray.tobytes()).hexdigest()
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def is_microsoft_sample(row: Mapping[str, bytes | str]) -> bool:
    """True for Microsoft's sample study exactly as recorded (see the module docstring)."""
    if "prior_image" in row or "lateral_image" not in row:
        return False
    texts = {c: row.get(c, "") for c in ("indication", "technique", "prior_report")}
    if any(str(v).strip() for v in texts.values()):
        return False
    if str(row.get("comparison", "")).strip() not in ("", EMPTY_COMPARISON):
        return False
    frontal, lateral = _sample_digests()
    return (
        pixel_digest(bytes(row["frontal_image"])) in frontal  # type: ignore[arg-type]
        and pixel_digest(bytes(row["lateral_image"])) in lateral  # type: ignore[arg-type]
    )


def canned_findings(row: Mapping[str, bytes | str]) -> list[Finding]:
    """One of :data:`VARIANTS`, chosen by a hash of the frontal image's bytes only."""
    frontal = row["frontal_image"]
    data = frontal if isinstance(frontal, bytes) else frontal.encode("utf-8")
    variant = VARIANTS[int(hashlib.sha256(data).hexdigest()[:8], 16) % len(VARIANTS)]
    return [Finding(text, [Box.from_list(b) for b in boxes or []]) for text, boxes in variant]


def demo_findings(row: Mapping[str, bytes | str]) -> list[Finding]:
    """The offline answer for one validated study row: recorded for the sample, else canned."""
    if is_microsoft_sample(row):
        return [Finding(f.text, list(f.boxes)) for f in recorded_answer().findings]
    return canned_findings(row)


def is_recorded(findings: Sequence[Finding]) -> bool:
    """True when ``findings`` are the recorded answer to Microsoft's sample."""
    return [f.to_wire() for f in findings] == [f.to_wire() for f in recorded_answer().findings]


def demo_notice(report: Report) -> str:
    """The label a picture or table of ``report`` carries ("" for a live model's answer).

    Demo reports (``report.demo``) get :data:`RECORDED_LABEL` when they hold
    the recorded answer to Microsoft's sample, else :data:`DEMO_LABEL`.
    """
    if not report.demo:
        return ""
    return RECORDED_LABEL if is_recorded(report.findings) else DEMO_LABEL


def recorded_provenance(reports: Sequence[Report]) -> dict[str, str]:
    """Provenance fields for a request whose answers are all the recorded one, else ``{}``.

    ``model`` is the registry name and ``model_version`` what is known of the
    version that answered (Microsoft does not state it).
    """
    if reports and all(is_recorded(r.findings) for r in reports):
        return {"model": "CxrReportGen", "model_version": recorded_answer().model}
    return {}


def demo_stamp(report: Report) -> str:
    """The short stamp for pictures of ``report``: DEMO, RECORDED, or "" (a live answer)."""
    if not report.demo:
        return ""
    return RECORDED_STAMP if is_recorded(report.findings) else DEMO_STAMP


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
