"""Report, Finding and Box: what the model found, and where, and where it came from.

Box geometry lives here and only here (see ``docs/geometry.md``). CXRReportGen
boxes are normalised to the central square of the frontal image (the MAIRA-2
processor's center crop, which the official notebooks undo before drawing);
the model documentation's table instead says to scale by the full width and
height. Both frames are available (:data:`FRAMES`); the center crop is the default.
"""

from __future__ import annotations

import csv
import dataclasses
import html
import io
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any, Literal

from .errors import ResponseFormatError
from .palette import UNGROUNDED_COLOR, finding_color

Frame = Literal["center_crop", "full"]
#: The box frames, in the order the viewer offers them (the front end receives this list).
FRAMES: tuple[str, ...] = ("center_crop", "full")
DEFAULT_FRAME: Frame = "center_crop"
#: How each frame is named on pictures and in the viewer.
FRAME_CAPTIONS: dict[str, str] = {
    "center_crop": "boxes: center crop",
    "full": "boxes: full image",
}
#: Shown with every picture drawn in the ``full`` frame.
FULL_FRAME_WARNING = (
    "boxes placed by the full-image formula of the model documentation: on a non-square "
    "image they can be off by hundreds of pixels; the official notebooks use the center "
    "crop (see docs/geometry.md)"
)
#: Two images whose width/height ratios differ by more than this are different shapes
#: (the boxes of one would be misplaced on the other).
ASPECT_TOLERANCE = 0.02
#: Where the box geometry is explained, with its sources (tooltips link here).
GEOMETRY_DOC_URL = "https://github.com/cxr-widgets/cxr-widgets/blob/main/docs/geometry.md"


def frame_options() -> list[dict[str, str]]:
    """The frames for a front end (value, caption, warning), from the one list here."""
    return [
        {
            "value": frame,
            "caption": FRAME_CAPTIONS[frame],
            "warning": FULL_FRAME_WARNING if frame == "full" else "",
            "help": GEOMETRY_DOC_URL,
        }
        for frame in FRAMES
    ]


def same_shape(a: tuple[int, int] | None, b: tuple[int, int] | None) -> bool:
    """True when two ``(width, height)`` sizes have the same aspect ratio (or one is unknown)."""
    if not a or not b or min(*a, *b) <= 0:
        return True
    return abs((a[0] / a[1]) / (b[0] / b[1]) - 1) <= ASPECT_TOLERANCE


RECORD_FIELDS: tuple[str, ...] = (
    "study_id",
    "finding",
    "text",
    "grounded",
    "box",
    "x_min",
    "y_min",
    "x_max",
    "y_max",
    "demo",
    "backend",
    "endpoint",
    "deployment",
    "model",
    "model_version",
    "package_version",
    "request_digest",
    "created",
)
#: Leading characters a spreadsheet reads as a formula (OWASP "CSV Injection").
CSV_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def center_square(width: int, height: int) -> tuple[int, int, int]:
    """``(ox, oy, side)`` of the central square the model grounds boxes in."""
    side = min(width, height)
    return (width - side) // 2, (height - side) // 2, side


