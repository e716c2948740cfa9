"""Many studies through one endpoint: grouping, packing, concurrency, resume.

:func:`run_batch` prepares studies in a small thread pool while earlier
requests are in flight, packs studies that fill the same columns into
requests of up to ``batch_size`` (10 at most) within the request size
budget, and keeps several requests in flight. The number in flight adapts
(AIMD): it halves when the endpoint says it is busy (429) and grows by one
per round of successes. With a ``store`` every answered request is committed
at once, so a run that is interrupted and started again sends only what is
missing.

Resuming without re-preparing: a study's store key is a hash of its
*prepared* images, so knowing it normally means decoding and resizing every
image again. The store therefore also remembers, per image file (path, size,
modification time, image options, package version) or bytes (their hash),
the digest of the prepared PNG; a resumed run computes the keys of unchanged
files from that cache and skips stored studies without opening them. PIL
images, arrays and pydicom datasets are always prepared.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from .adaptive import AdaptiveLimit
from .backend import ReportGenerator
from .batch_result import BatchResult, StudyFailure
from .contract import (
    DEFAULT_REQUEST_BUDGET,
    MAX_STUDIES_PER_REQUEST,
    EncodedStudy,
    PreparedRequest,
    assemble_request,
    encode_study,
)
from .errors import (
    BadRequestError,
    ConfigError,
    CxrWidgetsError,
    EndpointAuthError,
    EndpointBusyError,
    EndpointNotFoundError,
    ModelError,
    RequestError,
    RequestTooLargeError,
    ResponseFormatError,
)
from .report import Report
from .store import ResultStore, content_fingerprint, study_key
from .study import IMAGE_COLUMNS, Study

__all__ = ["AdaptiveLimit", "BatchResult", "StudyFailure", "prepared_key", "run_batch"]

logger = logging.getLogger(__name__)

#: Errors after which every further request would fail too: the run stops.
FATAL_ERRORS = (EndpointAuthError, EndpointNotFoundError, ConfigError)
#: Errors one bad study in a request can cause: the request is split to find it.
SPLIT_ERRORS = (BadRequestError, ModelError, ResponseFormatError, RequestTooLargeError)
#: How often one request is put back after 429s that outlasted the client's own retries.
MAX_REQUEUES = 8
#: Default number of requests in flight at most (the adaptive limit stays below it).
DEFAULT_MAX_IN_FLIGHT = 8
#: How often the run looks at the client's 429 count between completions.
POLL_SECONDS = 0.1


# --- internal bookkeeping ------------------------------------------------------------


@dataclass
class _Item:
    """A prepared study waiting for (or in) a request."""

    index: int
    key: str
    encoded: EncodedStudy
    size: int
    fingerprints: dict[str, str] = field(default_factory=dict)


@dataclass
class _Batch:
    items: list[_Item]
    requeues: int = 0
    sequence: int = -1

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


def _request_size(row: Sequence[str]) -> int:
    """The bytes a study adds to a request body (values, quotes, commas, brackets)."""
    return sum(len(v.encode("utf-8")) + 3 for v in row) + 8


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


def _cached_key(
    study: Study, identity: str, options: dict[str, Any], digests: dict[str, str]
) -> tuple[str | None, dict[str, str]]:
    """The store key from cached image digests, or None when an image must be prepared."""
    columns: dict[str, str] = {}
    fingerprints: dict[str, str] = {}
    for column in study.columns:
        value = getattr(study, column)
        if column in IMAGE_COLUMNS:
            fingerprint = content_fingerprint(value, options)
            if fingerprint is None:
                return None, {}
            fingerprints[column] = fingerprint
            digest = digests.get(fingerprint)
            if digest is None:
                return None, fingerprints
            columns[column] = digest
        else:
            columns[column] = value
    return study_key(columns, identity, options), fingerprints


def _default_budget(client: ReportGenerator) -> int | None:
    config = getattr(client, "config", None)
    if config is not None and hasattr(config, "max_request_bytes"):
        return config.max_request_bytes
    return DEFAULT_REQUEST_BUDGET


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
    max_request_bytes: int | None = -1,
    prepare_workers: int | None = None,
    start_in_flight: int = 2,
    keep_images: bool = False,
) -> BatchResult:
    """Send many studies, ``batch_size`` per request, several requests in flight.

    ``client``: any :class:`~cxr_widgets.backend.ReportGenerator` (a
    ``ReportGenClient`` or ``DemoBackend``). ``store``: a SQLite file path
    (or :class:`ResultStore`) that makes the run resumable; studies already
    answered there are not sent again, failed ones are (unless
    ``retry_failed=False``). ``max_in_flight``: requests in flight at most
    (default 8); the number actually in flight adapts to 429 answers.
    ``max_request_bytes``: the request size budget (default: the client's
    ``EndpointConfig.max_request_bytes``, else 1.5 MB; None for no budget).
    ``on_result(index, report, failure)`` is called as each study finishes.
    ``keep_images=True`` keeps each report's prepared frontal image
    (``report.frontal_image``) for display; off by default to bound memory.

    Returns a :class:`BatchResult` with reports in input order (None where a
    study failed). Ctrl-C stops the run cleanly: requests in flight are
    awaited (a second Ctrl-C abandons them), everything answered stays in the
    store, and running again resumes. Endpoint errors that every request
    would meet (401/403, 404) stop the run and are raised.
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
    maximum = DEFAULT_MAX_IN_FLIGHT if max_in_flight is None else max_in_flight
    if not isinstance(maximum, int) or maximum < 1:
        raise ConfigError(f"max_in_flight must be a positive integer, got {max_in_flight!r}")
    if max_request_bytes == -1:
        max_request_bytes = _default_budget(client)

    owned = store is not None and not isinstance(store, ResultStore)
    result_store = ResultStore(store) if owned else store  # type: ignore[arg-type]
    runner = _Runner(
        studies,
        client,
        result_store,  # type: ignore[arg-type]
        limit=AdaptiveLimit(maximum, start_in_flight),
        batch_size=batch_size,
        budget=max_request_bytes,
        retry_failed=retry_failed,
        on_result=on_result,
        prepare_workers=prepare_workers or min(4, os.cpu_count() or 2),
        keep_images=keep_images,
    )
    try:
        return runner.run(progress)
    finally:
        if owned and result_store is not None and not runner.abandoned:
            result_store.close()


