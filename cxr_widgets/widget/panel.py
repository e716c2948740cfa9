"""ReportGenWidget: endpoint, study and results in one panel.

It collects input, calls the core (:class:`~cxr_widgets.backend.ReportGenerator`)
and shows the result; it holds no wire-format, image or HTTP logic.
"""

from __future__ import annotations

import html
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import ipywidgets as widgets

from ..backend import ReportGenerator
from ..errors import CxrWidgetsError, StudyError
from ..local.demo_findings import DEMO_CHOICE
from ..report import RESEARCH_NOTICE, Report
from ..study import Study
from .endpoint_panel import EndpointPanel, _message
from .exports import export_report
from .history import RunRecord, run_label, study_summary
from .runner import Job, Runner
from .study_panel import StudyPanel
from .viewer import ReportViewer

#: The demo backend's simulated model time, so the spinner is seen.
DEMO_LATENCY = 0.8
DEFAULT_EXPORT_DIR = "cxr-exports"
DEMO_BADGE = "DEMO backend · offline, no model (each answer says what it is)"


class ReportGenWidget(widgets.VBox):
    """Configure an endpoint, load a study, generate and explore grounded findings.

    ``client``: any ReportGenerator (``ReportGenClient``, ``DemoBackend``, ...);
    None uses the demo backend with a small visible latency. ``max_upload_mb``
    limits uploads through the browser (larger files: give a server-side path).
    Exports go to ``export_dir`` (relative to the notebook's working directory).
    """

    def __init__(
        self,
        client: ReportGenerator | None = None,
        *,
        max_upload_mb: float = 200,
        export_dir: str | Path = DEFAULT_EXPORT_DIR,
        demo_latency: float = DEMO_LATENCY,
    ) -> None:
        self._client: ReportGenerator | None = None
        self._history: list[RunRecord] = []
        self._shown: int | None = None  # index into history of what the viewer shows
        self.export_dir = Path(export_dir)
        self.demo_latency = demo_latency

        self.runner = Runner(on_busy=self._busy)
        self.viewer = ReportViewer()
        self.header = widgets.HTML("").add_class("cxr-header-html")
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
            request_budget=self._request_budget,
        )
        self.generate_button = widgets.Button(
            description="Generate",
            icon="play",
            button_style="primary",
            tooltip="Send the study to the active endpoint",
        ).add_class("cxr-generate")
        self.generate_button.on_click(lambda _: self.start_generate())
        self.run_error = widgets.HTML("")
        self.history_select = widgets.Dropdown(
            options=[("no runs yet", -1)], value=-1, layout=widgets.Layout(width="auto")
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
                ("json", "JSON", "The report as JSON"),
                ("csv", "CSV", "One row per finding and box"),
                ("png", "PNG", "The frontal image at full resolution with the boxes"),
            )
        }
        for kind, button in self.export_buttons.items():
            button.on_click(lambda _, kind=kind: self.start_export((kind,)))
        self.export_paths = widgets.HTML("").add_class("cxr-exports")

        headbar = widgets.HBox(
            [self.header, self.endpoint_toggle],
            layout=widgets.Layout(justify_content="space-between"),
        ).add_class("cxr-headbar")
        run_bar = widgets.HBox(
            [self.generate_button, self.runner.cancel_button, self.runner.status],
            layout=widgets.Layout(align_items="center"),
        )
        history_bar = widgets.HBox(
            [
                widgets.Label("History"),
                self.history_select,
                widgets.Label("Export"),
                *self.export_buttons.values(),
            ],
            layout=widgets.Layout(align_items="center", flex_flow="row wrap"),
        )
        results = widgets.VBox(
            [
                widgets.HTML("<div class='cxr-section-title'>Results</div>"),
                run_bar,
                self.run_error,
                self.viewer,
                history_bar,
                self.export_paths,
            ],
            # Below the study form when the notebook is too narrow for both side by side.
            layout=widgets.Layout(flex="1 1 360px", min_width="360px"),
        ).add_class("cxr-results")
        body = widgets.HBox(
            [self.studypanel.box, results],
            layout=widgets.Layout(align_items="flex-start", flex_flow="row wrap"),
        )
        super().__init__([headbar, self.endpoint.box, body])
        self.add_class("cxr-widget")
        self.client = client if client is not None else self._demo()

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
        self._client = client
        self._render_header()
        self.studypanel._update_size()

    def _apply_client(self, client: ReportGenerator) -> None:
        self.client = client

    def _render_header(self) -> None:
        client = self.client
        tip = html.escape(DEMO_CHOICE, quote=True)
        badge = (
            f"<span class='cxr-demo-badge' title='{tip}'>{DEMO_BADGE}</span>"
            if client.is_demo
            else ""
        )
        self.header.value = (
            "<div class='cxr-header'><span class='cxr-title'>CXRReportGen</span>"
            f"{badge}<span class='cxr-endpoint-label'>endpoint: "
            f"<b>{html.escape(client.label)}</b></span>"
            f"<span class='cxr-research'>{RESEARCH_NOTICE}</span></div>"
        )

    def _request_budget(self) -> int | None:
        config = getattr(self._client, "config", None)
        return getattr(config, "max_request_bytes", None)

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
            self.endpoint.show_result(f"Test failed: {_message(exc)}", ok=False)

        self.endpoint.result.value = ""
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
        """Fill the form from ``study``; its images are prepared and shown."""
        self.studypanel.load_study(study)

    def _study_changed(self) -> None:
        prepared = self.studypanel.prepared
        self._shown = None
        self.viewer.set_images(
            *(
                getattr(prepared.get(c), "image", None)
                for c in ("frontal_image", "lateral_image", "prior_image")
            )
        )
        self.viewer.set_report(None)
        self._set_history_value(-1)
        self._update_exports()

    # --- generating -------------------------------------------------------------------
    def generate(self) -> Report:
        """Generate for the loaded study, blocking; the report is shown and returned."""
        self._check_idle()
        study = self.study
        started = time.monotonic()
        try:
            report = self.client.generate(study)
        except Exception as exc:
            self._show_error(exc)
            raise
        self._record(study, report, time.monotonic() - started)
        return report

    async def agenerate(self) -> Report:
        """:meth:`generate` for ``await`` in notebooks: the kernel keeps serving."""
        self._check_idle()
        study = self.study
        started = time.monotonic()
        try:
            report = await self.client.agenerate(study)
        except Exception as exc:
            self._show_error(exc)
            raise
        self._record(study, report, time.monotonic() - started)
        return report  # type: ignore[return-value]

    def start_generate(self) -> Job | None:
        """What the Generate button does: generate in the background with a spinner."""
        if self.runner.busy:
            return None
        try:
            study = self.study
        except StudyError:
            return None  # the study panel shows why
        client = self.client
        self.run_error.value = ""

        def done(report: Report, job: Job) -> None:
            self._record(study, report, job.elapsed)

        def failed(exc: BaseException, _job: Job) -> None:
            self._show_error(exc)

        return self.runner.start(
            f"Generating on {client.label}", lambda: client.generate(study), done, failed
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
        self.run_error.value = (
            f"<div class='cxr-run-error'><b>Generation failed.</b> "
            f"{html.escape(_message(exc))}{kept}</div>"
        )

    def _record(self, study: Study, report: Report, seconds: float) -> None:
        record = RunRecord(
            summary=study_summary(study, self.studypanel.prepared),
            report=report,
            study=study,
            when=datetime.now(),
            endpoint=self.client.label,
            seconds=seconds,
        )
        self._history.append(record)
        self.run_error.value = ""
        self._refresh_history_options()
        self._show_record(len(self._history) - 1)

    # --- showing --------------------------------------------------------------------
    @property
    def report(self) -> Report | None:
        """The report shown in the viewer (None before the first generation)."""
        return self.viewer.report

    @property
    def history(self) -> list[RunRecord]:
        """Every generation of this session: (summary, report, study, when, endpoint, seconds)."""
        return list(self._history)

    def select_finding(self, index: int | None) -> None:
        """Highlight finding ``index`` (zero-based) and its boxes; None clears."""
        self.viewer.select(index)

    @property
    def selected_finding(self) -> int | None:
        return None if self.viewer.selected < 0 else self.viewer.selected

    def show_report(self, report: Report, caption: str = "") -> None:
        """Show any report (e.g. loaded from JSON) over its own or the loaded frontal image."""
        frontal = report.frontal_image
        if frontal is None:
            prepared = self.studypanel.prepared.get("frontal_image")
            frontal = getattr(prepared, "image", None)
        with self.viewer.hold_sync():
            if frontal is not None and frontal is not self.viewer._pictures.get("frontal"):
                self.viewer.set_images(frontal)
            self.viewer.set_report(report, caption)
            if frontal is not None and _shape_differs(report.image_size, frontal.size):
                self.viewer.warnings = [
                    *self.viewer.warnings,
                    f"the report was made for a {report.image_size[0]}x{report.image_size[1]} "
                    f"image but is shown on a {frontal.size[0]}x{frontal.size[1]} one: the "
                    "boxes may be misplaced",
                ]
        self._update_exports()

    def _show_record(self, index: int) -> None:
        record = self._history[index]
        self._shown = index
        prepared = getattr(record.report, "frontal_image", None)
        with self.viewer.hold_sync():
            images = self._record_images(record)
            if prepared is not None:
                images[0] = prepared
            self.viewer.set_images(*images)
            self.viewer.set_report(
                record.report,
                f"run {index + 1}: {record.summary}, {record.endpoint}, {record.seconds:.1f} s",
            )
        self._set_history_value(index)
        self._update_exports()

    def _record_images(self, record: RunRecord) -> list[Any]:
        """The run's frontal/lateral/prior as prepared now in the form, when they are the same."""
        images: list[Any] = []
        for slot in ("frontal", "lateral", "prior"):
            form = self.studypanel.slots[slot]
            same = form.source is not None and form.source is getattr(record.study, f"{slot}_image")
            images.append(form.prepared.image if same else None)
        return images

    def _refresh_history_options(self) -> None:
        total = len(self._history)
        options = [(run_label(r, i + 1, total), i) for i, r in enumerate(self._history)]
        self.history_select.unobserve(self._pick_history, "value")
        self.history_select.options = [("current study (not generated)", -1), *options]
        self.history_select.value = self._shown if self._shown is not None else -1
        self.history_select.observe(self._pick_history, "value")

    def _set_history_value(self, value: int) -> None:
        if not self._history:
            return
        self.history_select.unobserve(self._pick_history, "value")
        self.history_select.value = value
        self.history_select.observe(self._pick_history, "value")

    def _pick_history(self, change: dict[str, Any]) -> None:
        if change["new"] is not None and change["new"] >= 0:
            self._show_record(change["new"])

    def clear(self) -> None:
        """Clear the viewer's report (the study and the history stay)."""
        self.viewer.set_report(None)
        self._shown = None
        self._set_history_value(-1)
        self._update_exports()

    # --- exports ---------------------------------------------------------------------
    def export(self, kinds: tuple[str, ...] = ("json", "csv", "png")) -> dict[str, Path]:
        """Write the shown report as JSON, CSV and annotated PNG; the paths (blocking)."""
        paths = self._export_now(kinds)
        self._show_paths(paths)
        return paths

    def start_export(self, kinds: tuple[str, ...]) -> Job | None:
        """What the export buttons do: write in the background and show the paths."""
        if self.runner.busy or self.report is None:
            return None

        def failed(exc: BaseException, _job: Job) -> None:
            self.export_paths.value = (
                f"<div class='cxr-error'>Export failed: {html.escape(_message(exc))}</div>"
            )

        return self.runner.start(
            f"Exporting {', '.join(k.upper() for k in kinds)}",
            lambda: self._export_now(kinds),
            lambda paths, _job: self._show_paths(paths),
            failed,
        )

    def _export_now(self, kinds: tuple[str, ...]) -> dict[str, Path]:
        report = self.report
        if report is None:
            raise CxrWidgetsError("nothing to export yet: generate a report first")
        run = self._shown + 1 if self._shown is not None else 0
        stem = f"{report.study_id or 'study'}-run{run}-{datetime.now():%Y%m%d-%H%M%S}"
        frontal = (
            self._history[self._shown].study.frontal_image if self._shown is not None else None
        )
        return export_report(
            report,
            frontal,
            self.export_dir,
            stem,
            kinds,
            frame=self.viewer.frame,
            show_crop=self.viewer.show_crop,
        )

    def _show_paths(self, paths: dict[str, Path]) -> None:
        items = "".join(
            f"<div>{kind.upper()}: <code>{html.escape(str(path))}</code></div>"
            for kind, path in paths.items()
        )
        self.export_paths.value = f"<div class='cxr-note'>Written: {items}</div>"

    def _update_exports(self) -> None:
        for button in self.export_buttons.values():
            button.disabled = self.report is None or self.runner.busy

    def _busy(self, busy: bool) -> None:
        self.generate_button.disabled = busy
        self.endpoint.use_button.disabled = busy
        self.endpoint.test_button.disabled = busy
        self._update_exports()


def _shape_differs(report_size: tuple[int, int] | None, shown: tuple[int, int]) -> bool:
    """True when the report's image and the shown one have clearly different shapes."""
    if not report_size or not all(report_size) or not all(shown):
        return False
    return abs((shown[0] / shown[1]) / (report_size[0] / report_size[1]) - 1) > 0.02