@dataclass(frozen=True)
class Box:
    """A bounding box with coordinates normalised to 0..1."""

    x_min: float
    y_min: float
    x_max: float
    y_max: float

    @classmethod
    def from_list(cls, values: Iterable[float]) -> Box:
        x_min, y_min, x_max, y_max = (float(v) for v in values)
        return cls(x_min, y_min, x_max, y_max)

    def as_list(self) -> list[float]:
        return [self.x_min, self.y_min, self.x_max, self.y_max]

    @property
    def width(self) -> float:
        return self.x_max - self.x_min

    @property
    def height(self) -> float:
        return self.y_max - self.y_min

    def to_pixels(
        self, width: int, height: int, frame: Frame = "center_crop"
    ) -> tuple[float, float, float, float]:
        """Pixel coordinates ``(x0, y0, x1, y1)`` on an image of ``width`` x ``height``.

        ``frame="center_crop"`` (default) maps the box into the central square,
        as the official CXRReportGen notebooks do; ``frame="full"`` scales by
        the full width and height, as the model documentation's table says.
        """
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive, got {width} x {height}")
        if frame == "center_crop":
            ox, oy, side = center_square(width, height)
            return (
                ox + self.x_min * side,
                oy + self.y_min * side,
                ox + self.x_max * side,
                oy + self.y_max * side,
            )
        if frame == "full":
            return (
                self.x_min * width,
                self.y_min * height,
                self.x_max * width,
                self.y_max * height,
            )
        raise ValueError(f"frame must be one of {FRAMES}, got {frame!r}")

    @classmethod
    def from_pixels(
        cls,
        x0: float,
        y0: float,
        x1: float,
        y1: float,
        width: int,
        height: int,
        frame: Frame = "center_crop",
    ) -> Box:
        """The box of the pixel rectangle ``(x0, y0)``-``(x1, y1)`` on a ``width`` x
        ``height`` image: the inverse of :meth:`to_pixels`.

        Corners may come in any order; what lies outside the frame (the central
        square for ``"center_crop"``, the image for ``"full"``) is clamped to its
        edge, and coordinates are rounded to 5 decimals (a hundred-thousandth of the
        frame, finer than any image's pixels).
        """
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive, got {width} x {height}")
        if frame == "center_crop":
            dx, dy, side = center_square(width, height)
            sx = sy = side
        elif frame == "full":
            dx, dy, sx, sy = 0, 0, width, height
        else:
            raise ValueError(f"frame must be one of {FRAMES}, got {frame!r}")
        xs = sorted(min(1.0, max(0.0, (v - dx) / sx)) for v in (x0, x1))
        ys = sorted(min(1.0, max(0.0, (v - dy) / sy)) for v in (y0, y1))
        return cls(round(xs[0], 5), round(ys[0], 5), round(xs[1], 5), round(ys[1], 5))


def validate_box(values: Any) -> str | None:
    """Why ``values`` is not a valid box, or None when it is."""
    if not isinstance(values, (list, tuple)):
        return f"a box must be a list of 4 numbers, got {type(values).__name__}"
    if len(values) != 4:
        return f"a box must have 4 numbers, got {len(values)}"
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"box coordinates must be numbers, got {type(value).__name__}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"box coordinate {value!r} is not finite"
        if not 0.0 <= value <= 1.0:  # works for huge ints, which float() cannot hold
            shown = repr(value) if len(repr(value)) <= 24 else repr(value)[:20] + "..."
            return f"box coordinate {shown} is outside 0..1"
    x_min, y_min, x_max, y_max = values
    if x_min > x_max or y_min > y_max:
        return "box has min > max (expected x_min, y_min, x_max, y_max)"
    return None


def repair_box(values: Any) -> tuple[Box | None, str | None]:
    """``(box, note)`` for a box the model got slightly wrong.

    Valid: ``(Box, None)``. Swapped corners are put in order and finite
    coordinates outside 0..1 are clamped (``(Box, what was repaired)``);
    anything else cannot be placed: ``(None, why)``.
    """
    reason = validate_box(values)
    if reason is None:
        return Box.from_list(values), None
    if not isinstance(values, (list, tuple)) or len(values) != 4:
        return None, reason
    numbers = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None, reason
        try:
            number = float(value)
        except OverflowError:
            return None, reason
        if not math.isfinite(number):
            return None, reason
        numbers.append(number)
    x0, y0, x1, y1 = numbers
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    clamped = [min(1.0, max(0.0, v)) for v in (x0, y0, x1, y1)]
    if clamped[0] == clamped[2] or clamped[1] == clamped[3]:
        return None, f"{reason}; nothing of it is inside the image"
    return Box(*clamped), reason


@dataclass(frozen=True)
class Finding:
    """One sentence of the report and the boxes that ground it (maybe none).

    Frozen: ``boxes`` is kept as a tuple (any iterable of boxes is accepted);
    use ``dataclasses.replace(finding, boxes=...)`` for a changed copy.
    """

    text: str
    boxes: tuple[Box, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "boxes", tuple(self.boxes))

    @property
    def grounded(self) -> bool:
        return bool(self.boxes)

    def to_wire(self) -> list[Any]:
        """The finding as the endpoint sends it: ``[text, null | [[...], ...]]``."""
        return [self.text, [b.as_list() for b in self.boxes] if self.boxes else None]


