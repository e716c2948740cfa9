"""Reader review of one study at a time, shared by StudyBrowser and ReportGenWidget.

:class:`ReviewPanel` is the controls (``static/review_panel.js``): review
mode, the reviewer's name, per finding a verdict and its text, a finding the
model missed, a note, done, undo and what was last saved. Boxes are edited
on the image itself, in the :class:`~.viewer.ReportViewer` (``editable``).

:class:`ReviewSession` binds the controls, the viewer and a
:class:`~cxr_widgets.review.ReviewStore`: it shows the study as the reader
left it, saves every change at once (one committed transaction each) and
then sends only what the change touched.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anywidget
import traitlets

from ..errors import CxrWidgetsError, ReviewError
from ..report import Finding, Report
from ..review import VERDICTS, ReviewedFinding, ReviewStore
from .viewer import BoxEdit, ReportViewer

STATIC = Path(__file__).parent / "static"
#: How each verdict reads on its button (the verdicts themselves: review.VERDICTS).
VERDICT_LABELS = {"agree": "✓ agree", "disagree": "✗ disagree", "unsure": "? unsure"}

__all__ = ["ReviewPanel", "ReviewSession", "reviewed_report"]


class ReviewPanel(anywidget.AnyWidget):
    """The review controls of one study (drawn by ``static/review_panel.js``)."""

    _esm = STATIC / "review_panel.js"
    _css = STATIC / "review_panel.css"
    review_mode = traitlets.Bool(False).tag(sync=True)
    reviewer = traitlets.Unicode("").tag(sync=True)
    verdicts = traitlets.List(
        traitlets.List(), [[v, VERDICT_LABELS.get(v, v)] for v in VERDICTS]
    ).tag(sync=True)
    #: One row per finding as the reviewer left it: position, index, text, verdict, ...
    findings = traitlets.List(traitlets.Dict()).tag(sync=True)
    note = traitlets.Unicode("").tag(sync=True)
    done = traitlets.Bool(False).tag(sync=True)
    reviewed = traitlets.Bool(False).tag(sync=True)
    saved = traitlets.Unicode("").tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    #: The position of the selected finding (linked to the viewer's selection).
    active = traitlets.Int(-1).tag(sync=True)
    #: A report is shown that can be reviewed.
    available = traitlets.Bool(False).tag(sync=True)
    #: Where the review is saved (file name and study id), shown under the bar.
    where = traitlets.Unicode("").tag(sync=True)


def reviewed_report(report: Report, findings: list[ReviewedFinding]) -> Report:
    """``report`` with the reviewer's findings (edited texts and boxes, added findings)."""
    return report.replace(findings=[Finding(f.text, list(f.boxes)) for f in findings])


