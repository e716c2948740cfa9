"""StudyBrowser: a whole batch run in one widget, with reader review.

Left, the study table (``static/browser.js``, kind "table"): summary, a bar
chart of the most frequent findings, search, filters and a virtualised table
whose columns travel once (JSON) and whose order travels as an ``Int32Array``.
Right, the selected study in the image viewer (behind :class:`ViewerAdapter`,
the one place that knows which viewer is used), the review controls shared
with the report panel (:class:`~.review_panel.ReviewSession`: verdicts,
edited text, added findings, note; boxes are edited on the viewer's image)
and the study panel (kind "study"): texts, provenance and the error of a
failed study. Every review change is saved at once in the results file
(:class:`~cxr_widgets.review.ReviewStore`). Filtering and sorting run in
the kernel (:class:`~cxr_widgets.browse.StudyTable`); the images of the
next studies are read ahead in a thread (their values, as the viewer reads them).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anywidget
import ipywidgets as widgets
import numpy as np
import traitlets

from ..browse import SORT_COLUMNS, Filters, StudySources, StudyTable
from ..errors import CxrWidgetsError, ReviewError, StoreError
from ..report import Report
from ..review import ReviewStore, check_results_file
from ..study import IMAGE_COLUMNS, TEXT_COLUMNS
from .review_panel import ReviewSession

STATIC = Path(__file__).parent / "static"
#: Seconds between looks at the store for results a running batch wrote.
POLL_SECONDS = 1.5
#: Studies whose images are kept prepared (the shown one, the next, the previous ...).
IMAGE_CACHE = 6
VIEW_OF = {"frontal_image": "frontal", "lateral_image": "lateral", "prior_image": "prior"}


class ViewerAdapter:
    """The browser's only contact with the image viewer (today: :class:`ReportViewer`).

    To switch viewers, change this class: ``widget``, ``load`` and ``show``
    are all the browser uses (the review session talks to ``widget``).
    """

    def __init__(self) -> None:
        from .viewer import ReportViewer

        self.widget = ReportViewer()

    @staticmethod
    def load(source: Any, view: str) -> Any:
        """An image's own values, as the viewer reads them (safe in a worker thread)."""
        from ..images import load_pixels

        return load_pixels(source, name=f"{view}_image")

    def show(self, images: dict[str, Any], message: str) -> None:
        """The study's images by view (frontal, lateral, prior), read by :meth:`load`."""
        with self.widget.hold_sync():
            self.widget.set_images(
                images.get("frontal"), images.get("lateral"), images.get("prior")
            )
            if images.get("frontal") is None:  # say why, after the viewer's own default
                self.widget.message = message or "No image for this study."


class _Table(anywidget.AnyWidget):
    _esm = STATIC / "browser.js"
    _css = STATIC / "browser.css"
    kind = traitlets.Unicode("table").tag(sync=True)
    columns = traitlets.Dict().tag(sync=True)
    review = traitlets.Bytes(b"").tag(sync=True)  # uint8 per row: 0 none, 1 started, 2 reviewed
    order = traitlets.Bytes(b"").tag(sync=True)  # int32 row indices, current filter and sort
    count = traitlets.Int(0).tag(sync=True)
    summary = traitlets.Dict().tag(sync=True)
    bars = traitlets.List(traitlets.Dict()).tag(sync=True)
    search = traitlets.Unicode("").tag(sync=True)
    regex = traitlets.Bool(False).tag(sync=True)
    filters = traitlets.Dict().tag(sync=True)  # name -> "yes" | "no" (absent: any)
    reviewer_filter = traitlets.Unicode("").tag(sync=True)
    reviewers = traitlets.List(traitlets.Unicode()).tag(sync=True)
    finding = traitlets.Unicode("").tag(sync=True)
    sort = traitlets.Unicode("row").tag(sync=True)
    descending = traitlets.Bool(False).tag(sync=True)
    selected = traitlets.Int(-1).tag(sync=True)  # a row index
    message = traitlets.Unicode("").tag(sync=True)
    search_error = traitlets.Unicode("").tag(sync=True)


