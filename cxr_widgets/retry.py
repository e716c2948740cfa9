"""Retries for scoring calls: azure-core's RetryPolicy with a total deadline.

Retries 429 (after its ``Retry-After``), 500/502/503/504 and dropped
connections with jittered exponential backoff; never the 4xx answers that a
second try cannot fix; gives up with :class:`DeadlineExceededError` rather
than wait past the call's deadline.
"""

from __future__ import annotations

import random
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

from .errors import DeadlineExceededError

#: Statuses worth sending again: busy, and transient infrastructure failures.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


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

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

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
        if retry_after:
            wait = retry_after * (1 + self._random.uniform(0, 0.1))
        else:
            wait = self.get_backoff_time(settings)
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
                if not self.increment(settings, response=request, error=err):
                    err.cxr_retries = retries  # type: ignore[attr-defined]  # for the message
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
            self._wait(settings, deadline_at, transport, response, None)
            retries += 1
        response.context["retry_count"] = retries
        self.update_context(response.context, settings)
        return response


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
