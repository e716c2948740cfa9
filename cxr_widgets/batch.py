"""Many studies through one endpoint: grouping, packing, concurrency, resume.

:func:`run_batch` prepares studies in a small thread pool while earlier
requests are in flight, packs studies that fill the same columns into
requests of up to ``batch_size`` (10 at most) within the backend's request
budget (sizes from the contract, exact), and keeps several requests in flight.
The number in flight adapts (AIMD) to the 429 answers the client meets.

Retries belong to the client (``retry.py``). A request that still ends in
429 after them while the endpoint serves this run (it has answered, or holds
requests of it that met no 429) met the endpoint's queue limit as the run was
finding it (long requests outlast the client's retries): the limit comes down
to what the endpoint holds, and the request is queued once more, to be sent
when an answer frees a place, never a second time. Otherwise its studies are recorded
as failed (sent again by the next run), and after :data:`MAX_BUSY_REQUESTS`
such requests in a row, or when the endpoint asks to wait longer than the
client may, the run stops with a message saying so. A request is therefore tried at most
``2 * client.max_attempts`` times, and a 429 storm (nothing answered) costs at
most ``client.max_attempts`` attempts per request and
``(MAX_BUSY_REQUESTS + max_in_flight - 1) * client.max_attempts`` per run.

With a ``store`` every answered request is committed at once, so a run that
is interrupted (Ctrl-C, SIGTERM, a full disk) and started again sends only
what is missing. Resuming without re-preparing: a study's store key is a hash
of its *prepared* images; the store remembers, per image content (a SHA-256
of the file's bytes, with the image options and package version), the digest
of the prepared PNG. A resumed run reads and hashes each file (far cheaper
than decoding and resizing it) and skips stored studies without preparing
them. Nothing is reused on the strength of a file's name, size or time.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from .adaptive import ConcurrencyController, check_cap, default_max_in_flight
from .backend import ReportGenerator
from .batch_result import BatchResult, StudyFailure
from .contract import (
    MAX_STUDIES_PER_REQUEST,
    EncodedStudy,
    PreparedRequest,
    assemble_request,
    request_size,
)
from .errors import (
    BadRequestError,
    ConfigError,
    CxrWidgetsError,
    DeadlineExceededError,
    EndpointAuthError,
    EndpointBusyError,
    EndpointError,
    EndpointNotFoundError,
    ModelError,
    RequestError,
    RequestTooLargeError,
    ResponseFormatError,
    StoreError,
)
from .prepare_pool import PreparePool, default_workers
from .report import Report
from .store import ResultStore, content_fingerprint, study_key
from .study import IMAGE_COLUMNS, Study

__all__ = [
    "DEFAULT_MAX_IN_FLIGHT",
    "MAX_BUSY_REQUESTS",
    "BatchResult",
    "ConcurrencyController",
    "StudyFailure",
    "prepared_key",
    "run_batch",
]

logger = logging.getLogger(__name__)

#: Errors after which every further request would fail too: the run stops.
FATAL_ERRORS = (EndpointAuthError, EndpointNotFoundError, ConfigError, StoreError)
#: Errors one bad study in a request can cause: the request is split to find it. (Never
#: size: requests are packed within the budget, and one study over it is sent alone.)
SPLIT_ERRORS = (BadRequestError, ModelError, ResponseFormatError, RequestTooLargeError)
#: Requests in a row that end in 429 after the client's own retries: then the run stops.
MAX_BUSY_REQUESTS = 3
#: Default cap on requests in flight: what this machine affords (see
#: :func:`~cxr_widgets.adaptive.default_max_in_flight`); the run finds the endpoint's level.
DEFAULT_MAX_IN_FLIGHT = default_max_in_flight()
#: How often the run looks at the client's 429 count between completions.
POLL_SECONDS = 0.1


# --- internal bookkeeping ------------------------------------------------------------


@dataclass
class _Item:
    """A prepared study waiting for (or in) a request."""

    index: int
    key: str
    encoded: EncodedStudy


@dataclass
class _Batch:
    items: list[_Item]
    sequence: int = -1
    sent_at: float = 0.0
    requeued: bool = False  # queued again once after a 429 (see the module's docstring)
    thread: int | None = None  # the sender thread, once it sends
    busy_before: int | None = None  # the client's 429 count for that thread by then
    after_answers: int = 0  # not sent before the run has had this many answers

    def studies(self) -> list[EncodedStudy]:
        return [item.encoded for item in self.items]


class _Stats:
    """The client's counters (ReportGenClient.stats), read as deltas from the start."""

    def __init__(self, client: ReportGenerator) -> None:
        self._stats = getattr(client, "stats", None)
        self._start = self._read()
        self.last = dict(self._start)
        self.counts_busy = "busy" in self._start

    def _read(self) -> dict[str, int]:
        if self._stats is None or not hasattr(self._stats, "snapshot"):
            return {}
        try:
            return dict(self._stats.snapshot())
        except Exception:
            return {}

    def congestion(self) -> bool:
        """True when the client met a busy answer (or, lacking that count, retried) lately."""
        now = self._read()
        name = "busy" if "busy" in now else "retries"
        grew = now.get(name, 0) > self.last.get(name, 0)
        self.last = now
        return grew

    def delta(self, name: str) -> int:
        return self._read().get(name, 0) - self._start.get(name, 0)

    def busy_in(self, thread: int) -> int | None:
        """The client's 429 count for requests sent from ``thread``; None if it keeps none."""
        counts = getattr(self._stats, "busy_in", None)
        return counts(thread) if counts is not None else None