class _StudyPanel(anywidget.AnyWidget):
    _esm = STATIC / "browser.js"
    _css = STATIC / "browser.css"
    kind = traitlets.Unicode("study").tag(sync=True)
    study = traitlets.Dict().tag(sync=True)
    status = traitlets.Unicode("").tag(sync=True)  # re-sending a failed study
    error = traitlets.Unicode("").tag(sync=True)


class StudyBrowser(widgets.VBox):
    """Browse and review a whole run: ``StudyBrowser("results.sqlite", manifest="manifest.csv")``.

    ``source``: a results store (path or :class:`~cxr_widgets.store.ResultStore`),
    a :class:`~cxr_widgets.batch_result.BatchResult` of a run with a store, or
    the folder holding one ``*.sqlite`` store. ``manifest``: the run's CSV
    manifest (texts, and image paths when the store did not record them).
    ``reviewer``: the reader's name for review mode.
    """

    def __init__(self, source: Any, *, manifest: Any = None, reviewer: str | None = None) -> None:
        path = _store_path(source)
        check_results_file(path)
        self.path = path
        self._store = _open_store(source, path)
        self._owns_store = self._store is not source
        self.table = StudyTable(path)
        self._reviews = ReviewStore(path, reviewer=reviewer)
        self._manifest = manifest
        self._sources: StudySources | None = None
        self._sources_future: Future[StudySources] | None = None
        self.client: Any = None
        self._filters = Filters()
        self._only: frozenset[str] | None = None
        self._order = np.arange(len(self.table), dtype=np.int32)
        self._images: OrderedDict[str, Future[dict[str, Any]]] = OrderedDict()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cxr-browser")
        self._lock = threading.Lock()
        self._current: str | None = None
        self._report: Report | None = None
        self._poll_handle: Any = None
        self._closed = False
        self._batching = False
        self.warnings: list[str] = []

        self.viewer = ViewerAdapter()
        self._table = _Table()
        self._panel = _StudyPanel()
        self._reviews_version = self._reviews.data_version()
        self.review = ReviewSession(
            self.viewer.widget,
            reviews=self._reviews,
            reviewer=reviewer,
            on_saved=self._review_saved,
            on_reviewer=self._reviewer_changed,
            on_other_study=self.select,
        )
        self._table.observe(
            self._filters_changed,
            ["search", "regex", "filters", "reviewer_filter", "finding", "sort", "descending"],
        )
        self._table.observe(self._row_selected, "selected")
        self._panel.on_msg(self._on_action)
        self._table.on_msg(self._on_table_action)
        self._right = right = widgets.VBox(
            [self._panel, self.viewer.widget, self.review.panel],
            # min_width 0: below the table when narrow, and then as narrow as the notebook.
            layout=widgets.Layout(flex="1 1 520px", min_width="0"),
        )
        self._body = body = widgets.HBox(
            [self._table, right],
            layout=widgets.Layout(align_items="flex-start", flex_flow="row wrap"),
        )
        super().__init__([body])
        self.add_class("cxr-browser")
        self._table.layout = widgets.Layout(flex="1 1 440px", min_width="0")
        self._refresh_reviews()
        self._send_table()
        self._update_order()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None:  # a script or test: everything before returning
            self._finish_open()
        else:
            # In a notebook the table is shown first; the manifest is read, image paths
            # checked and the first study shown right after the cell returns.
            self._sources_future = self._pool.submit(self._read_sources)
            loop.call_soon(self._finish_open)
        self._schedule_poll()

    def _read_sources(self) -> StudySources:
        get_sources = getattr(self._store, "get_sources", None)
        return StudySources(get_sources, self.table.study_ids, self._manifest)

    def _finish_open(self) -> None:
        try:
            self.warnings = list(self.sources.warnings)
        except CxrWidgetsError as exc:
            if self._sources_future is None:
                raise
            # Read after the cell returned: the page shows the error.
            self._table.message = f"the manifest could not be read: {exc}"
            self._sources = StudySources(getattr(self._store, "get_sources", None), [], None)
        self._check_images()
        if len(self._order) and self._current is None:
            self.select(self.table.study_ids[int(self._order[0])])

    @property
    def sources(self) -> StudySources:
        """Where each study's images are (the store's records, else the manifest)."""
        if self._sources is None:
            if self._sources_future is not None:
                self._sources = self._sources_future.result()
            else:
                self._sources = self._read_sources()
        return self._sources

    # --- public API -----------------------------------------------------------------

    @property
    def reviews(self) -> ReviewStore:
        """The reviews in this store (reviewer: the browser's)."""
        return self._reviews

    @property
    def reviewer(self) -> str | None:
        return self._reviews.reviewer

    @reviewer.setter
    def reviewer(self, name: str | None) -> None:
        self.review.panel.reviewer = name or ""

    @property
    def review_mode(self) -> bool:
        return self.review.panel.review_mode

    @review_mode.setter
    def review_mode(self, on: bool) -> None:
        self.review.panel.review_mode = bool(on)

    @property
    def study_ids(self) -> list[str]:
        """The study ids in the current filter and sort order."""
        ids = self.table.study_ids
        return [ids[i] for i in self._order.tolist()]

    @property
    def selected(self) -> str | None:
        return self._current

    @property
    def report(self) -> Report | None:
        """The report of the selected study (None for a failed one)."""
        return self._report

    def search(self, text: str, *, regex: bool = False) -> list[str]:
        """Show the studies whose findings match ``text`` (words, or a regular expression)."""
        with self._quiet():
            self._table.regex = regex
            self._table.search = text
        self._filters_changed()
        if self._table.search_error:
            raise ValueError(self._table.search_error)
        return self.study_ids

    def filter(self, **filters: Any) -> list[str]:
        """Set filters: ``has_boxes``, ``no_findings``, ``failed``, ``reviewed`` (True/False/None),
        ``reviewer`` (a name or None), ``finding`` (a normalised finding text or None),
        ``only`` (study ids, e.g. ``Evaluation.disagreements``, or None for all)."""
        names = {"has_boxes", "no_findings", "failed", "reviewed", "reviewer", "finding", "only"}
        unknown = set(filters) - names
        if unknown:
            raise TypeError(f"unknown filter {sorted(unknown)}; use {', '.join(sorted(names))}")
        flags = dict(self._table.filters)
        with self._quiet():
            for name, value in filters.items():
                if name == "only":
                    self._only = None if value is None else frozenset(map(str, value))
                elif name == "reviewer":
                    self._table.reviewer_filter = value or ""
                elif name == "finding":
                    self._table.finding = value or ""
                elif value is None:
                    flags.pop(name, None)
                else:
                    flags[name] = "yes" if value else "no"
            self._table.filters = flags
        self._filters_changed()
        return self.study_ids

    def sort_by(self, column: str, descending: bool = False) -> list[str]:
        if column not in SORT_COLUMNS:
            raise ValueError(f"sort by one of {', '.join(SORT_COLUMNS)}, got {column!r}")
        with self._quiet():
            self._table.sort = column
            self._table.descending = descending
        self._filters_changed()
        return self.study_ids

    def select(self, study_id: str) -> None:
        """Show ``study_id`` (it need not be in the current filter)."""
        row = self.table.index_of.get(study_id)
        if row is None:
            raise KeyError(f"study {study_id!r} is not in {self.path}")
        if self._table.selected != row:
            self._table.selected = row  # _row_selected shows it
        elif self._current != study_id:
            self._show(study_id)

    def next(self, step: int = 1) -> str | None:
        """Select the next study in the current order (``step=-1``: the previous)."""
        order = self._order.tolist()
        if not order:
            return None
        row = self._table.selected
        position = order.index(row) + step if row in order else 0
        position = min(max(position, 0), len(order) - 1)
        self.select(self.table.study_ids[order[position]])
        return self._current

    def previous(self) -> str | None:
        return self.next(-1)

    def refresh(self) -> bool:
        """Read results and reviews written since the last look; True when something changed."""
        changed = self.table.refresh()
        version = self._reviews.data_version()
        if version != self._reviews_version:  # another browser or process saved reviews
            self._reviews_version = version
            self._refresh_reviews()
        if changed:
            self._send_table()
            self._update_order()
            if self._current is not None and self._report is None:
                self._show(self._current)  # a failed study may have been answered
        return changed

    def relocate(self, folder: str | Path) -> int:
        """Look for moved images under ``folder`` (by file name); how many were found."""
        found = self.sources.relocate(folder, self.table.study_ids)
        with self._lock:
            self._images.clear()
        self._check_images()
        if self._current is not None:
            self._show(self._current)
        return found

    def missing_images(self) -> dict[str, list[str]]:
        """Studies whose image files are not where the store or manifest says."""
        return self.sources.missing(self.table.study_ids)

    def resend(self, study_id: str | None = None, client: Any = None) -> Future[Any]:
        """Send a failed study again with ``client`` (default: ``browser.client``).

        Runs in the background; the answer is stored in the same results file
        and appears in the table. Returns the future of the run.
        """
        study_id = study_id or self._current
        if study_id is None:
            raise ReviewError("select a failed study first")
        client = client or self.client or self._default_client()
        study = self._study(study_id)
        from ..batch import run_batch

        def run() -> Any:
            return run_batch([study], client, store=self.path, progress=False)

        future = self._pool.submit(run)
        self._panel.status = f"re-sending {study_id} to {client.label} ..."
        future.add_done_callback(lambda f: self._resent(study_id, f))
        return future

    def close(self) -> None:
        if not hasattr(self, "_pool"):  # __init__ failed before the widget existed
            return
        self._closed = True
        if self._poll_handle is not None:
            self._poll_handle.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.table.close()
        self._reviews.close()
        if self._owns_store:
            self._store.close()
        # Containers first: an open box holding a closed widget cannot be serialised.
        widgets_ = (self._body, self._right, self.viewer.widget, self.review.panel)
        for widget in (*widgets_, self._table, self._panel):
            with contextlib.suppress(Exception):
                widget.close()
        super().close()

    def __repr__(self) -> str:
        return (
            f"<StudyBrowser {self.path.name}: {len(self.table)} studies, "
            f"{len(self._order)} shown, reviewer {self.reviewer!r}>"
        )

    # --- the table ------------------------------------------------------------------

    def _send_table(self) -> None:
        with self._table.hold_sync():
            self._table.columns = self.table.columns()
            self._table.summary = self.table.summary()
            self._table.bars = [{"text": t, "count": n} for t, n in self.table.top_findings()]
            self._send_reviews()

    def _send_reviews(self, reviewers: bool = True) -> None:
        self._table.review = self.table.review.tobytes()
        if reviewers:
            self._table.reviewers = self._reviews.reviewers()
        self._table.summary = self.table.summary()

    def _refresh_reviews(self) -> None:
        who = self._reviews.reviewer
        state = self._reviews.status(who)
        reviewers_of: dict[str, set[str]] = {}
        for name in self._reviews.reviewers():
            for sid in self._reviews.status(name):
                reviewers_of.setdefault(sid, set()).add(name)
        self.table.set_reviews(state, reviewers_of)
        self._send_reviews()

    @contextlib.contextmanager
    def _quiet(self) -> Any:
        """Set several table traits with one recomputation (by the caller) afterwards."""
        self._batching = True
        try:
            yield
        finally:
            self._batching = False

    def _filters_changed(self, change: Any = None) -> None:
        if change is not None and self._batching:
            return
        t = self._table
        flags = {k: v == "yes" for k, v in t.filters.items() if v in ("yes", "no")}
        self._filters = Filters(
            search=t.search,
            regex=t.regex,
            has_boxes=flags.get("has_boxes"),
            no_findings=flags.get("no_findings"),
            failed=flags.get("failed"),
            reviewed=flags.get("reviewed"),
            reviewer=t.reviewer_filter or None,
            finding=t.finding or None,
            only=self._only,
        )
        self._update_order()

    def _update_order(self) -> None:
        t = self._table
        try:
            order = self.table.order(
                self._filters, t.sort if t.sort in SORT_COLUMNS else "row", t.descending
            )
            t.search_error = ""
        except ValueError as exc:
            t.search_error = str(exc)
            return
        self._order = order
        with t.hold_sync():
            t.order = order.astype("<i4").tobytes()
            t.count = len(order)

    def _row_selected(self, change: dict[str, Any]) -> None:
        row = change["new"]
        if 0 <= row < len(self.table):
            self._show(self.table.study_ids[row])

    def _on_table_action(self, _widget: Any, content: dict[str, Any], _buffers: Any) -> None:
        if content.get("action") == "step":
            self.next(int(content.get("step", 1)))

    # --- one study ------------------------------------------------------------------

    def _study(self, study_id: str) -> Any:
        from ..study import Study

        study = self.sources.studies.get(study_id)
        paths = self.sources.paths(study_id)
        if "frontal_image" not in paths:
            raise StoreError(
                f"no image paths for {study_id!r}: the store did not record them and no "
                "manifest lists the study; open the browser with manifest='...csv'."
            )
        texts = {name: getattr(study, name) for name in TEXT_COLUMNS} if study else {}
        return Study(**{c: paths.get(c) for c in IMAGE_COLUMNS}, **texts, study_id=study_id)

    def _load_images(self, study_id: str) -> dict[str, Any]:
        """Each view's values read from its recorded source, and problems by view (runs
        in the worker thread, so the viewer only draws what was read ahead)."""
        images: dict[str, Any] = {}
        problems: dict[str, str] = {}
        for column, path in self.sources.paths(study_id).items():
            view = VIEW_OF.get(column)
            if view is None:
                continue
            if not Path(path).is_file():
                problems[view] = (
                    f"the {view} image {path} is missing (moved?); use browser.relocate(folder)"
                )
                continue
            try:
                images[view] = ViewerAdapter.load(path, view)
            except CxrWidgetsError as exc:
                problems[view] = f"the {view} image could not be read: {exc}"
        return {"images": images, "problems": problems}

    def _images_for(self, study_id: str) -> Future[dict[str, Any]]:
        with self._lock:
            future = self._images.get(study_id)
            if future is None:
                future = self._pool.submit(self._load_images, study_id)
                self._images[study_id] = future
            self._images.move_to_end(study_id)
            while len(self._images) > IMAGE_CACHE:
                self._images.popitem(last=False)
            return future

    def _prefetch(self) -> None:
        order = self._order.tolist()
        row = self.table.index_of.get(self._current or "", -1)
        if row not in order:
            return
        position = order.index(row)
        for step in (1, -1, 2):
            if 0 <= position + step < len(order):
                self._images_for(self.table.study_ids[order[position + step]])

    def _show(self, study_id: str) -> None:
        self._current = study_id
        row = self.table.index_of[study_id]
        report = self._stored_report(row)
        self._report = report
        try:
            loaded = self._images_for(study_id).result()
        except Exception as exc:  # a worker failure must not break browsing
            loaded = {"images": {}, "problems": {"frontal": str(exc)}}
        problems = loaded["problems"]
        message = problems.get("frontal", "") or (
            "" if loaded["images"] else "no image recorded for this study"
        )
        caption = f"{study_id}" + (" · " + "; ".join(problems.values()) if problems else "")
        with self.viewer.widget.hold_sync():
            self.viewer.show(loaded["images"], message)
            self.review.show(study_id, report, caption)
        self._send_study(study_id, row, report, loaded)
        self._prefetch()

    def _stored_report(self, row: int) -> Report | None:
        entry = self.table.rows[row]
        if not entry.ok:
            return None
        result = self._store.get(entry.key) if hasattr(self._store, "get") else None
        return result.report if result is not None else None

    def _send_study(
        self, study_id: str, row: int, report: Report | None, loaded: dict[str, Any]
    ) -> None:
        entry = self.table.rows[row]
        study = self.sources.studies.get(study_id)
        texts = {
            name: getattr(study, name) for name in TEXT_COLUMNS if study and getattr(study, name)
        }
        provenance: dict[str, Any] = {}
        if report is not None:
            provenance = {
                "source": report.source,
                "request id": report.request_id or "",
                "created": report.created,
                "image size": "x".join(map(str, report.image_size)) if report.image_size else "",
                "demo": "yes (canned findings)" if report.demo else "no",
            }
            extra = getattr(report, "provenance", None)
            if extra is not None:
                provenance.update({k: str(v) for k, v in extra.to_dict().items() if v})
        self._panel.study = {
            "study_id": study_id,
            "ok": entry.ok,
            "error": entry.error,
            "texts": texts,
            "provenance": provenance,
            "sources": self.sources.paths(study_id),
            "problems": loaded["problems"],
            "warnings": list(report.warnings) if report else [],
            "demo": bool(report and report.demo),
        }

    # --- review (the shared review session saves; the table follows) ----------------

    def _reviewer_changed(self) -> None:
        self._refresh_reviews()

    def _review_saved(self, study_id: str, state: str | None) -> None:
        """One study's review changed: update its row of the table, and send only that."""
        who = self._reviews.reviewer
        if state is None or who is None:  # undo in another study: read it again
            state = self._reviews.status(who).get(study_id) if who else None
        known = who in self._table.reviewers
        if self.table.set_review(study_id, state, who) or not known:
            with self._table.hold_sync():
                self._send_reviews(reviewers=not known)

    def _on_action(self, _widget: Any, content: dict[str, Any], _buffers: Any) -> None:
        action = content.get("action")
        if action == "step":
            self.next(int(content.get("step", 1)))
        elif action == "resend":
            try:
                self.resend()
            except CxrWidgetsError as exc:
                self._panel.error = str(exc)

    # --- background -----------------------------------------------------------------

    def _check_images(self) -> None:
        missing = self.missing_images()
        self.warnings = [w for w in self.warnings if "not where" not in w]
        if missing:
            first = next(iter(missing.items()))
            self.warnings.append(
                f"images of {len(missing)} studies are not where they were recorded "
                f"(e.g. {first[0]}: {first[1][0]}); if they moved, call "
                "browser.relocate('/new/folder')."
            )
        self._table.message = " ".join(self.warnings)

    def _default_client(self) -> Any:
        """The demo backend for a demo run; a real run needs ``browser.client``."""
        first = next((i for i, row in enumerate(self.table.rows) if row.ok), None)
        report = self._stored_report(first) if first is not None else None
        if report is None or report.demo:
            from ..demo import DemoBackend

            return DemoBackend()
        raise ReviewError("set browser.client = ReportGenClient(...) to re-send to your endpoint")

    def _resent(self, study_id: str, future: Future[Any]) -> None:
        try:
            result = future.result()
            text = f"{study_id}: {result.ok} answered, {result.failed} failed"
        except Exception as exc:
            text = f"{study_id} could not be re-sent: {exc}"
        self._panel.status = text

    def _schedule_poll(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no event loop (a script): call refresh() yourself
        self._poll_handle = loop.call_later(POLL_SECONDS, self._poll)

    def _poll(self) -> None:
        if self._closed:
            return
        try:
            self.refresh()
        except StoreError as exc:
            self._table.message = str(exc)
        try:
            self._poll_handle = asyncio.get_event_loop().call_later(POLL_SECONDS, self._poll)
        except RuntimeError:
            self._poll_handle = None


def _store_path(source: Any) -> Path:
    path = getattr(source, "store_path", None)
    if type(source).__name__ == "BatchResult":
        if not path:
            raise StoreError(
                "this run kept no store, so there is nothing to browse or review; run it with "
                "run_batch(..., store='results.sqlite')."
            )
        return Path(path)
    if hasattr(source, "path") and not isinstance(source, (str, Path)):
        return Path(source.path)
    path = Path(source)
    if path.is_dir():
        stores = sorted(path.glob("*.sqlite"))
        if len(stores) != 1:
            raise StoreError(
                f"{path} holds {len(stores)} .sqlite files; give the results store's file name."
            )
        return stores[0]
    return path


def _open_store(source: Any, path: Path) -> Any:
    from ..store import ResultStore

    if isinstance(source, ResultStore):
        return source
    return ResultStore(path)
