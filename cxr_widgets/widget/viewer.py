"""The image viewer: window/level, zoom, pan, probe, distance and side-by-side views,
with the findings' boxes and the linked findings table.

An anywidget (``static/viewer.js``, ``static/viewer.css``) used by
:class:`~cxr_widgets.widget.panel.ReportGenWidget` and the study browser.
Everything interactive runs in the browser with no kernel round trip; what
travels is, per image, one 16-bit overview (:mod:`.viewer_pixels`) and, once
the view settles zoomed in, the visible region at the needed resolution,
asked for by the browser in a custom message.

Box coordinates are computed here with :meth:`Box.to_pixels` on the original
image size, so all geometry stays in :mod:`cxr_widgets.report` and boxes land
on the same image pixels at every zoom. Colours come from the report (which
takes them from :mod:`cxr_widgets.palette`).

Python drives the same state: ``window`` ``(level, width)`` in the image's own
values, ``preset``, ``invert``, ``camera``, :meth:`zoom_to_finding`,
:meth:`reset_view`. The browser writes its changes back once a drag ends.

With ``editable`` on, the boxes of the selected finding can be moved, resized,
deleted and drawn on the frontal image. The browser draws each edit at once and
sends one ``box_edit`` message when it is finished; the viewer turns it into a
:class:`BoxEdit` (the box in the model's frame, :meth:`Box.from_pixels`) for the
callbacks given to :meth:`ReportViewer.on_box_edit`, whose owner saves it and
shows the updated report with ``set_report(report, caption, keep_view=True)``.
"""

from __future__ import annotations

import io
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anywidget
import traitlets
from ipywidgets import CallbackDispatcher

from ..errors import CxrWidgetsError
from ..images import load_pixels
from ..local.demo_findings import demo_notice
from ..render import FRAME_CAPTIONS
from ..report import (
    DEFAULT_FRAME,
    DEMO_NOTICE,
    Box,
    Report,
    center_square,
    frame_options,
)
from . import viewer_pixels as vp

STATIC = Path(__file__).parent / "static"
log = logging.getLogger(__name__)

#: Longest side of the JPEG thumbnails the study form shows.
DISPLAY_MAX_SIDE = 1024
JPEG_QUALITY = 85
VIEWS: tuple[str, ...] = ("frontal", "lateral", "prior")
ARRANGEMENTS: tuple[str, ...] = ("single", "views", "runs")
#: How much room zoom_to_finding leaves around the finding's boxes.
FINDING_MARGIN = 0.35
#: The camera that shows the whole image (zoom is relative to "fit").
FIT = {"zoom": 1.0, "x": None, "y": None}


@dataclass(frozen=True)
class BoxEdit:
    """One finished box edit from the viewer.

    ``finding``: the finding's index; ``box``: the index of the box in
    ``finding.boxes``, or None for a new box (appended); ``new``: the box in the
    model's 0..1 frame, or None when the box was deleted.
    """

    finding: int
    box: int | None
    new: Box | None

    def applied_to(self, boxes: Sequence[Box]) -> list[Box]:
        """The finding's ``boxes`` after this edit (IndexError for a box it does not have)."""
        edited = list(boxes)
        if self.box is None:
            if self.new is not None:
                edited.append(self.new)
        elif self.new is None:
            del edited[self.box]
        else:
            edited[self.box] = self.new
        return edited


def apply_box_edit(report: Report, edit: BoxEdit) -> Report:
    """``report`` with ``edit`` applied (a new report; the given one is not changed)."""
    findings = list(report.findings)
    finding = findings[edit.finding]
    findings[edit.finding] = replace(finding, boxes=edit.applied_to(finding.boxes))
    return report.replace(findings=findings)


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


def _corners(rect: Any) -> list[float] | None:
    """Four finite floats from a message's ``rect``, or None."""
    if not isinstance(rect, list) or len(rect) != 4:
        return None
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in rect):
        return None
    try:
        corners = [float(v) for v in rect]
    except OverflowError:  # an int beyond any float
        return None
    return corners if all(math.isfinite(v) for v in corners) else None


def _same(a: Any, b: Any) -> bool:
    """The same image source: the same object, or the same path (a study rebuilt with
    ``Study.replace`` names its files again)."""
    if a is b:
        return True
    paths = (str, os.PathLike)
    return isinstance(a, paths) and isinstance(b, paths) and os.fspath(a) == os.fspath(b)