def _sources(studies: Iterable[Study]) -> dict[str, dict[str, str]]:
    """Each study's image paths as given (``{study_id: {column: path}}``); no pixels, no tags."""
    sources: dict[str, dict[str, str]] = {}
    for study in studies:
        paths = {
            column: os.fspath(getattr(study, column))
            for column in study.columns
            if column in IMAGE_COLUMNS and isinstance(getattr(study, column), (str, os.PathLike))
        }
        if study.study_id and paths:
            sources[study.study_id] = paths
    return sources


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _key_columns(encoded: EncodedStudy) -> dict[str, str]:
    columns = {}
    for column, value in zip(encoded.columns, encoded.row, strict=True):
        if column in IMAGE_COLUMNS:
            columns[column] = _digest(encoded.images[column].png)
        else:
            columns[column] = value
    return columns


def prepared_key(
    encoded: EncodedStudy, identity: str, image_options: dict[str, Any] | None = None
) -> str:
    """The store key of an encoded study (see :func:`cxr_widgets.store.study_key`)."""
    return study_key(_key_columns(encoded), identity, image_options)


@dataclass
class _Prepared:
    """What a preparation worker hands back: the study's key, and its encoding unless the
    key was found from cached digests (then the study is in the store: nothing to send)."""

    key: str | None
    encoded: EncodedStudy | None
    seconds: float
    digests: dict[str, str]  # content fingerprint -> prepared-PNG digest, to cache


def _stat_signature(source: Any) -> tuple[int, int, int] | None:
    try:
        info = os.stat(source)
    except (OSError, TypeError, ValueError):
        return None
    return (info.st_ino, info.st_size, info.st_mtime_ns)


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=total, unit="study", desc="cxr-widgets", dynamic_ncols=True, leave=True)


# --- the run ---------------------------------------------------------------------------


