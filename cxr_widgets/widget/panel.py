"""ReportGenWidget: endpoint, study and results in one panel.

It collects input, calls the core (:class:`~cxr_widgets.backend.ReportGenerator`)
and shows the result; it holds no wire-format, image or HTTP logic. Its state
is typed (traits of the parts in :mod:`.parts`), drawn by the front end.
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import traitlets

from ..backend import ReportGenerator
from ..contract import PreparedRequest, assemble_request
from ..errors import CxrWidgetsError, ReviewError, StudyError, user_message
from ..exports import (
    MAX_FILE_STEM,
    MEDIA_TYPES,
    STATIC_SIDE,
    export_bytes,
    export_report,
    safe_stem,
    static_view,
)
from ..render import fit_within, to_pil
from ..report import FRAMES, Report
from ..study import IMAGE_COLUMNS, Study
from ..summary import study_summary
from .endpoint_panel import EndpointPanel
from .history import RunRecord, run_label
from .parts import DEMO_BADGE, ExportList, Header
from .review_panel import ReviewSession
from .runner import Job, Runner
from .study_panel import StudyPanel, StudyState
from .viewer import VIEWS, ReportViewer

#: The demo backend's simulated model time, so the spinner is seen.
DEMO_LATENCY = 0.8
DEFAULT_EXPORT_DIR = "cxr-exports"
#: The file reviews are saved in when review mode is switched on in the page (in export_dir).
DEFAULT_REVIEW_FILE = "reviews.sqlite"
CURRENT = -1  # the history entry for the form's own study (not generated)
#: How many recent static views the panel keeps, to show them again without drawing.
STATIC_KEPT = 8

__all__ = ["DEMO_BADGE", "ReportGenWidget", "in_voila"]


def in_voila() -> bool:
    """True in a kernel started by Voilà (it sets ``VOILA_KERNEL_ID`` before the notebook runs)."""
    return bool(os.environ.get("VOILA_KERNEL_ID") or os.environ.get("VOILA_BASE_URL"))


class ReportGenWidget(widgets.VBox):
    """Configure an endpoint, load a study, generate and explore grounded findings.

    ``client``: any ReportGenerator (``ReportGenClient``, ``DemoBackend``, ...);
    None uses the demo backend with a small visible latency. ``max_upload_mb``
    limits uploads through the browser (larger files: give a server-side path).
    Exports go to ``export_dir`` (relative to the notebook's working directory).

    Hosted apps (Voilà, a remote hub), where the user cannot reach the server's
    files: ``download_exports=True`` sends each export to the browser as a
    download instead of writing it on the server, and ``server_paths=False``
    removes the fields that read image files on the server. Both default to
    what suits the place the panel runs in: downloads and no server paths
    under Voilà, files and server paths in JupyterLab.

    Reader review of the shown report: ``review`` names the SQLite file reviews
    are saved in (default ``export_dir/reviews.sqlite``), ``reviewer`` the
    reader. Switch review mode on in the page or with :meth:`start_review`:
    each finding gets agree/disagree/unsure and an editable text, boxes are
    moved, resized, drawn and deleted on the image, missed findings added, a
    note written, the study marked done, the last change undone; every change
    is saved at once. The model's answer is stored as a result in the same
    file (:func:`~cxr_widgets.review.store_for_review`), so :attr:`reviews`
    gives ``reference_set()``, ``to_dataframe()`` and ``export()`` exactly as
    for :class:`~cxr_widgets.StudyBrowser` (which can open the file too).
    """

    #: How box coordinates map to the image: one of :data:`cxr_widgets.report.FRAMES`.
    frame = traitlets.Enum(FRAMES, default_value=FRAMES[0])

    def __init__(
        self,
        client: ReportGenerator | None = None,
        *,
        max_upload_mb: float = 200,
        export_dir: str | Path = DEFAULT_EXPORT_DIR,
        demo_latency: float = DEMO_LATENCY,
        download_exports: bool | None = None,
        server_paths: bool | None = None,
        review: str | Path | None = None,
        reviewer: str | None = None,
    ) -> None:
        hosted = in_voila()
        self.download_exports = hosted if download_exports is None else bool(download_exports)
        self.server_paths = (not hosted) if server_paths is None else bool(server_paths)
        self._client: ReportGenerator | None = None
        self._history: list[RunRecord] = []
        self._shown: int | None = None  # index into history of what the viewer shows
        # The report given to show_report() and the image given with it (reports hold none).
        self._given: tuple[Report, Any] | None = None
        self._draft: StudyState | None = None  # the form's own study while a run is shown
        self._fallback: Any = None  # the display handle of the static view, once displayed
        self._static_shown: tuple[int, str] | None = None  # what the static view shows
        self._static_views: list[tuple[tuple[Any, Any, str], str]] = []  # recent, newest first
        self._static_image: tuple[Any, Any] | None = None  # (image, shrunk for the view)
        self.export_dir = Path(export_dir)
        self.demo_latency = demo_latency

        self.runner = Runner(on_busy=self._busy)
        self.viewer = ReportViewer()
        self.review_path = Path(review) if review is not None else None
        self._results: Any = None  # the ResultStore reviews are saved in, once opened
        self.review = ReviewSession(self.viewer, reviewer=reviewer, prepare=self._open_review)
        self.header = Header()
        self.endpoint_toggle = widgets.ToggleButton(
            description="Endpoint",
            icon="cog",
            tooltip="Choose the endpoint",
            value=False,
            layout=widgets.Layout(width="auto", flex="0 0 auto"),
        ).add_class("cxr-endpoint-toggle")
        self.endpoint = EndpointPanel(
            apply=self._apply_client,
            test=self.test_connection,
            runner=self.runner,
            demo_latency=demo_latency,
        )
        self.endpoint.box.layout.display = "none"
        self.endpoint_toggle.observe(
            lambda c: setattr(self.endpoint.box.layout, "display", "" if c["new"] else "none"),
            "value",
        )
        self.studypanel = StudyPanel(
            image_options=lambda: dict(self.client.image_options),
            on_change=self._study_changed,
            max_upload_bytes=int(max_upload_mb * 1e6),
            status=self.runner.status,
            server_paths=self.server_paths,
        )
        self.generate_button = widgets.Button(
            description="Generate",
            icon="play",
            button_style="primary",
            tooltip="Send the study to the active endpoint",
        ).add_class("cxr-generate")
        self.generate_button.on_click(lambda _: self.start_generate())
        self.history_select = widgets.Dropdown(
            description="History",
            options=[("no runs yet", CURRENT)],
            value=CURRENT,
            layout=widgets.Layout(width="auto", min_width="0"),
            style={"description_width": "initial"},
        ).add_class("cxr-history")
        self.history_select.observe(self._pick_history, "value")
        self.export_buttons = {
            kind: widgets.Button(
                description=label,
                icon="download",
                tooltip=tip,
                disabled=True,
                layout=widgets.Layout(width="auto"),
            ).add_class(f"cxr-export-{kind}")
            for kind, label, tip in (
                ("json", "JSON", "Export the report as JSON"),
                ("csv", "CSV", "Export one row per finding and box as CSV"),
                ("png", "PNG", "Export the frontal image at full resolution with the boxes"),
            )
        }
        for kind, button in self.export_buttons.items():
            button.on_click(lambda _, kind=kind: self.start_export((kind,)))
        self.export_list = ExportList()

        # The viewer's frame select and this trait move together.
        traitlets.dlink(
            (self.viewer, "frame"),
            (self, "frame"),
            transform=lambda value: value if value in FRAMES else FRAMES[0],
        )
        traitlets.dlink((self, "frame"), (self.viewer, "frame"))

        headbar = widgets.HBox(
            [self.header, self.endpoint_toggle],
            layout=widgets.Layout(justify_content="space-between"),
        ).add_class("cxr-headbar")
        run_bar = widgets.HBox(
            [self.generate_button, self.runner.cancel_button, self.runner.status],
            layout=widgets.Layout(align_items="flex-start", grid_gap="6px"),
        ).add_class("cxr-run-bar")
        history_bar = widgets.HBox(
            [self.history_select, widgets.Label("Export"), *self.export_buttons.values()],
            layout=widgets.Layout(align_items="center", flex_flow="row wrap"),
        )
        results = widgets.VBox(
            [
                widgets.HTML("<div class='cxr-section-title'>Results</div>"),
                run_bar,
                self.viewer,
                self.review.panel,
                history_bar,
                self.export_list,
            ],
            # Below the study form when the notebook is too narrow for both side by side.
            layout=widgets.Layout(flex="1 1 360px", min_width="0"),
        ).add_class("cxr-results")
        body = widgets.HBox(
            [self.studypanel.box, results],
            layout=widgets.Layout(align_items="flex-start", flex_flow="row wrap"),
        )
        super().__init__([headbar, self.endpoint.box, body])
        self.add_class("cxr-widget")
        self.client = client if client is not None else self._demo()

    # --- a static view for readers without a kernel ---------------------------------
    def _ipython_display_(self) -> None:
        """The live panel, and beside it a static view of the shown report (hidden while
        the panel runs) that nbconvert, nbviewer and GitHub show when widgets cannot run."""
        from IPython.display import HTML, display

        bundle = self._repr_mimebundle_()
        if bundle is not None:
            display(bundle, raw=True)
        self._fallback = display(HTML(self._static_view()), display_id=True)

    def _static_view(self) -> str:
        report, caption = self.report, self.viewer.caption
        record = self._history[self._shown] if self._shown is not None else None
        image = None
        if record is not None:
            image = getattr(record.images.get("frontal_image"), "image", None)
        elif report is not None:
            image = self._given_image(report)  # what show_report shows it on
            if image is None:
                image = getattr(self.studypanel.prepared.get("frontal_image"), "image", None)
        # Going back to a run shown before costs nothing: its view is kept (a few, ~40 KB
        # each), found by identity (the entry holds the objects, so no id is reused).
        for (r, i, c), view in self._static_views:
            if r is report and i is image and c == caption:
                return view
        view = static_view(report, self._static_picture(image), caption)
        self._static_views = [((report, image, caption), view), *self._static_views][:STATIC_KEPT]
        return view

    def _static_picture(self, image: Any) -> Any:
        """``image`` at the static view's size, shrunk once per image: most of drawing a
        static view is shrinking the picture, and new reports often share their image."""
        if image is None:
            return None
        if self._static_image is None or self._static_image[0] is not image:
            self._static_image = (image, fit_within(to_pil(image), STATIC_SIDE))
        return self._static_image[1]

    def _update_static_view(self) -> None:
        if self._fallback is not None:
            from IPython.display import HTML

            self._fallback.update(HTML(self._static_view()))

    def __repr__(self) -> str:
        runs = len(self._history)
        return (
            f"<ReportGenWidget endpoint={self.client.label!r}, {runs} run{'s' if runs != 1 else ''}"
            f"{', demo' if self.client.is_demo else ''}>"
        )

    # --- the endpoint ---------------------------------------------------------------
    def _demo(self) -> ReportGenerator:
        from ..demo import DemoBackend

        return DemoBackend(latency=self.demo_latency)

    @property
    def client(self) -> ReportGenerator:
        """The active backend (a ReportGenerator)."""
        assert self._client is not None
        return self._client

    @client.setter
    def client(self, client: ReportGenerator) -> None:
        if not isinstance(client, ReportGenerator):
            raise TypeError(
                "client must be a ReportGenerator such as ReportGenClient(EndpointConfig(...)) "
                f"or DemoBackend(), got {type(client).__name__}"
            )
        changed = self._client is not None and client is not self._client
        self._client = client
        with self.header.hold_sync():
            self.header.endpoint = client.label
            self.header.demo = bool(client.is_demo)
        if changed:  # what was said about the previous endpoint no longer holds
            self.runner.status.clear()
            self.endpoint.result.show("")
        self.runner.status.request_budget = client.request_budget or 0
        self.studypanel.refresh_options()

    @property
    def request_budget(self) -> int | None:
        """The active backend's byte budget for one request (None: no budget)."""
        return self.client.request_budget

    def _apply_client(self, client: ReportGenerator) -> None:
        self.client = client

    def test_connection(self) -> None:
        """Send the sample study to the active endpoint (in the background) and report."""
        from ..samples import sample_study

        client = self.client

        def done(report: Report, job: Job) -> None:
            kind = " (demo findings)" if report.demo else ""
            self.endpoint.show_result(
                f"OK: {client.label} answered in {job.elapsed:.1f} s with "
                f"{len(report.findings)} findings{kind}.",
                ok=True,
            )

        def failed(exc: BaseException, _job: Job) -> None:
            self.endpoint.show_result(f"Test failed: {user_message(exc)}", ok=False)

        self.endpoint.result.show("")
        try:
            self.runner.start(
                f"Testing {client.label}", lambda: client.generate(sample_study()), done, failed
            )
        except RuntimeError as exc:
            self.endpoint.show_result(str(exc), ok=False)

    # --- the study ------------------------------------------------------------------
    @property
    def study(self) -> Study:
        """The study in the form (StudyError when the frontal image is missing)."""
        return self.studypanel.study

    def load_study(self, study: Study) -> None:
        """Fill the form from ``study``; its images are prepared (once) and shown."""
        self.studypanel.load_study(study)

    def _study_changed(self) -> None:
        """The form changed: show its images, no report, and forget what spoke of the old one."""
        self._shown = None
        self._draft = None
        self._show_images(self.studypanel.snapshot())
        self._show_report(None)
        self.export_list.clear()
        self._set_history_value(CURRENT)
        self._update_exports()

    def _show_images(self, state: StudyState) -> None:
        # The viewer reads each source once for its own values (window/level, zoom).
        self.viewer.set_images(*(getattr(state.slots.get(v), "source", None) for v in VIEWS))

    # --- generating -------------------------------------------------------------------
    def _request(self) -> tuple[PreparedRequest, StudyState]:
        """The request from the images prepared in the form, and the form it came from."""
        encoded = self.studypanel.encoded()  # StudyError: shown beside Generate
        return assemble_request([encoded]), self.studypanel.snapshot()

    def generate(self) -> Report:
        """Generate for the loaded study, blocking; the report is shown and returned."""
        self._check_idle()
        request, state = self._request()
        started = time.monotonic()
        self.runner.status.clear()
        try:
            report = self.client.send(request)[0]
        except Exception as exc:
            self._show_error(exc)
            raise
        self._record(request, state, report, time.monotonic() - started)
        return report

    async def agenerate(self) -> Report:
        """:meth:`generate` for ``await`` in notebooks: the kernel keeps serving."""
        self._check_idle()
        request, state = self._request()
        started = time.monotonic()
        self.runner.status.clear()
        try:
            report = (await self.client.asend(request))[0]
        except Exception as exc:
            self._show_error(exc)
            raise
        self._record(request, state, report, time.monotonic() - started)
        return report

    def start_generate(self) -> Job | None:
        """What the Generate button does: generate in the background; the page counts time."""
        if self.runner.busy:
            return None
        try:
            request, state = self._request()
        except StudyError:
            return None  # the reason is shown beside Generate
        client = self.client
        self.runner.status.clear()

        def done(reports: list[Report], job: Job) -> None:
            self._record(request, state, reports[0], job.elapsed)

        def failed(exc: BaseException, _job: Job) -> None:
            self._show_error(exc)

        return self.runner.start(
            f"Generating on {client.label}", lambda: client.send(request), done, failed
        )

    def cancel(self) -> None:
        """Stop waiting for the running generation; its result will be discarded."""
        self.runner.cancel()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the background job (Generate, Test, export) is done."""
        return self.runner.wait(timeout)

    def _check_idle(self) -> None:
        if self.runner.busy:
            raise RuntimeError(
                "the panel is busy (a generation, test or export is running): "
                "wait for it (w.wait()) or Cancel it."
            )

    def _show_error(self, exc: BaseException) -> None:
        kept = " The last report stays shown." if self.viewer.has_report else ""
        self.runner.status.show_error("Generation failed.", f"{user_message(exc)}{kept}")

    def _record(
        self, request: PreparedRequest, state: StudyState, report: Report, seconds: float
    ) -> None:
        study = request.studies[0].study
        record = RunRecord(
            summary=study_summary(study, state.images),
            report=report,
            study=study,
            when=datetime.now(),
            endpoint=self.client.label,
            seconds=seconds,
            state=state,
        )
        self._history.append(record)
        self.runner.status.clear()
        self._refresh_history_options()
        self._show_record(len(self._history) - 1)

    # --- showing --------------------------------------------------------------------
    @property
    def report(self) -> Report | None:
        """The report shown in the viewer (None before the first generation)."""
        return self.review.report  # the model's answer, also while its review is shown

    @property
    def history(self) -> list[RunRecord]:
        """Every generation of this session (summary, report, study, when, endpoint, ...)."""
        return list(self._history)

    def select_finding(self, index: int | None) -> None:
        """Highlight finding ``index`` (zero-based) and its boxes; None clears."""
        self.viewer.select(index)

    @property
    def selected_finding(self) -> int | None:
        return None if self.viewer.selected < 0 else self.viewer.selected

    def show_report(self, report: Report, caption: str = "", *, image: Any = None) -> None:
        """Show any report (e.g. loaded from JSON) over ``image``, the frontal image it was
        made for (a path, bytes, a PIL image, ...; a report holds none), or, without one,
        over the loaded study's frontal image. Exports of it are drawn on the same image."""
        frontal = image if image is not None else self.studypanel.slots["frontal"].source
        self._given = (report, image) if image is not None else None
        self._shown = None
        self.export_list.clear()
        with self.viewer.hold_sync():
            # The report first: a new image's quick preview then goes out with its boxes.
            self._show_report(report, caption)
            if frontal is not None and frontal is not self.viewer.frontal_source:
                self.viewer.set_images(frontal)
            shown = self.viewer.pixels.get("frontal")
            if shown is not None and _shape_differs(report.image_size, shown.size):
                self.viewer.warnings = [
                    *self.viewer.warnings,
                    f"the report was made for a {report.image_size[0]}x{report.image_size[1]} "
                    f"image but is shown on a {shown.size[0]}x{shown.size[1]} one: the "
                    "boxes may be misplaced",
                ]
        self._update_exports()

    def _show_record(self, index: int) -> None:
        """Show run ``index``: its report, and its study back in the form."""
        record = self._history[index]
        self._shown = index
        self.runner.status.clear()
        self.export_list.clear()
        if not self.studypanel.snapshot().same_as(record.state):
            self.studypanel.restore(record.state)
        with self.viewer.hold_sync():
            # The report first: a new image's quick preview then goes out with its boxes.
            self._show_report(
                record.report,
                f"run {index + 1}: {record.summary}, {record.endpoint}, {record.seconds:.1f} s",
            )
            self._show_images(record.state)
        self._set_history_value(index)
        self._update_exports()

    def _refresh_history_options(self) -> None:
        total = len(self._history)
        options = [(run_label(r, i + 1, total), i) for i, r in enumerate(self._history)]
        self.viewer.set_runs([(label, self._history[i].report) for label, i in options])
        self.history_select.unobserve(self._pick_history, "value")
        self.history_select.options = [("current study (not generated)", CURRENT), *options]
        self.history_select.value = self._shown if self._shown is not None else CURRENT
        self.history_select.observe(self._pick_history, "value")

    def _set_history_value(self, value: int) -> None:
        if not self._history:
            return
        self.history_select.unobserve(self._pick_history, "value")
        self.history_select.value = value
        self.history_select.observe(self._pick_history, "value")

    def _pick_history(self, change: dict[str, Any]) -> None:
        new = change["new"]
        if new is None:
            return
        if new == CURRENT:
            self._show_draft()
            return
        # Keep the form's own study (edited, not generated) to come back to.
        form = self.studypanel.snapshot()
        shown = self._history[self._shown].state if self._shown is not None else None
        if not form.same_as(shown) and not any(form.same_as(r.state) for r in self._history):
            self._draft = form
        self._show_record(new)

    def _show_draft(self) -> None:
        draft, self._draft = self._draft, None
        if draft is not None:
            self.studypanel.restore(draft)
        self._shown = None
        self._show_images(self.studypanel.snapshot())
        self._show_report(None)
        self.runner.status.clear()
        self.export_list.clear()
        self._update_exports()

    def clear(self) -> None:
        """Clear the viewer's report (the study and the history stay)."""
        self._show_report(None)
        self._shown = None
        self.export_list.clear()
        self._set_history_value(CURRENT)
        self._update_exports()

    # --- reader review ---------------------------------------------------------------
    @property
    def reviews(self) -> Any:
        """The :class:`~cxr_widgets.review.ReviewStore` reviews are saved in (None until
        review mode was first switched on)."""
        return self.review.reviews

    @property
    def reviewer(self) -> str | None:
        return self.review.reviewer or (self.review.panel.reviewer.strip() or None)

    @reviewer.setter
    def reviewer(self, name: str | None) -> None:
        self.review.panel.reviewer = name or ""

    @property
    def review_mode(self) -> bool:
        return self.review.panel.review_mode

    @review_mode.setter
    def review_mode(self, on: bool) -> None:
        self.review.panel.review_mode = bool(on)
        if self.review.panel.error and on:
            raise ReviewError(self.review.panel.error)

    @property
    def review_study_id(self) -> str | None:
        """The study id the shown report is reviewed under (None outside review mode)."""
        return self.review.study_id

    def start_review(self, review: str | Path | None = None, *, reviewer: str | None = None) -> Any:
        """Switch review mode on for the shown report; the :class:`ReviewStore`.

        ``review``: the SQLite file to save in (default: the one given to the
        widget, else ``export_dir/reviews.sqlite``); ``reviewer``: the reader's name.
        """
        if review is not None and (self.review_path is None or Path(review) != self.review_path):
            self._close_review_store()
            self.review_path = Path(review)
        if reviewer is not None:
            self.reviewer = reviewer
        self.review_mode = True
        return self.reviews

    def stop_review(self) -> None:
        """Switch review mode off (everything is saved already)."""
        self.review.panel.review_mode = False

    def _open_review(self) -> None:
        """Review mode was switched on: open the file, store the shown answer."""
        from ..review import ReviewStore
        from ..store import ResultStore

        if self._results is None:
            path = self.review_path or self.export_dir / DEFAULT_REVIEW_FILE
            self._results = ResultStore(path)
            self.review_path = path
            self.review.set_store(ReviewStore.for_store(self._results))
        self.review.study_id = self._review_id(self.review.report)

    def _review_id(self, report: Report | None) -> str | None:
        """Store ``report`` for review (once) and return its study id."""
        if report is None or self._results is None:
            return None
        from ..review import store_for_review

        study = self._history[self._shown].study if self._shown is not None else None
        return store_for_review(self._results, report, sources=_paths_of(study))

    def _show_report(self, report: Report | None, caption: str = "") -> None:
        """Every report the panel shows goes through here, so review follows it."""
        study_id = None
        if report is not None and self.review.panel.review_mode and self._results is not None:
            try:
                study_id = self._review_id(report)
            except CxrWidgetsError as exc:
                self.review.panel.error = str(exc)
        self.review.show(study_id, report, caption)

    def _close_review_store(self) -> None:
        if self._results is not None:
            reviews = self.review.reviews
            self.review.set_store(None)
            if reviews is not None:
                reviews.close()
            self._results.close()
            self._results = None

    def close(self) -> None:
        self._close_review_store()
        super().close()

    # --- exports ---------------------------------------------------------------------
    def export(self, kinds: tuple[str, ...] = ("json", "csv", "png")) -> dict[str, Path]:
        """Write the shown report as JSON, CSV and annotated PNG; the paths (blocking).

        This writes files in ``export_dir`` whatever ``download_exports`` says
        (it is the notebook author's call); the buttons follow ``download_exports``.
        """
        paths = self._export_now(kinds)
        self.export_list.show(paths)
        return paths

    def start_export(self, kinds: tuple[str, ...]) -> Job | None:
        """What the export buttons do: write in the background and show the paths."""
        if self.runner.busy or self.report is None:
            return None
        shown = self._shown

        def done(paths: dict[str, Path], _job: Job) -> None:
            if self._shown == shown:  # still the report these files belong to
                self.export_list.show(paths)

        def downloaded(files: dict[str, tuple[str, bytes]], _job: Job) -> None:
            for kind, (name, data) in files.items():
                self.export_list.download(name, MEDIA_TYPES[kind], data)
            if self._shown == shown:
                names = {kind: name for kind, (name, _) in files.items()}
                self.export_list.show(names, downloaded=True)

        def failed(exc: BaseException, _job: Job) -> None:
            self.export_list.error = user_message(exc)

        label = f"Exporting {', '.join(k.upper() for k in kinds)}"
        if self.download_exports:
            return self.runner.start(label, lambda: self._export_files(kinds), downloaded, failed)
        return self.runner.start(label, lambda: self._export_now(kinds), done, failed)

    def _export_files(self, kinds: tuple[str, ...]) -> dict[str, tuple[str, bytes]]:
        """The shown report's exports as (file name, content), for the browser to save."""
        report, frontal, stem = self._export_what()
        return {
            kind: (
                f"{safe_stem(stem, max_length=MAX_FILE_STEM)}.{kind}",
                export_bytes(
                    report, frontal, kind, frame=self.frame, show_crop=self.viewer.show_crop
                ),
            )
            for kind in kinds
        }

    def _export_what(self) -> tuple[Report, Any, str]:
        """The shown report, its frontal image source and the exports' file stem."""
        report = self.report
        if report is None:
            raise CxrWidgetsError("nothing to export yet: generate a report first")
        run = self._shown + 1 if self._shown is not None else 0
        stem = f"{safe_stem(report.study_id)}-run{run}-{datetime.now():%Y%m%d-%H%M%S}"
        if self._shown is not None:
            frontal = self._history[self._shown].study.frontal_image
        else:
            frontal = self._given_image(report)
            if frontal is None:
                frontal = self.studypanel.slots["frontal"].source
        return report, frontal, stem

    def _given_image(self, report: Report) -> Any:
        """The image given to :meth:`show_report` with ``report``, if it is the one shown."""
        if self._given is not None and self._given[0] is report:
            return self._given[1]
        return None

    def _export_now(self, kinds: tuple[str, ...]) -> dict[str, Path]:
        report, frontal, stem = self._export_what()
        return export_report(
            report,
            frontal,
            self.export_dir,
            stem,
            kinds,
            frame=self.frame,
            show_crop=self.viewer.show_crop,
        )

    def _update_exports(self) -> None:
        for button in self.export_buttons.values():
            button.disabled = self.report is None or self.runner.busy
        shown = (id(self.report), self.viewer.caption)
        if shown != getattr(self, "_static_shown", None):  # the shown report changed
            self._static_shown = shown
            self._update_static_view()

    def _busy(self, busy: bool) -> None:
        self.generate_button.disabled = busy
        self.endpoint.use_button.disabled = busy
        self.endpoint.test_button.disabled = busy
        self._update_exports()


def _paths_of(study: Study | None) -> dict[str, str]:
    """The study's image files as given, by column (other sources are not recorded)."""
    if study is None:
        return {}
    return {
        column: os.fspath(value)
        for column in IMAGE_COLUMNS
        if isinstance(value := getattr(study, column, None), (str, os.PathLike))
    }


def _shape_differs(report_size: tuple[int, int] | None, shown: tuple[int, int]) -> bool:
    """True when the report's image and the shown one have clearly different shapes."""
    if not report_size or not all(report_size) or not all(shown):
        return False
    return abs((shown[0] / shown[1]) / (report_size[0] / report_size[1]) - 1) > 0.02