class ReportViewer(anywidget.AnyWidget):
    """Frontal, lateral and prior images with window/level, zoom, boxes and findings."""

    _esm = STATIC / "viewer.js"
    _css = STATIC / "viewer.css"

    # --- images: metadata per view, one overview buffer per view ----------------------
    images = traitlets.Dict().tag(sync=True)
    frontal_pixels = traitlets.Bytes(b"").tag(sync=True)
    lateral_pixels = traitlets.Bytes(b"").tag(sync=True)
    prior_pixels = traitlets.Bytes(b"").tag(sync=True)
    view = traitlets.Unicode("frontal").tag(sync=True)
    views = traitlets.List(traitlets.Unicode()).tag(sync=True)
    arrangement = traitlets.Unicode("single").tag(sync=True)
    link_view = traitlets.Bool(True).tag(sync=True)
    link_window = traitlets.Bool(False).tag(sync=True)
    # --- the display of the frontal (first) pane, in the image's own values -----------
    window = traitlets.Tuple(traitlets.Float(), traitlets.Float(), default_value=(0.0, 1.0)).tag(
        sync=True
    )
    preset = traitlets.Unicode("file").tag(sync=True)
    invert = traitlets.Bool(False).tag(sync=True)
    camera = traitlets.Dict(dict(FIT)).tag(sync=True)
    measurement = traitlets.Dict().tag(sync=True)
    # --- the report -------------------------------------------------------------------
    boxes = traitlets.List(traitlets.Dict()).tag(sync=True)
    findings = traitlets.List(traitlets.Dict()).tag(sync=True)
    crop = traitlets.Dict().tag(sync=True)
    selected = traitlets.Int(-1).tag(sync=True)
    show_boxes = traitlets.Bool(True).tag(sync=True)
    #: Boxes of the selected finding can be moved, resized, deleted and drawn.
    editable = traitlets.Bool(False).tag(sync=True)
    #: The last box edit handled (its ``seq``): the browser then drops its own copy.
    edit_ack = traitlets.Int(0).tag(sync=True)
    show_crop = traitlets.Bool(False).tag(sync=True)
    frame = traitlets.Unicode(DEFAULT_FRAME).tag(sync=True)
    #: The box frames the page offers (value, caption, warning, help), from report.FRAMES.
    frame_choices = traitlets.List(frame_options()).tag(sync=True)
    frame_caption = traitlets.Unicode(FRAME_CAPTIONS["center_crop"]).tag(sync=True)
    has_report = traitlets.Bool(False).tag(sync=True)
    demo = traitlets.Bool(False).tag(sync=True)
    demo_notice = traitlets.Unicode(DEMO_NOTICE).tag(sync=True)
    caption = traitlets.Unicode("").tag(sync=True)
    report_text = traitlets.Unicode("").tag(sync=True)
    warnings = traitlets.List(traitlets.Unicode()).tag(sync=True)
    message = traitlets.Unicode("Load a study, or the sample study, to begin.").tag(sync=True)
    # --- a second run of the same study, side by side -----------------------------------
    runs = traitlets.List(traitlets.Unicode()).tag(sync=True)
    compare = traitlets.Int(-1).tag(sync=True)
    compare_boxes = traitlets.List(traitlets.Dict()).tag(sync=True)
    compare_findings = traitlets.List(traitlets.Dict()).tag(sync=True)
    presets_order = traitlets.List(traitlets.Unicode(), list(vp.PRESETS)).tag(sync=True)
    preset_labels = traitlets.Dict(dict(vp.PRESET_LABELS)).tag(sync=True)

    def __init__(self, *, overview_side: int = vp.DEFAULT_OVERVIEW_SIDE, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.overview_side = overview_side
        self.report: Report | None = None
        self._sources: dict[str, Any] = {}  # view -> what the caller gave
        self._pixels: dict[str, Any] = {}  # view -> PixelData
        self._overviews: dict[str, vp.Overview] = {}
        self._serial: dict[str, int] = {}  # view -> which image it shows (the browser's key)
        self._previewed: set[str] = set()  # views showing a preview, not their overview
        self._run_reports: list[Report] = []
        self._box_edit_handlers = CallbackDispatcher()
        self.observe(self._on_view, "view")
        self.observe(self._on_frame, "frame")
        self.observe(self._on_selected, "selected")
        self.observe(self._on_preset, "preset")
        self.observe(self._on_window, "window")
        self.observe(self._on_compare, "compare")
        self.observe(self._on_arrangement, "arrangement")
        self.on_msg(self._on_custom_msg)

    # --- what is shown -------------------------------------------------------
    def set_images(self, frontal: Any = None, lateral: Any = None, prior: Any = None) -> None:
        """The study's images (paths, bytes, PIL images, arrays, DICOM datasets; any may
        be None). Each is read once for its own values; the frontal is shown first."""
        given = {"frontal": frontal, "lateral": lateral, "prior": prior}
        if frontal is not None and not _same(frontal, self._sources.get("frontal")):
            self._show_preview(frontal)
        sources, pixels, problems = {}, {}, []
        for view, source in given.items():
            if source is None:
                continue
            if _same(source, self._sources.get(view)):
                source = self._sources[view]
                sources[view], pixels[view] = source, self._pixels[view]
                continue
            try:
                pixels[view] = load_pixels(source, name=f"{view}_image")
            except CxrWidgetsError as exc:
                problems.append(f"{view} image not shown: {exc}")
                continue
            sources[view] = source
        changed = {v for v in VIEWS if not _same(sources.get(v), self._sources.get(v))}
        self._sources, self._pixels = sources, pixels
        self._overviews = {v: o for v, o in self._overviews.items() if v not in changed}
        for view in changed:
            self._serial[view] = self._serial.get(view, 0) + 1
        with self.hold_sync():
            self.images = {view: self._meta(view) for view in VIEWS if view in pixels}
            for view in VIEWS:
                if view in changed or view not in pixels or view in self._previewed:
                    setattr(self, f"{view}_pixels", b"")
            self._previewed.clear()
            self.views = [v for v in VIEWS if v in pixels]
            self.message = (
                " ".join(problems) or "Load a study, or the sample study, to begin."
                if "frontal" not in pixels
                else ""
            )
            if problems and "frontal" in pixels:
                self.warnings = [*self.warnings, *(p for p in problems if p not in self.warnings)]
            if self.view != "frontal":
                self.view = "frontal"
            self._send_pixels(self.views if self.arrangement == "views" else ["frontal"])
            if "frontal" in changed:
                self._reset_display()
            self._send_boxes()

    def _show_preview(self, frontal: Any) -> None:
        """Read a new frontal image and show a quick low-resolution picture of it at once;
        :meth:`set_images` sends the overview right after."""
        try:
            pixels = load_pixels(frontal, name="frontal_image")
        except CxrWidgetsError:
            return  # set_images reads it again and says why
        # Lateral and prior stay read (set_images keeps them when they are the same).
        self._sources = {**self._sources, "frontal": frontal}
        self._pixels = {**self._pixels, "frontal": pixels}
        self._overviews.pop("frontal", None)
        self._serial["frontal"] = self._serial.get("frontal", 0) + 1
        quick = vp.preview(pixels)
        with self.hold_sync():
            self.images = {
                "frontal": {
                    **quick.meta,
                    "view": "frontal",
                    "serial": self._serial["frontal"],
                    "preview": True,
                }
            }
            self.lateral_pixels = self.prior_pixels = b""
            self.frontal_pixels = quick.data
            self.views = ["frontal"]
            self.message = ""
            self._reset_display()
            self._send_boxes()
        self._previewed.add("frontal")
        self._flush()

    def _flush(self) -> None:
        """Send now what a caller's ``hold_sync`` holds so far: the preview (and the boxes
        set with it) must not wait for the overview computed next in the same hold."""
        # ipywidgets keeps the held names in _states_to_send until the outermost hold ends.
        held = getattr(self, "_states_to_send", None)
        if getattr(self, "_holding_sync", False) and held:
            self.send_state(set(held))
            held.clear()

    @property
    def frontal_source(self) -> Any:
        """The frontal image as given to :meth:`set_images` (None when there is none)."""
        return self._sources.get("frontal")

    @property
    def width(self) -> int:
        """The frontal image's width in original pixels (0 without one)."""
        return self.images.get("frontal", {}).get("width", 0)

    @property
    def height(self) -> int:
        """The frontal image's height in original pixels (0 without one)."""
        return self.images.get("frontal", {}).get("height", 0)

    @property
    def pixels(self) -> dict[str, Any]:
        """The shown images' values (:class:`~cxr_widgets.images.PixelData`) by view."""
        return dict(self._pixels)

    def set_report(self, report: Report | None, caption: str = "", keep_view: bool = False) -> None:
        """Show ``report``'s findings and boxes (None clears them).

        ``keep_view=True`` (the same study's report after an edit) keeps the selected
        finding and the compared run; camera and window are never changed here.
        """
        self.report = report
        count = len(report.findings) if report else 0
        with self.hold_sync():
            if not keep_view or self.selected >= count:
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
            if not keep_view:
                self.compare = -1

    def on_box_edit(self, callback: Callable[[BoxEdit], Any], remove: bool = False) -> None:
        """Call ``callback(edit)`` with a :class:`BoxEdit` after each box edit made in the
        browser (``remove=True`` unregisters it).

        The callback saves the edit and shows the saved report with
        ``set_report(report, caption, keep_view=True)`` before it returns: the browser
        keeps drawing its own copy of the edit until then, and afterwards shows the
        viewer's boxes (the old ones, when nothing was saved). A callback's exception is
        shown in the notebook and does not stop the others. With no callback the viewer
        applies the edit to its own :attr:`report`."""
        self._box_edit_handlers.register_callback(callback, remove=remove)

    def set_runs(self, runs: list[tuple[str, Report]]) -> None:
        """Earlier runs of the study, by label, that can be shown beside the current one."""
        self._run_reports = [report for _, report in runs]
        with self.hold_sync():
            self.runs = [label for label, _ in runs]
            if self.compare >= len(runs):
                self.compare = -1

    def select(self, index: int | None) -> None:
        """Highlight finding ``index`` (zero-based); None clears the selection."""
        if index is None or index == -1:
            self.selected = -1
            return
        count = len(self.report.findings) if self.report else 0
        if not 0 <= index < count:
            raise IndexError(f"finding {index} does not exist: the report has {count} findings")
        self.selected = index

    # --- the view from Python -------------------------------------------------------
    def zoom_to_finding(self, index: int) -> None:
        """Select finding ``index`` and zoom the frontal view onto its boxes."""
        self.select(index)
        shapes = [b for b in self.boxes if b["finding"] == index]
        if not shapes:
            raise CxrWidgetsError(
                f"finding {index + 1} has no box to zoom to (it is not grounded); "
                "pick a finding with boxes"
            )
        x0 = min(b["x0"] for b in shapes)
        y0 = min(b["y0"] for b in shapes)
        x1 = max(b["x1"] for b in shapes)
        y1 = max(b["y1"] for b in shapes)
        pad_x, pad_y = (x1 - x0) * FINDING_MARGIN, (y1 - y0) * FINDING_MARGIN
        self.camera = {"rect": [x0 - pad_x, y0 - pad_y, x1 + pad_x, y1 + pad_y]}

    def reset_view(self) -> None:
        """Whole image, the file's window and polarity, no measurement."""
        with self.hold_sync():
            self._reset_display()
            self.measurement = {}

    def _reset_display(self) -> None:
        meta = self.images.get("frontal")
        self.camera = dict(FIT)
        if meta is None:
            return
        self.invert = meta["invert"]
        self.preset = "file"
        self.window = tuple(meta["presets"]["file"])  # type: ignore[assignment]

    # --- internals -------------------------------------------------------------
    def _overview(self, view: str) -> vp.Overview:
        if view not in self._overviews:
            self._overviews[view] = vp.overview(self._pixels[view], self.overview_side)
        return self._overviews[view]

    def _meta(self, view: str) -> dict[str, Any]:
        return {**self._overview(view).meta, "view": view, "serial": self._serial.get(view, 0)}

    def _send_pixels(self, views: list[str]) -> None:
        for view in views:
            if view in self._pixels and not getattr(self, f"{view}_pixels"):
                setattr(self, f"{view}_pixels", self._overview(view).data)

    def _send_boxes(self) -> None:
        pixels = self._pixels.get("frontal")
        if pixels is None:
            self.boxes, self.crop, self.compare_boxes = [], {}, []
            return
        width, height = pixels.size
        ox, oy, side = center_square(width, height)
        self.crop = {"x": ox, "y": oy, "size": side}
        self.boxes = box_shapes(self.report, width, height, self.frame) if self.report else []
        other = self._compared()
        self.compare_boxes = box_shapes(other, width, height, self.frame) if other else []

    def _compared(self) -> Report | None:
        if 0 <= self.compare < len(self._run_reports):
            return self._run_reports[self.compare]
        return None

    def _on_custom_msg(self, _widget: Any, content: dict[str, Any], _buffers: Any) -> None:
        kind = content.get("kind")
        if kind == "want":
            self._send_pixels([v for v in content.get("views", []) if v in VIEWS])
        elif kind == "detail":
            self._send_detail(content)
        elif kind == "box_edit":
            self._on_box_edit(content)

    def _on_box_edit(self, content: dict[str, Any]) -> None:
        edit = self._box_edit(content)
        with self.hold_sync():
            if edit is not None:
                if self._box_edit_handlers.callbacks:
                    self._box_edit_handlers(edit)
                elif self.report is not None:
                    self.set_report(apply_box_edit(self.report, edit), self.caption, keep_view=True)
            seq = content.get("seq")
            if isinstance(seq, int) and not isinstance(seq, bool):
                # Sent after the owner's set_report, in the same update: the browser
                # then shows the saved boxes instead of its own copy (or, when nothing
                # was saved, the boxes as they were).
                self.edit_ack = seq

    def _box_edit(self, content: dict[str, Any]) -> BoxEdit | None:
        """The edit a ``box_edit`` message asks for, or None (logged) when it does not fit
        the shown report and image."""
        pixels = self._pixels.get("frontal")
        finding, box, rect = content.get("finding"), content.get("box"), content.get("rect")
        findings = self.report.findings if self.report else []
        corners = None if rect is None else _corners(rect)

        def whole(value: Any) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        problem = None
        if not self.editable:
            problem = "editing is off"
        elif pixels is None or not findings:
            problem = "no report or frontal image is shown"
        elif not whole(finding) or not 0 <= finding < len(findings):
            problem = f"finding {finding!r} is not in the report"
        elif not whole(box) or not -1 <= box < len(findings[finding].boxes):
            problem = f"box {box!r} is not a box of finding {finding}"
        elif rect is None and box == -1:
            problem = "a new box needs a rectangle"
        elif rect is not None and corners is None:
            problem = f"rect {str(rect)[:80]} is not four finite numbers"
        if problem is not None:
            log.debug("box edit ignored: %s", problem)
            return None
        new = None
        if corners is not None:
            width, height = pixels.size
            new = Box.from_pixels(*corners, width, height, self.frame)  # type: ignore[arg-type]
            if new.width <= 0 or new.height <= 0:
                log.debug("box edit ignored: the box has no area inside the frame")
                return None
        return BoxEdit(finding=finding, box=None if box == -1 else box, new=new)

    def _send_detail(self, content: dict[str, Any]) -> None:
        pixels = self._pixels.get(content.get("view", ""))
        if pixels is None:
            return
        try:
            data, meta = vp.region(
                pixels, content["x"], content["y"], content["w"], content["h"], content["side"]
            )
        except (KeyError, TypeError, ValueError) as exc:
            log.debug("detail request refused: %s", exc)
            return
        self.send(
            {"kind": "detail", "id": content.get("id"), "view": content["view"], **meta}, [data]
        )

    def _on_view(self, change: dict[str, Any]) -> None:
        if change["new"] not in VIEWS:
            self.view = "frontal"
            return
        self._send_pixels([change["new"]])

    def _on_arrangement(self, change: dict[str, Any]) -> None:
        if change["new"] not in ARRANGEMENTS:
            self.arrangement = "single"
        elif change["new"] == "views":
            self._send_pixels(self.views)

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

    def _on_preset(self, change: dict[str, Any]) -> None:
        table = self.images.get("frontal", {}).get("presets", {})
        if change["new"] in table:
            self.window = tuple(table[change["new"]])  # type: ignore[assignment]
        elif change["new"] != "custom":
            self.preset = change["old"] if change["old"] in table else "custom"

    def _on_window(self, change: dict[str, Any]) -> None:
        level, width = change["new"]
        if width <= 0:
            self.window = (level, 1.0)
            return
        table = self.images.get("frontal", {}).get("presets", {})
        if list(change["new"]) != list(table.get(self.preset, [])):
            self.preset = "custom"

    def _on_compare(self, change: dict[str, Any]) -> None:
        with self.hold_sync():
            other = self._compared()
            self.compare_findings = finding_rows(other) if other else []
            self._send_boxes()
            if other is None and self.arrangement == "runs":
                self.arrangement = "single"
