"""Retries for scoring calls: azure-core's RetryPolicy with a total deadline.

The only place the package retries a request. Retries 429 (after its
``Retry-After``), 500/502/503/504 and dropped connections with jittered
exponential backoff; never the 4xx answers that a second try cannot fix;
gives up with :class:`DeadlineExceededError` rather than wait past the
call's deadline.

Bound on attempts per request (``ReportGenerator.max_attempts``):
``max_retries + 1`` HTTP attempts at most (``EndpointConfig.max_retries``,
default 6, so 7), fewer when the deadline comes first. A host name that does
not resolve is tried once; a refused connection at most
``REFUSED_RETRIES + 1`` times, quickly (a wrong URI fails in about a second,
not after a minute of backoff). A ``Retry-After`` that cannot be parsed is
ignored (plain backoff); one longer than ``max_retry_after`` (default
:data:`MAX_RETRY_AFTER`) is not waited for: the call stops with
:class:`EndpointBusyError` saying how long the endpoint asked to wait. The
batch runner does not send again what this policy already retried.
"""

from __future__ import annotations

import contextlib
import math
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from azure.core.exceptions import (
    ClientAuthenticationError,
    ServiceRequestError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import RetryPolicy

from .errors import DeadlineExceededError, EndpointBusyError

#: Statuses worth sending again: busy, and transient infrastructure failures.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Retries of a refused connection (nothing listens: a wrong port, or a server restarting).
REFUSED_RETRIES = 2
#: Longest backoff between tries of a refused connection, seconds.
REFUSED_BACKOFF_MAX = 0.5
#: Longest ``Retry-After`` waited for, seconds; a longer one stops the call.
MAX_RETRY_AFTER = 120.0
#: Error kinds (see :func:`error_kind`) that another try cannot fix.
_NOT_RETRIED_KINDS = frozenset({"the host name could not be resolved"})
_RETRY_AFTER_HEADERS = (
    ("retry-after", 1.0),
    ("retry-after-ms", 1e-3),
    ("x-ms-retry-after-ms", 1e-3),
)


def parse_retry_after(headers: Any) -> float | None:
    """Seconds the answer asks to wait (``Retry-After`` in seconds or as an HTTP date,
    or the ``-ms`` variants), or None. A value that cannot be parsed is ignored."""
    from email.utils import parsedate_to_datetime

    from azure.core.utils import case_insensitive_dict

    headers = case_insensitive_dict(headers)
    for name, unit in _RETRY_AFTER_HEADERS:
        value = headers.get(name)
        if not value:
            continue
        text = str(value).strip()
        try:
            seconds = float(text) * unit
        except ValueError:
            if unit != 1.0:
                continue
            try:
                when = parsedate_to_datetime(text)
                seconds = when.timestamp() - time.time()
            except (TypeError, ValueError, IndexError, OverflowError):
                continue
        if math.isfinite(seconds):
            return max(0.0, seconds)
    return None


@dataclass
class ClientStats:
    """Counters for benchmarks and batch summaries (thread-safe)."""

    requests: int = 0  # send() calls
    attempts: int = 0  # HTTP attempts, retries included
    retries: int = 0  # attempts repeated after a 429, 5xx or dropped connection
    busy: int = 0  # 429 answers seen (retried or not): a sign to send less at once
    dropped: int = 0  # connections refused or dropped before an answer
    failures: int = 0  # send() calls that raised
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    _busy_by_thread: dict[int, int] = field(default_factory=dict, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)
            if counts.get("busy"):
                thread = threading.get_ident()
                self._busy_by_thread[thread] = self._busy_by_thread.get(thread, 0) + counts["busy"]

    def busy_in(self, thread: int) -> int:
        """429 answers met by the requests sent from ``thread`` (one request at a time)."""
        with self._lock:
            return self._busy_by_thread.get(thread, 0)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {
                name: getattr(self, name)
                for name in ("requests", "attempts", "retries", "busy", "dropped", "failures")
            }


class EndpointRetryPolicy(RetryPolicy):
    """azure-core's RetryPolicy, tuned for scoring calls.

    - Retries 429 (waiting at least its ``Retry-After``), 500/502/503/504, and
      connections refused or dropped before an answer; never 400/401/403/404/
      408/413/424 (sending them again cannot help). Scoring is a pure function,
      so a POST is safe to send again.
    - Backoff: exponential with jitter, ``factor * 2**n`` capped at ``backoff_max``.
    - A total deadline for the whole call, retries and waits included: each
      attempt's connect/read timeouts are clipped to what is left, and a wait
      that would cross it raises :class:`DeadlineExceededError` at once.
    - A read timeout (the model is still working) is not retried.
    """

    def __init__(
        self,
        *,
        max_retries: int,
        backoff_factor: float,
        backoff_max: float,
        deadline: float,
        connect_timeout: float,
        read_timeout: float,
        stats: ClientStats | None = None,
        rng: random.Random | None = None,
        max_retry_after: float = MAX_RETRY_AFTER,
    ) -> None:
        super().__init__(
            retry_total=max_retries,
            retry_connect=max_retries,
            retry_read=max_retries,
            retry_status=max_retries,
            retry_backoff_factor=backoff_factor,
            retry_backoff_max=backoff_max,
            timeout=deadline,
        )
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.stats = stats or ClientStats()
        self._random = rng or random.Random()
        self.max_retries = max_retries
        self.max_retry_after = max_retry_after

    @property
    def max_attempts(self) -> int:
        """HTTP attempts per call at most (the first and ``max_retries`` retries)."""
        return self.max_retries + 1

    def get_retry_after(self, response: PipelineResponse) -> float | None:
        return parse_retry_after(response.http_response.headers)

    def is_retry(self, settings: dict[str, Any], response: PipelineResponse) -> bool:
        return response.http_response.status_code in RETRY_STATUSES

    def _is_method_retryable(self, settings: Any, request: Any, response: Any = None) -> bool:
        return True

    def get_backoff_time(self, settings: dict[str, Any]) -> float:
        attempt = max(1, len(settings["history"]))
        ceiling = min(settings["max_backoff"], settings["backoff"] * 2 ** (attempt - 1))
        return ceiling / 2 + self._random.uniform(0, ceiling / 2)

    def _wait(
        self,
        settings: dict[str, Any],
        deadline_at: float,
        transport: Any,
        response: PipelineResponse | None,
        error: Exception | None,
    ) -> None:
        retry_after = self.get_retry_after(response) if response is not None else None
        if retry_after and retry_after > self.max_retry_after:
            raise _asked_to_wait(response, retry_after, self.max_retry_after)
        if retry_after:
            wait = retry_after * (1 + self._random.uniform(0, 0.1))
        else:
            wait = self.get_backoff_time(settings)
            if error is not None and error_kind(error) == "connection refused":
                wait = min(wait, REFUSED_BACKOFF_MAX)
        left = deadline_at - time.monotonic()
        if wait >= left:
            raise _deadline_error(settings["timeout"], response, error, wait, retry_after)
        self.stats.add(retries=1)
        if wait > 0:
            transport.sleep(wait)

    def send(self, request: PipelineRequest) -> PipelineResponse:
        settings = self.configure_retries(request.context.options)
        deadline_at = time.monotonic() + settings["timeout"]
        transport = request.context.transport
        retries = 0
        refused = 0
        while True:
            left = deadline_at - time.monotonic()
            if left <= 0:
                raise _deadline_error(settings["timeout"], None, None, 0, None)
            request.context.options["connection_timeout"] = min(self.connect_timeout, left)
            request.context.options["read_timeout"] = min(self.read_timeout, left)
            request.context["retry_count"] = retries
            self.stats.add(attempts=1)
            try:
                response = self.next.send(request)
            except ClientAuthenticationError:
                raise
            except ServiceResponseTimeoutError as err:
                if deadline_at - time.monotonic() <= 0.05:
                    raise _deadline_error(settings["timeout"], None, err, 0, None) from None
                raise
            except (ServiceRequestError, ServiceResponseError) as err:
                self.stats.add(dropped=1)
                err.cxr_retries = retries  # type: ignore[attr-defined]  # for the message
                if deadline_at - time.monotonic() <= 0:  # the call's watchdog cut it
                    raise _deadline_error(settings["timeout"], None, err, 0, None) from None
                kind = error_kind(err)
                if kind in _NOT_RETRIED_KINDS:
                    raise
                refused += kind == "connection refused"
                if refused > REFUSED_RETRIES or not self.increment(
                    settings, response=request, error=err
                ):
                    raise
                self._wait(settings, deadline_at, transport, None, err)
                retries += 1
                continue
            if response.http_response.status_code == 429:
                self.stats.add(busy=1)
            if not self.is_retry(settings, response) or not self.increment(
                settings, response=response
            ):
                break
            try:
                self._wait(settings, deadline_at, transport, response, None)
            finally:
                _discard(response)
            retries += 1
        response.context["retry_count"] = retries
        self.update_context(response.context, settings)
        return response


def _discard(response: PipelineResponse) -> None:
    """Close an answer that is not kept (streamed bodies hold their connection)."""
    with contextlib.suppress(Exception):
        response.http_response.close()


# --- the deadline of the whole call, reading included --------------------------------
# Socket timeouts bound each read, not a call: a server that drips its headers or
# body one byte at a time never trips them. A watchdog timer shuts the socket the
# calling thread is using when the call's deadline passes; the blocked read then
# fails at once. The connection in use is known from the connection classes below.

_active: dict[int, Any] = {}  # thread id -> the HTTP connection it is using
_active_lock = threading.Lock()


def _watched(connection_class: type) -> type:
    class Watched(connection_class):  # type: ignore[misc, valid-type]
        def request(self, *args: Any, **kwargs: Any) -> Any:
            with _active_lock:
                _active[threading.get_ident()] = self
            return super().request(*args, **kwargs)

    Watched.__name__ = f"Watched{connection_class.__name__}"
    return Watched


def watch_connections(pool_manager: Any) -> None:
    """Make a urllib3 PoolManager's connections known to :class:`CallWatchdog`."""
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class Pool(HTTPConnectionPool):
        ConnectionCls = _watched(HTTPConnection)

    class SecurePool(HTTPSConnectionPool):
        ConnectionCls = _watched(HTTPSConnection)

    pool_manager.pool_classes_by_scheme = {"http": Pool, "https": SecurePool}


class CallWatchdog:
    """Cuts the calling thread's connection when ``deadline_at`` (monotonic) passes.

    Use as a context manager around a call and the reading of its answer;
    ``fired`` tells afterwards whether it cut.
    """

    def __init__(self, deadline_at: float) -> None:
        self.deadline_at = deadline_at
        self.fired = False
        self._done = False
        self._thread = threading.get_ident()
        self._timer = threading.Timer(max(0.0, deadline_at - time.monotonic()), self._fire)
        self._timer.daemon = True

    def _fire(self) -> None:
        with _active_lock:
            if self._done:
                return
            connection = _active.get(self._thread)
            self.fired = True
            sock = getattr(connection, "sock", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> CallWatchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        with _active_lock:
            self._done = True
            _active.pop(self._thread, None)


def _asked_to_wait(
    response: PipelineResponse | None, retry_after: float, bound: float
) -> EndpointBusyError:
    status = request_id = None
    if response is not None:
        status = response.http_response.status_code
        request_id = request_id_of(response.http_response.headers)
    return EndpointBusyError(
        f"the endpoint answered {status} and asked to wait {retry_after:,.0f} s before trying "
        f"again (Retry-After), longer than the {bound:g} s this client waits. Stopped rather "
        "than fail every study; try again later (a run_batch with a store resumes where it "
        "stopped), or raise EndpointConfig(max_retry_after=...).",
        status=status,
        request_id=request_id,
        reason="retry-after",
    )


def request_id_of(headers: Any) -> str | None:
    return headers.get("x-request-id") or headers.get("x-ms-request-id")


def _deadline_error(
    deadline: float,
    response: PipelineResponse | None,
    error: Exception | None,
    wait: float,
    retry_after: float | None,
) -> DeadlineExceededError:
    status = request_id = None
    if response is not None:
        status = response.http_response.status_code
        request_id = request_id_of(response.http_response.headers)
    if retry_after:
        what = f"the endpoint answered {status} and asked to wait {retry_after:g} s (Retry-After)"
    elif status is not None:
        what = f"the endpoint answered {status}; the next retry (in {wait:.1f} s)"
    elif error is not None and isinstance(error, ServiceResponseTimeoutError):
        what = "no answer arrived"
    elif error is not None:
        what = f"the connection failed ({error_kind(error)}); the next retry"
    else:
        what = "the retries"
    return DeadlineExceededError(
        f"gave up after the {deadline:g} s deadline for this call: {what} would pass it. "
        "Raise EndpointConfig(deadline=...) or try again when the endpoint is less busy.",
        status=status,
        request_id=request_id,
        reason="deadline",
    )


def error_kind(error: BaseException) -> str:
    """A short, secret-free description of a transport error (no URLs, no headers)."""
    text = str(getattr(error, "inner_exception", None) or error)
    for marker, kind in (
        ("Connection refused", "connection refused"),
        ("RemoteDisconnected", "the server closed the connection without answering"),
        ("Connection aborted", "the connection was dropped"),
        ("Connection reset", "the connection was reset"),
        ("Name or service not known", "the host name could not be resolved"),
        ("nodename nor servname", "the host name could not be resolved"),
        ("Temporary failure in name resolution", "the host name could not be resolved"),
        ("timed out", "timed out"),
        ("CERTIFICATE_VERIFY_FAILED", "the TLS certificate could not be verified"),
        ("SSLError", "TLS failed"),
    ):
        if marker in text:
            return kind
    return type(getattr(error, "inner_exception", None) or error).__name__