def run_batch(
    studies: Iterable[Study],
    client: ReportGenerator,
    *,
    store: ResultStore | str | os.PathLike[str] | None = None,
    max_in_flight: int | None = None,
    batch_size: int = MAX_STUDIES_PER_REQUEST,
    progress: bool = True,
    retry_failed: bool = True,
    on_result: Callable[[int, Report | None, StudyFailure | None], None] | None = None,
    prepare_workers: int | None = None,
    start_in_flight: int | None = None,
    keep_images: bool = False,
    prepare_processes: bool | None = None,
) -> BatchResult:
    """Send many studies, ``batch_size`` per request, several requests in flight.

    ``client``: any :class:`~cxr_widgets.backend.ReportGenerator` (a
    ``ReportGenClient`` or ``DemoBackend``); requests are packed within its
    request budget. ``store``: a SQLite file path (or :class:`ResultStore`)
    that makes the run resumable; studies already answered there are not sent
    again, failed ones are (unless ``retry_failed=False``); each study's image
    paths are recorded with its result. ``max_in_flight``: the user's cap on
    requests in flight (default :data:`DEFAULT_MAX_IN_FLIGHT`, what this machine
    affords); the number in flight is found from the endpoint's answers (see
    :class:`~cxr_widgets.adaptive.ConcurrencyController`), starting from the
    endpoint's size when the workspace tells it, else ``start_in_flight``.
    ``prepare_workers``: processes preparing images ahead of sending (default:
    the cores available; ``prepare_processes=False`` keeps them in threads).
    ``on_result(index, report, failure)`` is
    called as each study finishes. ``keep_images=True`` keeps each study's
    prepared frontal image (the one its boxes were drawn for) in the result's
    ``images``; off by default to bound memory.
    ``studies`` is read into a list of :class:`Study` objects (paths and
    texts, small); images are prepared a few requests ahead of the senders
    only, so memory does not grow with the number of studies' images.

    Returns a :class:`BatchResult` with reports in input order (None where a
    study failed). Ctrl-C (or SIGTERM in the command line) stops the run
    cleanly: requests in flight are awaited (a second Ctrl-C abandons them),
    everything answered stays in the store, and running again resumes. Errors
    that every further request would meet stop the run and are raised: 401/403,
    404, a store that cannot be written (full or read-only disk), an endpoint
    that keeps answering 429 or asks to wait too long. The raised exception
    carries what the run produced until then as ``exc.result`` (a BatchResult).
    """
    if not isinstance(client, ReportGenerator):
        raise ConfigError(
            f"run_batch needs a ReportGenClient or DemoBackend, got {type(client).__name__}"
        )
    if isinstance(studies, Study):
        studies = [studies]
    studies = list(studies)
    for position, study in enumerate(studies):
        if not isinstance(study, Study):
            raise RequestError(
                f"studies[{position}] is a {type(study).__name__}, not a Study; wrap images in "
                "Study(frontal_image=...)"
            )
    if not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_STUDIES_PER_REQUEST:
        raise ConfigError(f"batch_size must be 1 to {MAX_STUDIES_PER_REQUEST}, got {batch_size!r}")
    if max_in_flight is not None:
        check_cap(max_in_flight)

    owned = store is not None and not isinstance(store, ResultStore)
    result_store = ResultStore(store) if owned else store  # type: ignore[arg-type]
    runner = _Runner(
        studies,
        client,
        result_store,  # type: ignore[arg-type]
        limit=ConcurrencyController(
            max_in_flight, start=start_in_flight, capacity_hint=_capacity_hint(client)
        ),
        batch_size=batch_size,
        retry_failed=retry_failed,
        on_result=on_result,
        prepare_workers=prepare_workers or default_workers(),
        keep_images=keep_images,
        processes=prepare_processes,
    )
    try:
        return runner.run(progress)
    finally:
        if owned and result_store is not None and not runner.abandoned:
            result_store.close()


def _capacity_hint(client: ReportGenerator) -> int | None:
    """Requests the endpoint serves at once, when the workspace told it (see workspace.py)."""
    hint = getattr(getattr(client, "config", None), "capacity_hint", None)
    return hint if isinstance(hint, int) and hint > 0 else None


def _is_busy(exc: BaseException) -> bool:
    return isinstance(exc, EndpointBusyError) or (
        isinstance(exc, EndpointError) and exc.status == 429
    )