class _Runner:
    """One run_batch call. All bookkeeping happens on the calling thread."""

    def __init__(
        self,
        studies: list[Study],
        client: ReportGenerator,
        store: ResultStore | None,
        *,
        limit: AdaptiveLimit,
        batch_size: int,
        budget: int | None,
        retry_failed: bool,
        on_result: Callable[[int, Report | None, StudyFailure | None], None] | None,
        prepare_workers: int,
        keep_images: bool,
    ) -> None:
        self.studies = studies
        self.client = client
        self.store = store
        self.limit = limit
        self.batch_size = batch_size
        self.budget = budget
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
        self._new_digests: dict[str, str] = {}
        self._answered: dict[str, int] = {}  # key -> index of the study answered for it

    # --- the loop ----------------------------------------------------------------------

    def run(self, progress: bool) -> BatchResult:
        started = time.monotonic()
        self._bar = _progress_bar(len(self.studies), progress)
        todo: deque[int] = deque()
        prepare_pool = ThreadPoolExecutor(self.prepare_workers, thread_name_prefix="cxr-prepare")
        send_pool = ThreadPoolExecutor(self.limit.maximum, thread_name_prefix="cxr-send")
        preparing: dict[Future[Any], int] = {}
        sending: dict[Future[Any], _Batch] = self._sending
        window = (self.limit.maximum + 1) * self.batch_size + self.prepare_workers
        try:
            todo.extend(self._first_pass())
            while todo or preparing or sending or self._queue or self._has_groups():
                if self._fatal is None:
                    # Prepare ahead, but only as far as the senders can use (bounded memory).
                    while todo and len(preparing) + self._prepared_count() < window:
                        index = todo.popleft()
                        future = prepare_pool.submit(self._prepare, index)
                        preparing[future] = index
                    if not todo and not preparing:
                        self._flush_groups()
                    while self._queue and len(sending) < self.limit.limit:
                        batch = self._queue.popleft()
                        batch.sequence = self._sequence
                        self._sequence += 1
                        sending[send_pool.submit(self._send, batch)] = batch
                else:
                    todo.clear()
                    self._queue.clear()
                    self._groups.clear()
                    for future in preparing:
                        future.cancel()
                if not preparing and not sending:
                    if self._fatal is not None or not (self._queue or self._has_groups()):
                        break
                    continue
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
                self._update_bar()
        except KeyboardInterrupt:
            self.result.interrupted = True
            for future in preparing:
                future.cancel()
            self._stop_after_interrupt(sending)
        finally:
            prepare_pool.shutdown(wait=not self.abandoned, cancel_futures=True)
            send_pool.shutdown(wait=not self.abandoned, cancel_futures=True)
            self._finish(started)
        if self._fatal is not None:
            raise self._fatal
        return self.result

    def _watch_load(self) -> None:
        """Between completions: react to 429s the client met, or ramp up while starved."""
        sending = self._sending
        if sending and self.stats.congestion():
            newest = max(b.sequence for b in sending.values())
            self.limit.on_busy(newest, self._sequence)
        elif self._queue and len(sending) >= self.limit.limit:
            self.limit.on_starved(time.monotonic())

    def _stop_after_interrupt(self, sending: dict[Future[Any], _Batch]) -> None:
        where = self.result.store_path
        if sending:
            print(
                f"\nInterrupted: waiting for {len(sending)} request(s) in flight "
                "(Ctrl-C again to abandon them)...",
                file=sys.stderr,
            )
            try:
                for future in list(sending):
                    wait([future])
                    self._sent(sending.pop(future), future, requeue=False)
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
            except Exception:  # only a cache; the results are stored already
                logger.exception("batch: could not save the image digest cache")
        result = self.result
        result.wall_time = time.monotonic() - started
        result.retries = max(0, self.stats.delta("retries"))
        # The client's busy count includes the 429 behind each EndpointBusyError raised.
        result.busy = self.stats.delta("busy") if self.stats.counts_busy else self._raised_busy
        result.final_limit = self.limit.limit
        result.peak_limit = self.limit.peak
        result.backoffs = self.limit.decreases
        result.failures.sort(key=lambda f: f.index)
        if self._bar is not None:
            self._update_bar()
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

    def _first_pass(self) -> list[int]:
        """Indices that need preparing; studies found in the store are finished here."""
        if self.store is None:
            return list(range(len(self.studies)))
        digests = self.store.digests()
        ok_keys = self.store.ok_keys()
        todo = []
        for index, study in enumerate(self.studies):
            key, _ = _cached_key(study, self.identity, self.options, digests)
            if key is not None and self._from_store(index, key, ok_keys):
                continue
            todo.append(index)
        return todo

    def _from_store(self, index: int, key: str, ok_keys: set[str] | None = None) -> bool:
        """Finish study ``index`` from the store when it is answered there (or failed, and
        failures are not retried). True when finished."""
        if self.store is None:
            return False
        if ok_keys is not None and key not in ok_keys and self.retry_failed:
            return False
        stored = self.store.get(key)
        if stored is None or (stored.status != "ok" and self.retry_failed):
            return False
        self.result.keys[index] = key
        self.result.skipped += 1
        study = self.studies[index]
        if stored.report is not None:
            stored.report.study_id = study.study_id
            self._finish_study(index, stored.report, None)
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

    def _prepare(self, index: int) -> tuple[EncodedStudy, float]:
        started = time.perf_counter()
        encoded = encode_study(self.studies[index], **self.options)
        return encoded, time.perf_counter() - started

    def _prepared(self, index: int, future: Future[Any]) -> None:
        study = self.studies[index]
        try:
            encoded, seconds = future.result()
        except Exception as exc:  # ImageError/StudyError; anything else is reported the same way
            self._fail([index], exc, store_keys=[])
            return
        self.result.prepare_time += seconds
        key = prepared_key(encoded, self.identity, self.options)
        self.result.keys[index] = key
        twin = self._answered.get(key)
        if twin is not None:  # the same content as a study already answered in this run
            self._finish_study(index, self._twin_report(twin, index), None)
            return
        if self.store is not None:
            for column, prepared in encoded.images.items():
                fingerprint = content_fingerprint(getattr(study, column), self.options)
                if fingerprint is not None:
                    self._new_digests[fingerprint] = _digest(prepared.png)
            if len(self._new_digests) >= 64:  # a cache: losing the last few costs little
                self._save_digests()
            if self._from_store(index, key):
                return
        if key in self._waiting:  # the same content twice in this run: send it once
            self._waiting[key].append(index)
            return
        self._waiting[key] = [index]
        item = _Item(index, key, encoded, _request_size(encoded.row))
        group = self._groups.setdefault(encoded.columns, [])
        budget = self.budget
        if group and budget is not None and sum(i.size for i in group) + item.size + 64 > budget:
            self._queue.append(_Batch(group))
            group = self._groups[encoded.columns] = []
        group.append(item)
        if len(group) >= self.batch_size:
            self._queue.append(_Batch(group))
            self._groups[encoded.columns] = []

    def _twin_report(self, twin: int, index: int) -> Report:
        """A copy of study ``twin``'s report for study ``index`` (same content)."""
        report = self.result.reports[twin]
        assert report is not None
        copy = Report.from_dict(report.to_dict())
        copy.study_id = self.studies[index].study_id
        self.result.duplicates += 1
        return copy

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

    def _send(self, batch: _Batch) -> list[Report]:
        """Runs in a sender thread: one request, answers committed to the store at once."""
        request: PreparedRequest = assemble_request(batch.studies())
        reports = self.client.send(request)
        if self.store is not None:
            self.store.put_many_ok(
                [
                    (item.key, report, item.encoded.study.study_id)
                    for item, report in zip(batch.items, reports, strict=True)
                ],
                sources=_sources([item.encoded.study for item in batch.items]),
            )
        return reports

    def _sent(self, batch: _Batch, future: Future[Any], requeue: bool = True) -> None:
        self.result.requests += 1
        # The client's own retries hide 429s from us; its counters do not. Any request in
        # flight may have met them, so the newest one decides whether this is news.
        newest = max([batch.sequence, *(b.sequence for b in self._sending.values())])
        if self.stats.congestion() and self.limit.on_busy(newest, self._sequence):
            logger.debug("batch: endpoint busy, %d requests in flight at most", self.limit.limit)
        try:
            reports = future.result()
        except EndpointBusyError as exc:
            self._raised_busy += 1
            self.limit.on_busy(batch.sequence, self._sequence)
            if requeue and batch.requeues < MAX_REQUEUES:
                batch.requeues += 1
                self.result.requeued += 1
                self._queue.appendleft(batch)
            else:
                self._fail_batch(batch, exc)
            return
        except SPLIT_ERRORS as exc:
            if requeue and len(batch.items) > 1:
                # One study may be what the endpoint refused: send the halves separately.
                half = len(batch.items) // 2
                self.result.splits += 1
                self._queue.appendleft(_Batch(batch.items[half:]))
                self._queue.appendleft(_Batch(batch.items[:half]))
            else:
                self._fail_batch(batch, exc)
            return
        except FATAL_ERRORS as exc:
            self._fail_batch(batch, exc)
            if self._fatal is None:
                self._fatal = exc
            return
        except CxrWidgetsError as exc:
            self._fail_batch(batch, exc)
            return
        except Exception as exc:  # a bug in a custom backend: stop rather than fail each study
            self._fail_batch(batch, exc)
            if self._fatal is None:
                self._fatal = exc
            return
        self.limit.on_success()
        self.result.sent += len(batch.items)
        finished: list[tuple[int, Report | None, StudyFailure | None]] = []
        for item, report in zip(batch.items, reports, strict=True):
            self.result.reports[item.index] = report
            self._answered[item.key] = item.index
            for index in self._waiting.pop(item.key, [item.index]):
                if index != item.index:  # a duplicate of the study sent: its own copy
                    finished.append((index, self._twin_report(item.index, index), None))
                else:
                    finished.append((index, report, None))
        self._finish_many(finished)

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
            except Exception:  # the failure is still reported in the result
                logger.exception("batch: could not record a failure in the store")
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
                if not self.keep_images:
                    report.frontal_image = None
                self.result.reports[index] = report
            if failure is not None:
                self.result.failures.append(failure)
        if self._bar is not None:
            self._bar.update(len(finished))
        if self.on_result is not None:
            for index, report, failure in finished:
                self.on_result(index, report, failure)

    def _update_bar(self) -> None:
        if self._bar is None:
            return
        self._bar.set_postfix(
            ok=self.result.ok,
            failed=len(self.result.failures),
            stored=self.result.skipped,
            limit=self.limit.limit,
            refresh=False,
        )