class ReviewSession:
    """Review the shown study through ``panel`` and ``viewer``; saved in ``reviews``.

    ``on_saved(study_id, state)``: after each saved change, with the study's
    state for the reviewer (``"reviewed"``, ``"started"`` or None when nothing
    is left). ``on_reviewer()``: the reviewer's name changed. ``on_other_study(id)``:
    undo changed another study. ``prepare()``: called when review mode is
    switched on (e.g. to open the store); its CxrWidgetsError is shown.
    """

    def __init__(
        self,
        viewer: ReportViewer,
        *,
        reviews: ReviewStore | None = None,
        reviewer: str | None = None,
        on_saved: Callable[[str, str | None], None] | None = None,
        on_reviewer: Callable[[], None] | None = None,
        on_other_study: Callable[[str], None] | None = None,
        prepare: Callable[[], None] | None = None,
    ) -> None:
        self.viewer = viewer
        self.panel = ReviewPanel(reviewer=reviewer or "")
        self.reviews = reviews
        self.study_id: str | None = None
        self.report: Report | None = None  # the model's answer
        self.caption = ""
        self._shown: list[ReviewedFinding] = []
        self._saves = 0
        self._on_saved = on_saved
        self._on_reviewer = on_reviewer
        self._on_other_study = on_other_study
        self._prepare = prepare
        self.panel.observe(self._reviewer_changed, "reviewer")
        self.panel.observe(self._mode_changed, "review_mode")
        self.panel.on_msg(self._on_action)
        self._linking = False
        self.panel.observe(self._panel_selected, "active")
        viewer.observe(self._viewer_selected, "selected")
        viewer.on_box_edit(self._on_box_edit)

    # --- what is reviewed -------------------------------------------------------------

    @property
    def reviewer(self) -> str | None:
        return self.reviews.reviewer if self.reviews is not None else None

    @property
    def active(self) -> bool:
        """Review mode is on with a store, a reviewer and a report to review."""
        return bool(
            self.panel.review_mode
            and self.reviews is not None
            and self.reviews.reviewer
            and self.report is not None
            and self.study_id is not None
        )

    def set_store(self, reviews: ReviewStore | None) -> None:
        """Save in ``reviews`` from now on (its reviewer: the panel's name)."""
        self.reviews = reviews
        if reviews is not None and self.panel.reviewer.strip():
            reviews.reviewer = ReviewStore.check_reviewer(self.panel.reviewer)

    def show(self, study_id: str | None, report: Report | None, caption: str = "") -> None:
        """Show ``report`` (the model's answer for ``study_id``) as the reviewer left it."""
        self.study_id, self.report, self.caption = study_id, report, caption
        self.panel.error = ""
        self._draw(keep_view=False)

    # --- drawing ----------------------------------------------------------------------

    def _state(self) -> dict[str, Any] | None:
        if self.reviews is None or not self.reviews.reviewer or self.report is None:
            return None
        if self.study_id is None:
            return None
        return self.reviews.study(self.study_id)

    def _draw(self, keep_view: bool) -> None:
        """The viewer and the whole panel from the store."""
        state = self._state()
        editing = self.active and state is not None
        shown = self.report
        self._shown = state["findings"] if state is not None else []
        if editing and self.report is not None:
            shown = reviewed_report(self.report, self._shown)
        with self.viewer.hold_sync():
            self.viewer.editable = bool(editing)
            self.viewer.set_report(shown, self.caption, keep_view=keep_view)
        with self.panel.hold_sync():
            self.panel.available = self.report is not None
            self.panel.findings = self._rows(shown)
            self.panel.note = state["note"] if state else ""
            self.panel.done = bool(state and state["done"])
            self.panel.reviewed = bool(state and state["reviewed"])
            self.panel.where = self._where()
            if not keep_view:
                self.panel.active = -1

    def _rows(self, shown: Report | None) -> list[dict[str, Any]]:
        rows = []
        for position, f in enumerate(self._shown):
            color = shown.color(position) if shown and position < len(shown.findings) else ""
            rows.append(_row(position, f, color))
        return rows

    def _where(self) -> str:
        if self.reviews is None or self.study_id is None:
            return ""
        return f"saved in {self.reviews.path.name} as study {self.study_id}"

    # --- selection: the panel's row and the viewer's finding are one ----------------

    def _panel_selected(self, change: dict[str, Any]) -> None:
        if self._linking:
            return
        self._linking = True
        try:
            count = len(self.viewer.report.findings) if self.viewer.report else 0
            self.viewer.selected = change["new"] if 0 <= change["new"] < count else -1
        finally:
            self._linking = False

    def _viewer_selected(self, change: dict[str, Any]) -> None:
        if self._linking:
            return
        self._linking = True
        try:
            self.panel.active = change["new"]
        finally:
            self._linking = False

    # --- changes from the page --------------------------------------------------------

    def _reviewer_changed(self, change: dict[str, Any]) -> None:
        name = (change["new"] or "").strip()
        try:
            checked = ReviewStore.check_reviewer(name) if name else None
        except ReviewError as exc:
            self.panel.error = str(exc)
            return
        self.panel.error = ""
        if self.reviews is not None:
            self.reviews.reviewer = checked
        if self._on_reviewer is not None:
            self._on_reviewer()
        self._draw(keep_view=False)

    def _mode_changed(self, change: dict[str, Any]) -> None:
        self.panel.error = ""
        if change["new"] and self._prepare is not None:
            try:
                self._prepare()
            except CxrWidgetsError as exc:
                self.panel.error = str(exc)
        self._draw(keep_view=False)

    def _on_action(self, _widget: Any, content: dict[str, Any], _buffers: Any) -> None:
        action = str(content.get("action", ""))
        started = time.perf_counter()
        try:
            redraw = self._apply(action, content)
        except (CxrWidgetsError, ValueError) as exc:
            self.panel.error = str(exc)
            return
        self._after_save(action, started, redraw)

    def _check(self, action: str) -> tuple[ReviewStore, str]:
        if self.reviews is None or self.study_id is None or self.report is None:
            raise ReviewError("nothing to review: show a study with a report first")
        if not self.reviews.reviewer and action != "undo":
            raise ReviewError("enter your name as reviewer first (the box beside Review mode)")
        if not self.panel.review_mode and action != "undo":
            raise ReviewError("switch on Review mode first")
        return self.reviews, self.study_id

    def _apply(self, action: str, content: dict[str, Any]) -> str:
        """Save one change; what to send afterwards: "row", "study" or "all"."""
        reviews, sid = self._check(action)
        index = content.get("index")
        if action == "verdict":
            reviews.set_verdict(sid, index, content.get("verdict"))  # type: ignore[arg-type]
            return "row"
        if action == "text":
            reviews.set_text(sid, index, content.get("text") or None)  # type: ignore[arg-type]
            return "all"
        if action == "add":
            reviews.add_finding(sid, str(content.get("text", "")))
            return "added"
        if action == "delete":
            reviews.delete_finding(sid, index)  # type: ignore[arg-type]
            return "all"
        if action == "note":
            reviews.set_note(sid, str(content.get("note", "")))
            return "study"
        if action == "done":
            reviews.mark_done(sid, bool(content.get("done", True)))
            return "study"
        if action == "undo":
            undone = reviews.undo()
            if undone is None:
                raise ReviewError("nothing to undo")
            if undone["study_id"] != sid:
                if self._on_other_study is not None:
                    self._on_other_study(undone["study_id"])
                return "other:" + undone["study_id"]
            return "all"
        raise ReviewError(f"unknown review action {action!r}")

    def _on_box_edit(self, edit: BoxEdit) -> None:
        """A box moved, resized, drawn or deleted on the viewer: save the finding's boxes."""
        started = time.perf_counter()
        try:
            reviews, sid = self._check("boxes")
            if not self.active or not 0 <= edit.finding < len(self._shown):
                raise ReviewError("switch on Review mode to edit boxes")
            finding = self._shown[edit.finding]
            reviews.set_boxes(sid, finding.index, edit.applied_to(finding.boxes))
        except (CxrWidgetsError, ValueError, IndexError) as exc:
            self.panel.error = str(exc)
            self._draw(keep_view=True)  # the viewer shows the boxes as stored
            return
        self._after_save("boxes", started, "all")

    def _after_save(self, action: str, started: float, redraw: str) -> None:
        """Committed: say so first, then send what the change touched."""
        elapsed = (time.perf_counter() - started) * 1000
        self._saves += 1
        other = redraw.startswith("other:")
        with self.panel.hold_sync():
            self.panel.error = ""
            self.panel.saved = (
                f"saved #{self._saves} at {time.strftime('%H:%M:%S')} ({action}, {elapsed:.0f} ms)"
                + (f" in study {redraw[6:]}" if other else "")
            )
        if other:
            if self._on_saved is not None:
                self._on_saved(redraw[6:], None)
            return
        state = self._state()
        if state is None:
            return
        if redraw == "row" or redraw == "study":
            self._send_changed(state, rows_too=redraw == "row")
        else:
            self._draw(keep_view=True)
            if redraw == "added":
                self.panel.active = len(self._shown) - 1  # its boxes are drawn next
        if self._on_saved is not None and self.study_id is not None:
            # After undo the study may hold no review at all: the owner reads it again.
            done = "reviewed" if state["reviewed"] else "started"
            self._on_saved(self.study_id, None if action == "undo" else done)

    def _send_changed(self, state: dict[str, Any], rows_too: bool) -> None:
        """A verdict, the note or done changed: the viewer's report did not."""
        self._shown = state["findings"]
        with self.panel.hold_sync():
            if rows_too:
                colors = {r["position"]: r["color"] for r in self.panel.findings}
                rows = [_row(p, f, colors.get(p, "")) for p, f in enumerate(self._shown)]
                if rows != self.panel.findings:
                    self.panel.findings = rows
            self.panel.note = state["note"]
            self.panel.done = bool(state["done"])
            self.panel.reviewed = bool(state["reviewed"])


def _row(position: int, f: ReviewedFinding, color: str) -> dict[str, Any]:
    return {
        "position": position,
        "index": f.index,
        "number": position + 1,
        "source": f.source,
        "text": f.text,
        "model_text": f.model_text or "",
        "verdict": f.verdict,
        "edited": f.edited,
        "color": color,
        "n_boxes": len(f.boxes),
    }