def utc_now(timespec: str = "seconds") -> str:
    """Now, in UTC, as ISO 8601 (to the second: the time stamp of reports and provenance;
    stores that order rows by it ask for ``"milliseconds"``)."""
    return datetime.now(timezone.utc).isoformat(timespec=timespec)


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    return repr(value)


@dataclass(frozen=True)
class Provenance:
    """Where a report came from, so a researcher can tell runs apart.

    Model versions in the registry change, and the same images give other
    findings with them: record them with every result. ``endpoint`` is the
    endpoint's secret-free identity (URI and deployment, never a key);
    ``model``/``model_version`` are filled when known (e.g. from the workspace);
    ``request_digest`` is the sha256 of the request body sent and
    ``study_digest`` of this study's row in it.
    """

    backend: str
    endpoint: str
    deployment: str | None = None
    model: str | None = None
    model_version: str | None = None
    image_options: Mapping[str, Any] = field(default_factory=dict)
    package_version: str = ""
    request_digest: str = ""
    study_digest: str = ""
    created: str = field(default_factory=utc_now)

    def __post_init__(self) -> None:
        # Frozen all the way down: a read-only copy of the options.
        object.__setattr__(
            self, "image_options", MappingProxyType(_json_safe(dict(self.image_options)))
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "endpoint": self.endpoint,
            "deployment": self.deployment,
            "model": self.model,
            "model_version": self.model_version,
            "image_options": dict(self.image_options),
            "package_version": self.package_version,
            "request_digest": self.request_digest,
            "study_digest": self.study_digest,
            "created": self.created,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Provenance:
        def text(name: str) -> str | None:
            value = data.get(name)
            return None if value is None else str(value)

        return cls(
            backend=str(data.get("backend") or ""),
            endpoint=str(data.get("endpoint") or ""),
            deployment=text("deployment"),
            model=text("model"),
            model_version=text("model_version"),
            image_options=dict(data.get("image_options") or {}),
            package_version=str(data.get("package_version") or ""),
            request_digest=str(data.get("request_digest") or ""),
            study_digest=str(data.get("study_digest") or ""),
            created=str(data.get("created") or ""),
        )


@dataclass(frozen=True, eq=False)
class Report:
    """The findings generated for one study, with where they came from.

    ``image_size`` is the frontal image's ``(width, height)`` as given, so the
    boxes can be placed. ``demo`` marks canned findings from the demo backend
    or local endpoint. ``warnings`` says what the reader should know (boxes
    repaired or dropped, a prior report without a prior image, burned-in
    annotations). ``provenance`` records backend, endpoint, model, image
    options, package version and request digest. A report is built once,
    complete, and is frozen (``findings`` and ``warnings`` are tuples; any
    iterable is accepted): use :meth:`replace` for a changed copy. It holds no
    image: the image a report was made for stays with its run (the widget's
    ``RunRecord``, ``BatchResult.images``); draw with ``render_findings(image, report)``.
    """

    findings: tuple[Finding, ...] = ()
    image_size: tuple[int, int] | None = None
    warnings: tuple[str, ...] = ()
    demo: bool = False
    source: str = ""
    study_id: str = ""
    request_id: str | None = None
    created: str = field(default_factory=utc_now)
    provenance: Provenance | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "findings", tuple(self.findings))
        object.__setattr__(self, "warnings", tuple(self.warnings))
        if self.image_size is not None:
            object.__setattr__(self, "image_size", tuple(self.image_size))

    def replace(self, **changes: Any) -> Report:
        """A copy with some fields changed (the report itself stays as built)."""
        return dataclasses.replace(self, **changes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Report):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    @property
    def text(self) -> str:
        """The findings as one paragraph of report text."""
        return " ".join(f.text.strip() for f in self.findings if f.text.strip())

    @property
    def n_boxes(self) -> int:
        return sum(len(f.boxes) for f in self.findings)

    def color(self, index: int) -> str:
        """Colour of finding ``index`` (zero-based); gray when it has no box."""
        return finding_color(index) if self.findings[index].grounded else UNGROUNDED_COLOR

    # --- serialisation -------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "findings": [f.to_wire() for f in self.findings],
            "image_size": list(self.image_size) if self.image_size else None,
            "warnings": list(self.warnings),
            "demo": self.demo,
            "source": self.source,
            "study_id": self.study_id,
            "request_id": self.request_id,
            "created": self.created,
            "provenance": self.provenance.to_dict() if self.provenance else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        try:
            findings = []
            for number, (text, boxes) in enumerate(data["findings"], start=1):
                for values in boxes or []:
                    reason = validate_box(values)
                    if reason:
                        raise ValueError(f"finding {number}: {reason}")
                findings.append(Finding(str(text), [Box.from_list(b) for b in (boxes or [])]))
            size = data.get("image_size")
            provenance = data.get("provenance")
            return cls(
                findings=findings,
                image_size=(int(size[0]), int(size[1])) if size else None,
                warnings=list(data.get("warnings") or []),
                demo=bool(data.get("demo", False)),
                source=str(data.get("source") or ""),
                study_id=str(data.get("study_id") or ""),
                request_id=data.get("request_id"),
                created=str(data.get("created") or utc_now()),
                provenance=Provenance.from_dict(provenance) if provenance else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ResponseFormatError(f"not a saved report: {exc}") from None

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> Report:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ResponseFormatError(f"not a saved report (invalid JSON: {exc})") from None
        return cls.from_dict(data)

    def to_records(self) -> list[dict[str, Any]]:
        """One row per finding and box (one row with empty coordinates when ungrounded)."""
        rows: list[dict[str, Any]] = []
        origin = self._record_origin()
        for number, finding in enumerate(self.findings, start=1):
            boxes = finding.boxes or [None]
            for box_number, box in enumerate(boxes, start=1):
                rows.append(
                    {
                        "study_id": self.study_id,
                        "finding": number,
                        "text": finding.text,
                        "grounded": finding.grounded,
                        "box": box_number if box else None,
                        "x_min": box.x_min if box else None,
                        "y_min": box.y_min if box else None,
                        "x_max": box.x_max if box else None,
                        "y_max": box.y_max if box else None,
                        **origin,
                    }
                )
        return rows

    def _record_origin(self) -> dict[str, Any]:
        """The per-report columns of a record: demo marker and provenance."""
        p = self.provenance
        return {
            "demo": self.demo,
            "backend": p.backend if p else None,
            "endpoint": p.endpoint if p else (self.source or None),
            "deployment": p.deployment if p else None,
            "model": p.model if p else None,
            "model_version": p.model_version if p else None,
            "package_version": p.package_version if p else None,
            "request_digest": p.request_digest if p else None,
            "created": self.created,
        }

    def to_dataframe(self) -> Any:
        """The records as a pandas DataFrame (needs pandas)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("to_dataframe() needs pandas: pip install pandas") from None
        return pd.DataFrame(self.to_records(), columns=list(RECORD_FIELDS))

    def to_csv(self, path: str | os.PathLike[str] | None = None) -> str:
        """The records as CSV text; also written to ``path`` when given."""
        return records_to_csv(self.to_records(), path)

    # --- display -------------------------------------------------------
    def _repr_html_(self) -> str:
        return report_html(self)

    def __repr__(self) -> str:
        flag = " demo" if self.demo else ""
        return (
            f"<Report{flag} {self.study_id or ''} {len(self.findings)} findings, "
            f"{self.n_boxes} boxes, {len(self.warnings)} warnings>"
        ).replace("  ", " ")


def csv_safe(value: Any) -> Any:
    """A CSV cell that a spreadsheet shows as text, never runs as a formula.

    Text starting with ``= + - @``, tab or carriage return gets a leading
    apostrophe, as OWASP's "CSV Injection" page recommends; None becomes "".
    Every CSV the package writes passes its cells through here.
    """
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(CSV_FORMULA_PREFIXES):
        return "'" + value
    return value


def records_to_csv(
    records: list[dict[str, Any]],
    path: str | os.PathLike[str] | None = None,
    fieldnames: Iterable[str] = RECORD_FIELDS,
) -> str:
    """Records (from :meth:`Report.to_records`) as CSV text, cells made safe by :func:`csv_safe`."""
    names = list(fieldnames)
    buffer = io.StringIO()
    # CRLF rows (RFC 4180): the csv module quotes a cell holding any character of the
    # line terminator, so a bare CR in a text cannot split a row.
    writer = csv.DictWriter(buffer, fieldnames=names, lineterminator="\r\n")
    writer.writeheader()
    for row in records:
        writer.writerow({k: csv_safe(row.get(k)) for k in names})
    text = buffer.getvalue()
    if path is not None:
        with open(path, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
    return text


DEMO_NOTICE = "DEMO: canned example findings, not a reading of this image."
RESEARCH_NOTICE = "For research only, not for clinical use."


def describe_provenance(provenance: Provenance) -> str:
    """One line for people: where a report came from (no secret is ever in a provenance)."""
    model = provenance.model or "model unknown"
    if provenance.model_version:
        model += f" v{provenance.model_version}"
    parts = [
        provenance.backend,
        provenance.endpoint,
        f"deployment {provenance.deployment}" if provenance.deployment else "",
        model,
        f"cxr-widgets {provenance.package_version}" if provenance.package_version else "",
        f"request {provenance.request_digest[:12]}" if provenance.request_digest else "",
        provenance.created,
    ]
    return " · ".join(p for p in parts if p)


def report_html(report: Report) -> str:
    """The report as an HTML table with colour swatches (no image: a report holds none;
    :func:`cxr_widgets.exports.static_view` adds the annotated picture)."""
    rows = []
    for index, finding in enumerate(report.findings):
        color = report.color(index)
        where = (
            f"{len(finding.boxes)} box{'es' if len(finding.boxes) != 1 else ''}"
            if finding.grounded
            else "<i>not grounded</i>"
        )
        rows.append(
            "<tr>"
            f"<td style='text-align:right'>{index + 1}</td>"
            f"<td><span style='display:inline-block;width:0.9em;height:0.9em;"
            f"background:{color};border:1px solid #555;border-radius:2px'></span></td>"
            f"<td style='text-align:left'>{html.escape(finding.text)}</td>"
            f"<td style='text-align:left'>{where}</td>"
            "</tr>"
        )
    banner = ""
    if report.demo:
        from .local.demo_findings import demo_notice

        banner = (
            "<div style='background:#fff3cd;color:#664d03;padding:2px 6px;"
            f"border:1px solid #ffe69c;display:inline-block'>{html.escape(demo_notice(report))}</div>"
        )
    warnings = "".join(
        # Theme colours (JupyterLab's variables): readable in light and dark notebooks.
        "<div style='color:var(--jp-ui-font-color1,#222);border-left:3px solid #d97706;"
        f"padding-left:6px'>warning: {html.escape(w)}</div>"
        for w in report.warnings
    )
    source = html.escape(report.source or "unknown endpoint")
    origin = ""
    if report.provenance is not None:
        origin = (
            "<div style='font-size:80%;color:var(--jp-ui-font-color2,#555)'>"
            f"{html.escape(describe_provenance(report.provenance))}</div>"
        )
    return (
        "<div class='cxr-report'>"
        f"{banner}"
        f"<div style='font-size:90%;color:var(--jp-ui-font-color2,#555)'>{source} · {len(report.findings)} findings · "
        f"{report.n_boxes} boxes · {RESEARCH_NOTICE}</div>"
        "<table><thead><tr><th>#</th><th></th><th style='text-align:left'>finding</th>"
        f"<th style='text-align:left'>where</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        f"{warnings}{origin}<div style='clear:both'></div></div>"
    )
