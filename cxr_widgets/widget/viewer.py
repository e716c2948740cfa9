"""The results viewer: the frontal image with SVG boxes, and the linked findings table.

An anywidget (``static/viewer.js``, ``static/viewer.css``). The image travels
as JPEG bytes in a binary buffer; box coordinates are computed here with
:meth:`Box.to_pixels` on the displayed image's size, so all geometry stays in
:mod:`cxr_widgets.report`. ``selected`` (the finding index, -1 for none) is
synced both ways: clicking a row or a box in the page sets it, and so does
:meth:`select`.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import anywidget
import traitlets

from ..local.demo_findings import demo_notice
from ..render import FRAME_CAPTIONS
from ..report import DEMO_NOTICE, Report, center_square

STATIC = Path(__file__).parent / "static"

#: Longest side of the image sent to the browser (the viewer shows it at ~600 px).
DISPLAY_MAX_SIDE = 1024
JPEG_QUALITY = 85
VIEWS: tuple[str, ...] = ("frontal", "lateral", "prior")


def display_jpeg(image: Any, max_side: int = DISPLAY_MAX_SIDE) -> tuple[bytes, int, int]:
    """A PIL image as display JPEG bytes, longest side at most ``max_side``; with its size."""
    from PIL import Image

    picture = image if image.mode in ("L", "RGB") else image.convert("RGB")
    if max(picture.size) > max_side:
        scale = max_side / max(picture.size)
        size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
        picture = picture.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return buffer.getvalue(), picture.width, picture.height


def box_shapes(report: Report, width: int, height: int, frame: str) -> list[dict[str, Any]]:
    """One entry per box: finding index, box index and pixel corners from Box.to_pixels."""
    shapes = []
    for index, finding in enumerate(report.findings):
        for number, box in enumerate(finding.boxes):
            x0, y0, x1, y1 = box.to_pixels(width, height, frame)  # type: ignore[arg-type]
            shapes.append({"finding": index, "box": number, "x0": x0, "y0": y0, "x1": x1, "y1": y1})
    return shapes


def finding_rows(report: Report) -> list[dict[str, Any]]:
    """The findings table: number, colour, text, number of boxes."""
    return [
        {
            "index": index,
            "number": index + 1,
            "text": finding.text,
            "color": report.color(index),
            "n_boxes": len(finding.boxes),
            "grounded": finding.grounded,
        }
        for index, finding in enumerate(report.findings)
    ]


class ReportViewer(anywidget.AnyWidget):
    """Frontal image, boxes and findings table; lateral and prior viewable."""

    _esm = STATIC / "viewer.js"
    _css = STATIC / "viewer.css"

    image = traitlets.Bytes(b"").tag(sync=True)
    width = traitlets.Int(0).tag(sync=True)
    height = traitlets.Int(0).tag(sync=True)
    view = traitlets.Unicode("frontal").tag(sync=True)
    views = traitlets.List(traitlets.Unicode()).tag(sync=True)
    boxes = traitlets.List(traitlets.Dict()).tag(sync=True)
    findings = traitlets.List(traitlets.Dict()).tag(sync=True)
    crop = traitlets.Dict().tag(sync=True)
    selected = traitlets.Int(-1).tag(sync=True)
    show_boxes = traitlets.Bool(True).tag(sync=True)
    show_crop = traitlets.Bool(False).tag(sync=True)
    frame = traitlets.Unicode("center_crop").tag(sync=True)
    frame_caption = traitlets.Unicode(FRAME_CAPTIONS["center_crop"]).tag(sync=True)
    has_report = traitlets.Bool(False).tag(sync=True)
    demo = traitlets.Bool(False).tag(sync=True)
    demo_notice = traitlets.Unicode(DEMO_NOTICE).tag(sync=True)
    caption = traitlets.Unicode("").tag(sync=True)
    report_text = traitlets.Unicode("").tag(sync=True)
    warnings = traitlets.List(traitlets.Unicode()).tag(sync=True)
    message = traitlets.Unicode("Load a study, or the sample study, to begin.").tag(sync=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.report: Report | None = None
        self._pictures: dict[str, Any] = {}  # view -> PIL image (prepared, not yet encoded)
        self._encoded: dict[str, tuple[bytes, int, int]] = {}
        self.observe(self._on_view, "view")
        self.observe(self._on_frame, "frame")
        self.observe(self._on_selected, "selected")

    # --- what is shown -------------------------------------------------------
    def set_images(self, frontal: Any = None, lateral: Any = None, prior: Any = None) -> None:
        """PIL images of the study (any may be None); the frontal is shown first."""
        pictures = {"frontal": frontal, "lateral": lateral, "prior": prior}
        self._pictures = {k: v for k, v in pictures.items() if v is not None}
        self._encoded = {}
        with self.hold_sync():
            self.views = [v for v in VIEWS if v in self._pictures]
            if self.view != "frontal":
                self.view = "frontal"  # _on_view sends the frontal image
            else:
                self._send_view()

    def set_report(self, report: Report | None, caption: str = "") -> None:
        """Show ``report``'s findings and boxes (None clears them)."""
        self.report = report
        with self.hold_sync():
            self.selected = -1
            self.caption = caption
            if report is None:
                self.findings = []
                self.boxes = []
                self.has_report = False
                self.demo = False
                self.report_text = ""
                self.warnings = []
            else:
                self.findings = finding_rows(report)
                self.has_report = True
                self.demo = report.demo
                self.demo_notice = demo_notice(report)
                self.report_text = report.text
                self.warnings = [str(w) for w in report.warnings]
                self._send_boxes()

    def select(self, index: int | None) -> None:
        """Highlight finding ``index`` (zero-based); None clears the selection."""
        if index is None or index == -1:
            self.selected = -1
            return
        count = len(self.report.findings) if self.report else 0
        if not 0 <= index < count:
            raise IndexError(f"finding {index} does not exist: the report has {count} findings")
        self.selected = index

    # --- internals -------------------------------------------------------------
    def _send_view(self) -> None:
        view = self.view if self.view in self._pictures else "frontal"
        picture = self._pictures.get(view)
        if picture is None:
            self.image, self.width, self.height = b"", 0, 0
            self.crop = {}
            self.boxes = []
            return
        if view not in self._encoded:
            self._encoded[view] = display_jpeg(picture)
        data, width, height = self._encoded[view]
        self.image, self.width, self.height = data, width, height
        ox, oy, side = center_square(width, height)
        self.crop = {"x": ox, "y": oy, "size": side}
        self._send_boxes()

    def _send_boxes(self) -> None:
        if self.report is None or self.view != "frontal" or not self.width:
            self.boxes = []
            return
        self.boxes = box_shapes(self.report, self.width, self.height, self.frame)

    def _on_view(self, change: dict[str, Any]) -> None:
        if change["new"] not in VIEWS:
            self.view = "frontal"
            return
        with self.hold_sync():
            self._send_view()

    def _on_frame(self, change: dict[str, Any]) -> None:
        if change["new"] not in FRAME_CAPTIONS:
            self.frame = "center_crop"
            return
        with self.hold_sync():
            self.frame_caption = FRAME_CAPTIONS[change["new"]]
            self._send_boxes()

    def _on_selected(self, change: dict[str, Any]) -> None:
        count = len(self.report.findings) if self.report else 0
        if change["new"] != -1 and not 0 <= change["new"] < count:
            self.selected = -1