class _Runner:
    """One run_batch call. All bookkeeping happens on the calling thread."""

    def __init__(
        self,
        studies: list[Study],
        client: ReportGenerator,
        store: ResultStore | None,
        *,
        limit: ConcurrencyController,
        batch_size: int,
        retry_failed: bool,
        on_result: Callable[[int, Report | None, StudyFailure | None], None] | None,
        prepare_workers: int,
        keep_images: bool,
        processes: bool | None = None,
    ) -> None:
        self.studies = studies
        self.client = client
        self.store = store
        self.limit = limit
        self.batch_size = batch_size
        self.budget = client.request_budget  # the backend owns and enforces it
        self.retry_failed = retry_failed
        self.on_result = on_result
        self.prepare_workers = max(1, prepare_workers)
        self.keep_images = keep_images
        self.identity = client.identity
        self.options = dict(client.image_options)
        n = len(studies)
        self.result = BatchResult(
            reports=[None] * n,
            failures=[],
            keys=[None] * n,
            images=[None] * n,
            studies=n,
            store_path=str(store.path) if store is not None else None,
        )
        self.stats = _Stats(client)
        self.abandoned = False
        self._bar: Any = None
        self._waiting: dict[str, list[int]] = {}  # key -> indices (duplicates in this run)
        self._groups: dict[tuple[str, ...], list[_Item]] = {}
        self._queue: deque[_Batch] = deque()
        self._sequence = 0
        self._fatal: BaseException | None = None
        self._sending: dict[Future[Any], _Batch] = {}
        self._raised_busy = 0
        self._busy_in_row = 0  # requests in a row that ended in 429 after the client's retries
        self._answered_requests = 0
        self._resend_after = 0  # answers the last request queued again waits for
        self._in_flight_shown = "0/0"  # the progress bar's "in flight", set after sending
        self._reprepare: deque[int] = deque()  # cached key, but the stored row was unusable
        self._answered: dict[str, int] = {}  # key -> index of the study answered for it
        self._digests: dict[str, str] = {}  # content fingerprint -> prepared-PNG digest
        self._new_digests: dict[str, str] = {}
        self._skip_keys: set[str] = set()  # keys whose stored result ends a study
        self._observed_at = time.monotonic()
        self._pool = PreparePool(self.options, workers=self.prepare_workers, processes=processes)

    # --- the loop ----------------------------------------------------------------------

    def run(self, progress: bool) -> BatchResult:
        started = time.monotonic()
        if self.store is not None:
            self._digests = self.store.digests()
            self._skip_keys = self.store.ok_keys()
            if not self.retry_failed:
                self._skip_keys |= {r.key for r in self.store.results("error")}
        self._bar = _progress_bar(len(self.studies), progress)
        todo: deque[int] = deque(range(len(self.studies)))
        self._pool.start()  # worker processes start before this run's threads
        # Threads hash files and wait; the pool's processes decode and encode (the GIL).
        threads = self.prepare_workers * 2 if self._pool.processes else self.prepare_workers
        prepare_pool = ThreadPoolExecutor(threads, thread_name_prefix="cxr-prepare")
        send_pool = ThreadPoolExecutor(self.limit.cap, thread_name_prefix="cxr-send")
        preparing: dict[Future[Any], int] = {}
        sending: dict[Future[Any], _Batch] = self._sending
        try:
            while (
                todo or self._reprepare or preparing or sending or self._queue or self._has_groups()
            ):
                if self._fatal is None:
                    while self._reprepare:
                        index = self._reprepare.popleft()
                        preparing[prepare_pool.submit(self._prepare, index, True)] = index
                    # Prepare ahead, but only as far as the senders can use (bounded memory).
                    window = (self.limit.limit + 2) * self.batch_size + self.prepare_workers
                    while todo and len(preparing) + self._prepared_count() < window:
                        index = todo.popleft()
                        preparing[prepare_pool.submit(self._prepare, index, False)] = index
                    if not todo and not preparing:
                        self._flush_groups()
                    while (
                        self._queue
                        and self.limit.may_send(len(sending))
                        and self._answered_requests >= self._queue[0].after_answers
                    ):
                        batch = self._queue.popleft()
                        batch.sequence = self._sequence
                        batch.sent_at = time.monotonic()
                        self._sequence += 1
                        sending[send_pool.submit(self._send, batch)] = batch
                else:
                    todo.clear()
                    self._reprepare.clear()
                    self._queue.clear()
                    self._groups.clear()
                    for future in preparing:
                        future.cancel()
                if not preparing and not sending:
                    if self._fatal is not None or not (
                        self._queue or self._has_groups() or self._reprepare
                    ):
                        break
                    continue
                self._update_bar()  # after sending, so "in flight" counts what was just sent
                done, _ = wait(
                    [*preparing, *sending], timeout=POLL_SECONDS, return_when=FIRST_COMPLETED
                )
                self._watch_load()
                for future in done:
                    if future in preparing:
                        index = preparing.pop(future)
                        if not future.cancelled():
                            self._prepared(index, future)
                    else:
                        self._sent(sending.pop(future), future)
        except KeyboardInterrupt:
            self.result.interrupted = True
            for future in preparing:
                future.cancel()
            self._stop_after_interrupt(sending)
        finally:
            prepare_pool.shutdown(wait=not self.abandoned, cancel_futures=True)
            self._pool.close(wait=not self.abandoned)
            send_pool.shutdown(wait=not self.abandoned, cancel_futures=True)
            self._finish(started)
        if self._fatal is not None:
            self.result.stopped = str(self._fatal)
            self._fatal.result = self.result  # type: ignore[attr-defined]
            raise self._fatal
        return self.result

    def _stop(self, exc: BaseException) -> None:
        """Stop sending: requests in flight finish, nothing new starts; ``exc`` is raised."""
        if self._fatal is None:
            self._fatal = exc

    def _watch_load(self) -> None:
        """Between completions: tell the controller of 429s the client met, and what
        held the run back since the last look (the endpoint, preparation or the cap)."""
        now = time.monotonic()
        if self._sending and self.stats.congestion():
            self.limit.on_busy()
        self.limit.observe(len(self._sending), bool(self._queue), now - self._observed_at)
        self._observed_at = now

    def _taken(self, refused: _Batch) -> int:
        """Our requests in flight that have met no 429 for at least half as long as
        ``refused`` spent being refused: the endpoint took them and holds them now."""
        now = time.monotonic()
        half = (now - refused.sent_at) / 2
        taken = 0
        for other in self._sending.values():
            if other.thread is None or other.busy_before is None or now - other.sent_at < half:
                continue
            taken += self.stats.busy_in(other.thread) == other.busy_before
        return taken

    def _stop_after_interrupt(self, sending: dict[Future[Any], _Batch]) -> None:
        where = self.result.store_path
        if sending:
            try:  # a second Ctrl-C may come at once, even while this is printed
                print(
                    f"\nInterrupted: waiting for {len(sending)} request(s) in flight "
                    "(Ctrl-C again to abandon them)...",
                    file=sys.stderr,
                )
                for future in list(sending):
                    wait([future])
                    self._sent(sending.pop(future), future, split=False)
            except KeyboardInterrupt:
                self.abandoned = True
        if where:
            message = (
                f"Stopped. Everything answered is kept in {where}; run again with the same "
                "store to send only the missing studies."
            )
        else:
            message = (
                "Stopped. No store was given, so nothing was saved; pass store='results.sqlite' "
                "(or --store) to make runs resumable."
            )
        print(message, file=sys.stderr)

    def _finish(self, started: float) -> None:
        if not self.abandoned:
            try:
                self._save_digests()
            except StoreError:  # only a cache; the results are stored already
                logger.warning("batch: could not save the image digest cache")
        result = self.result
        result.wall_time = time.monotonic() - started
        result.retries = max(0, self.stats.delta("retries"))
        # The client's busy count includes the 429 behind each EndpointBusyError raised.
        result.busy = self.stats.delta("busy") if self.stats.counts_busy else self._raised_busy
        result.final_limit = self.limit.limit
        result.peak_limit = self.limit.peak
        result.backoffs = self.limit.decreases
        result.limited_by = self.limit.limited_by_text()
        result.failures.sort(key=lambda f: f.index)
        if self._bar is not None:
            self._update_bar()
            self._bar.refresh()
            self._bar.close()
        logger.info(
            "batch: %d studies, %d ok, %d failed, %d from store, %d requests, %.1f s",
            result.studies,
            result.ok,
            result.failed,
            result.skipped,
            result.requests,
            result.wall_time,
        )

    # --- keys and the store ------------------------------------------------------------

    def _from_store(self, index: int, key: str) -> bool:
        """Finish study ``index`` from the store when it is answered there (or failed, and
        failures are not retried). True when finished."""
        if self.store is None or key not in self._skip_keys:
            return False
        stored = self.store.get(key)
        if stored is None or (stored.status != "ok" and self.retry_failed):
            self._skip_keys.discard(key)  # e.g. a damaged row, set aside: send it again
            return False
        self.result.keys[index] = key
        self.result.skipped += 1
        study = self.studies[index]
        if stored.report is not None:
            self.result.stored += 1
            self._finish_study(index, stored.report.replace(study_id=study.study_id), None)
        else:
            failure = StudyFailure(
                index,
                study.study_id,
                stored.error_type or "Error",
                stored.error_message or "",
                stored.request_id,
                from_store=True,
            )
            self._finish_study(index, None, failure)
        return True

    # --- preparation ---------------------------------------------------------------------

    def _prepare(self, index: int, force: bool) -> _Prepared:
        """Runs in a preparation thread: the study's key, and its encoding when needed."""
        study = self.studies[index]
        fingerprints: dict[str, tuple[str | None, Any]] = {}
        for column in study.columns:
            if column in IMAGE_COLUMNS:
                source = getattr(study, column)
                is_path = isinstance(source, (str, os.PathLike))
                signature = _stat_signature(source) if is_path else None
                fingerprints[column] = (content_fingerprint(source, self.options), signature)
        if not force:
            key = self._cached_key(study, fingerprints)
            # Known content (stored, or answered or on its way in this run): not prepared again.
            if key is not None and (
                key in self._skip_keys or key in self._answered or key in self._waiting
            ):
                return _Prepared(key, None, 0.0, {})
        started = time.perf_counter()
        encoded = self._pool.encode(study, {c: fp for c, (fp, _) in fingerprints.items()})
        encoded.size  # noqa: B018 - sized here, off the runner's thread (packing needs it)
        seconds = time.perf_counter() - started
        learned = {}
        for column, prepared in encoded.images.items():
            fingerprint, signature = fingerprints.get(column, (None, None))
            # A file changed while it was prepared: its digest would name the wrong bytes.
            if fingerprint is not None and (
                signature is None or _stat_signature(getattr(study, column)) == signature
            ):
                learned[fingerprint] = _digest(prepared.png)
        return _Prepared(
            prepared_key(encoded, self.identity, self.options), encoded, seconds, learned
        )

    def _cached_key(
        self, study: Study, fingerprints: dict[str, tuple[str | None, Any]]
    ) -> str | None:
        """The store key from cached prepared-image digests, or None when one is unknown."""
        columns: dict[str, str] = {}
        for column in study.columns:
            if column in IMAGE_COLUMNS:
                fingerprint = fingerprints[column][0]
                digest = self._digests.get(fingerprint) if fingerprint else None
                if digest is None:
                    return None
                columns[column] = digest
            else:
                columns[column] = getattr(study, column)
        return study_key(columns, self.identity, self.options)

    def _prepared(self, index: int, future: Future[Any]) -> None:
        try:
            outcome: _Prepared = future.result()
        except Exception as exc:  # ImageError/StudyError; anything else is reported the same way
            self._fail([index], exc, store_keys=[])
            return
        if outcome.encoded is None:  # known from the digest cache
            key = outcome.key
            assert key is not None
            if key in self._answered:
                self.result.keys[index] = key
                twin = self._answered[key]
                self._keep_image(index, self.result.images[twin] if self.keep_images else None)
                self._finish_study(index, self._twin_report(twin, index), None)
            elif key in self._waiting:
                self.result.keys[index] = key
                self._waiting[key].append(index)
            elif not self._from_store(index, key):
                self._reprepare.append(index)
            return
        encoded = outcome.encoded
        self.result.prepare_time += outcome.seconds
        if outcome.digests:
            self._digests.update(outcome.digests)
            self._new_digests.update(outcome.digests)
            if len(self._new_digests) >= 64:  # a cache: losing the last few costs little
                try:
                    self._save_digests()
                except StoreError as exc:
                    self._stop(exc)
        study = self.studies[index]
        if any(getattr(p, "burned_in_annotation", None) for p in encoded.images.values()):
            self.result.burned_in.append(study.study_id or f"#{index}")
        key = outcome.key
        assert key is not None
        self.result.keys[index] = key
        twin = self._answered.get(key)
        if twin is not None:  # the same content as a study already answered in this run
            self._keep_image(index, encoded.frontal.image)
            self._finish_study(index, self._twin_report(twin, index), None)
            return
        if self._from_store(index, key):
            return
        if key in self._waiting:  # the same content twice in this run: send it once
            self._waiting[key].append(index)
            return
        self._waiting[key] = [index]
        self._pack(_Item(index, key, encoded))

    def _pack(self, item: _Item) -> None:
        """Add a study to the open request of its columns; close the request when one more
        study would pass the budget (exact sizes) or the batch size."""
        columns = item.encoded.columns
        group = self._groups.setdefault(columns, [])
        if group and self.budget is not None:
            size = request_size([*(i.encoded for i in group), item.encoded])
            if size > self.budget:
                self._queue.append(_Batch(group))
                group = self._groups[columns] = []
        group.append(item)
        if len(group) >= self.batch_size:
            self._queue.append(_Batch(group))
            self._groups[columns] = []

    def _twin_report(self, twin: int, index: int) -> Report:
        """A copy of study ``twin``'s report for study ``index`` (same content)."""
        report = self.result.reports[twin]
        assert report is not None
        self.result.duplicates += 1
        return report.replace(study_id=self.studies[index].study_id)

    def _keep_image(self, index: int, image: Any) -> None:
        """Keep study ``index``'s display image with the run's result (``keep_images``)."""
        if self.keep_images:
            self.result.images[index] = image

    def _save_digests(self) -> None:
        if self.store is not None and self._new_digests:
            self.store.put_digests(self._new_digests)
            self._new_digests = {}

    def _has_groups(self) -> bool:
        return any(self._groups.values())

    def _prepared_count(self) -> int:
        queued = sum(len(b.items) for b in self._queue)
        return queued + sum(len(g) for g in self._groups.values())

    def _flush_groups(self) -> None:
        for columns, group in list(self._groups.items()):
            if group:
                self._queue.append(_Batch(group))
            self._groups[columns] = []

    # --- sending -----------------------------------------------------------------------

    def _send(self, batch: _Batch) -> tuple[list[Report], StoreError | None]:
        """Runs in a sender thread: one request, answers committed to the store at once.

        A store that cannot be written does not lose the answers: they come back
        with the error, and the run stops.
        """
        thread = threading.get_ident()
        batch.busy_before = self.stats.busy_in(thread)
        batch.thread = thread
        request: PreparedRequest = assemble_request(batch.studies())
        reports = self.client.send(request)
        if self.store is None:
            return reports, None
        try:
            self.store.put_many_ok(
                [
                    (item.key, report, item.encoded.study.study_id)
                    for item, report in zip(batch.items, reports, strict=True)
                ],
                sources=_sources([item.encoded.study for item in batch.items]),
            )
        except StoreError as exc:
            return reports, exc
        return reports, None

    def _sent(self, batch: _Batch, future: Future[Any], split: bool = True) -> None:
        self.result.requests += 1
        # The client's own retries hide 429s from us; its counters do not. Any request in
        # flight may have met them, so the newest one decides whether this is news.
        if self.stats.congestion():
            self.limit.on_busy()
            logger.debug("batch: endpoint busy, %d requests in flight at most", self.limit.limit)
        try:
            reports, store_error = future.result()
        except EndpointError as exc:
            if _is_busy(exc):
                self._busy(batch, exc)
                return
            self._busy_in_row = 0
            self._failed_request(batch, exc, split)
            return
        except Exception as exc:
            self._failed_request(batch, exc, split)
            return
        self._busy_in_row = 0
        self._answered_requests += 1
        self.limit.on_answer(time.monotonic() - batch.sent_at, len(batch.items))
        self.result.sent += len(batch.items)
        if store_error is None and self.store is not None:
            self.result.stored += len(batch.items)
        finished: list[tuple[int, Report | None, StudyFailure | None]] = []
        for item, report in zip(batch.items, reports, strict=True):
            self.result.reports[item.index] = report
            self._answered[item.key] = item.index
            for index in self._waiting.pop(item.key, [item.index]):
                self._keep_image(index, item.encoded.frontal.image)
                if index != item.index:  # a duplicate of the study sent: its own copy
                    finished.append((index, self._twin_report(item.index, index), None))
                else:
                    finished.append((index, report, None))
        self._finish_many(finished)
        if store_error is not None:
            self._stop(store_error)

    def _busy(self, batch: _Batch, exc: EndpointError) -> None:
        """A request still refused with 429 after the client's retries: never sent again
        here (the client owns retries) unless the endpoint is answering this run and holds
        its other requests, and then once; after a few in a row the run stops."""
        self._raised_busy += 1
        self.limit.on_busy()
        asked_to_wait = isinstance(exc, DeadlineExceededError) or exc.reason == "retry-after"
        # The endpoint serves this run (it answered, or holds requests it took) and its queue
        # is full of our other requests: that many in flight is the most it takes now.
        taken = self._taken(batch)
        serving = (self._answered_requests > 0 or taken > 0) and bool(self._sending)
        if serving and not batch.requeued and not asked_to_wait:
            if taken:
                self.limit.on_full(taken)
            batch.requeued = True
            # Each answer frees one place: requests queued again wait for one answer each.
            self._resend_after = max(self._resend_after, self._answered_requests) + 1
            batch.after_answers = self._resend_after
            ahead = 0  # after the requests queued again before it, in the order they wait
            while ahead < len(self._queue) and self._queue[ahead].after_answers:
                ahead += 1
            self._queue.insert(ahead, batch)
            logger.debug(
                "batch: refused while the endpoint holds this run's requests: queued again"
            )
            return
        self._busy_in_row += 1
        self._fail_batch(batch, exc)
        attempts = self.client.max_attempts
        tries = f" after {attempts} attempt{'s' if attempts != 1 else ''} each"
        where = self.result.store_path
        resume = (
            f"Everything answered is kept in {where}; run again later to send the rest."
            if where
            else "Give a store (--store) to make the run resumable."
        )
        if asked_to_wait:
            self._stop(
                EndpointBusyError(
                    f"the endpoint is busy (429) and asked to wait longer than this client "
                    f"waits ({exc}); the run stopped. {resume}",
                    status=429,
                    request_id=exc.request_id,
                    reason="busy",
                )
            )
        elif self._busy_in_row >= MAX_BUSY_REQUESTS:
            self._stop(
                EndpointBusyError(
                    f"the endpoint kept refusing: {self._busy_in_row} requests in a row were "
                    f"answered 429 (too many pending requests){tries}; the run stopped. "
                    f"{resume} Fewer requests in flight (--max-in-flight) or more instances "
                    "help.",
                    status=429,
                    reason="busy",
                )
            )

    def _failed_request(self, batch: _Batch, exc: BaseException, split: bool) -> None:
        if isinstance(exc, SPLIT_ERRORS) and split and len(batch.items) > 1:
            # One study may be what the endpoint refused: send the halves separately.
            half = len(batch.items) // 2
            self.result.splits += 1
            self._queue.appendleft(_Batch(batch.items[half:]))
            self._queue.appendleft(_Batch(batch.items[:half]))
            return
        self._fail_batch(batch, exc)
        if isinstance(exc, FATAL_ERRORS) or not isinstance(exc, CxrWidgetsError):
            # Every request would fail the same way (or a custom backend has a bug).
            self._stop(exc)

    def _fail_batch(self, batch: _Batch, exc: BaseException) -> None:
        self.result.sent += len(batch.items)
        indices = []
        for item in batch.items:
            indices.extend(self._waiting.pop(item.key, [item.index]))
        keys = [(item.key, item.encoded.study.study_id) for item in batch.items]
        self._fail(indices, exc, store_keys=keys)

    def _fail(
        self, indices: list[int], exc: BaseException, *, store_keys: list[tuple[str, str]]
    ) -> None:
        request_id = getattr(exc, "request_id", None)
        if self.store is not None and store_keys:
            try:
                self.store.put_many_errors(
                    store_keys,
                    exc,
                    request_id=request_id,
                    sources=_sources(self.studies[i] for i in indices),
                )
            except StoreError as store_error:  # the failure is still reported in the result
                self._stop(store_error)
        self._finish_many(
            [
                (
                    index,
                    None,
                    StudyFailure(
                        index,
                        self.studies[index].study_id,
                        type(exc).__name__,
                        str(exc),
                        request_id,
                    ),
                )
                for index in indices
            ]
        )

    # --- results -----------------------------------------------------------------------

    def _finish_study(
        self, index: int, report: Report | None, failure: StudyFailure | None
    ) -> None:
        self._finish_many([(index, report, failure)])

    def _finish_many(self, finished: list[tuple[int, Report | None, StudyFailure | None]]) -> None:
        """Record a request's studies, then tell the callback (which may raise
        KeyboardInterrupt: nothing recorded is lost then)."""
        for index, report, failure in finished:
            if report is not None:
                self.result.reports[index] = report
            if failure is not None:
                self.result.failures.append(failure)
        if self._bar is not None:
            # The counters first (update() draws them); "in flight" as after the last sends,
            # not one short while an answer is being recorded.
            self._update_bar(in_flight=False)
            self._bar.update(len(finished))
        if self.on_result is not None:
            for index, report, failure in finished:
                self.on_result(index, report, failure)

    def _update_bar(self, in_flight: bool = True) -> None:
        if self._bar is None:
            return
        counters: dict[str, Any] = {"ok": self.result.ok, "failed": len(self.result.failures)}
        if self.store is not None:
            counters["stored"] = self.result.stored
        if in_flight:
            self._in_flight_shown = f"{len(self._sending)}/{self.limit.limit}"
        counters["in flight"] = self._in_flight_shown
        busy = self.stats.delta("busy") if self.stats.counts_busy else self._raised_busy
        if busy:
            counters["429"] = busy
        self._bar.set_postfix(counters, refresh=False)
