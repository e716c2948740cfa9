"""Scoring script of the local CXRReportGen-compatible endpoint.

Loaded by ``azureml-inference-server-http`` as its entry script
(``AZUREML_ENTRY_SCRIPT``): the server calls :func:`init` once, then
:func:`run` with the raw Flask request for every ``POST /score``. Requests are
checked as the contract says (:func:`cxr_widgets.contract.validate_request`)
and answered with canned demo findings (:mod:`.demo_findings`), marked by the
header ``x-cxr-widgets-demo: 1``. The findings never depend on the pixels.

Configuration (environment variables, read by :func:`init`):

``CXR_LOCAL_KEY``
    When set, requests must send ``Authorization: Bearer <key>`` (else 401).
``CXR_LOCAL_MAX_REQUEST_BYTES``
    Larger request bodies get 413 (default 1,500,000, the older Azure ML limit).
``CXR_LOCAL_RESPONSE_SHAPE``
    ``records`` (default; what the deployed service sends) or ``documented``.
``CXR_LOCAL_READ_TIMEOUT``
    Seconds a read from a client may wait (see :mod:`.gunicorn_conf`); a body
    may take six of them in all, else 408.
``CXR_LOCAL_REQUEST_LOG``
    A file to which each request appends one JSON line: arrival order, time,
    request id, status (null when dropped), number of studies, the sha256 of
    each study's content (:func:`.demo_findings.study_digest`; clients compute
    it with :func:`.demo_findings.wire_digest`), the sha256 of each study's
    answer when answered (:func:`.demo_findings.answer_digest`), body size,
    injected fault, seconds. No patient text, no key.
``CXR_FAULT_*``
    Fault injection, see :class:`.faults.FaultConfig`: ``CXR_FAULT_LATENCY``
    and ``CXR_FAULT_LATENCY_PER_STUDY`` (seconds), ``CXR_FAULT_BANDWIDTH``
    (request bytes/s, shared), ``CXR_FAULT_INSTANCES`` and
    ``CXR_FAULT_PENDING_PER_INSTANCE`` (the pending cap; 429 beyond it),
    ``CXR_FAULT_RETRY_AFTER`` (seconds), ``CXR_FAULT_RATE_429``,
    ``CXR_FAULT_RATE_503``, ``CXR_FAULT_RATE_DROP`` (fractions) and
    ``CXR_FAULT_SEED`` (``none`` for an unseeded RNG).

Order of checks: 401 (key), 413 (size), bandwidth wait, injected
drop/429/503, 400 (contract), pending cap 429, then the simulated model time
holding one of ``instances``.

Error answers are JSON ``{"error": "..."}``; every answer carries ``x-request-id``.
"""

from __future__ import annotations

import hmac
import itertools
import json
import os
import socket
import threading
import time
from typing import Any

from azureml_inference_server_http.api.aml_request import rawhttp
from azureml_inference_server_http.api.aml_response import AMLResponse

from cxr_widgets.contract import DEFAULT_REQUEST_BUDGET, validate_request
from cxr_widgets.errors import ConfigError, RequestError
from cxr_widgets.local import (
    DEMO_HEADER,
    ENV_KEY,
    ENV_MAX_REQUEST_BYTES,
    ENV_REQUEST_LOG,
    ENV_RESPONSE_SHAPE,
)
from cxr_widgets.local.demo_findings import (
    answer_digest,
    answer_rows,
    demo_findings,
    study_digest,
)
from cxr_widgets.local.faults import FaultConfig, FaultState
from cxr_widgets.local.gunicorn_conf import read_timeout

#: A request body may take this many read timeouts in all (then 408).
BODY_DEADLINE_READS = 6

_CHUNK = 1 << 16


class Settings:
    """The endpoint's configuration. A plain class: the server loads this file
    outside ``sys.modules``, where ``@dataclass`` cannot resolve annotations."""

    def __init__(
        self,
        key: str | None,
        max_request_bytes: int,
        shape: str,
        log_path: str | None,
        faults: FaultState,
    ) -> None:
        self.key = key
        self.max_request_bytes = max_request_bytes
        self.shape = shape
        self.log_path = log_path
        self.faults = faults
        # Each read waits at most the read timeout (gunicorn_conf); the whole body
        # may take a few of them, not forever.
        self.body_deadline = BODY_DEADLINE_READS * read_timeout()

    def __repr__(self) -> str:  # never the key
        return f"Settings(key={'set' if self.key else 'none'}, shape={self.shape!r})"

    @classmethod
    def from_env(cls) -> Settings:
        shape = os.environ.get(ENV_RESPONSE_SHAPE, "records").strip() or "records"
        if shape not in ("records", "documented"):
            raise ConfigError(f"{ENV_RESPONSE_SHAPE}={shape!r}: use records or documented")
        limit = os.environ.get(ENV_MAX_REQUEST_BYTES, "").strip()
        try:
            max_bytes = int(float(limit)) if limit else DEFAULT_REQUEST_BUDGET
        except ValueError:
            raise ConfigError(f"{ENV_MAX_REQUEST_BYTES}={limit!r} is not a number") from None
        return cls(
            key=os.environ.get(ENV_KEY) or None,
            max_request_bytes=max_bytes,
            shape=shape,
            log_path=os.environ.get(ENV_REQUEST_LOG) or None,
            faults=FaultState(FaultConfig.from_env()),
        )


_settings: Settings | None = None
_log_lock = threading.Lock()
_sequence = itertools.count(1)  # arrival order of requests (next() is atomic)


def init() -> None:
    """Read the configuration (called once per worker by the server)."""
    global _settings
    _settings = Settings.from_env()
    print(
        f"cxr-widgets local endpoint: key {'required' if _settings.key else 'not required'}, "
        f"max request {_settings.max_request_bytes} bytes, {_settings.shape} responses, "
        f"faults {_settings.faults.config}",
        flush=True,
    )


def _answer(status: int, body: Any, headers: dict[str, str] | None = None) -> AMLResponse:
    return AMLResponse(body, status, {DEMO_HEADER: "1", **(headers or {})}, json_str=True)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> AMLResponse:
    return _answer(status, {"error": message}, headers)


def _authorized(request: Any, key: str) -> bool:
    given = request.headers.get("Authorization", "")
    return hmac.compare_digest(given.encode("utf-8"), f"Bearer {key}".encode())


def _drop(request: Any) -> None:
    """Close the connection without an answer (the client sees a reset or EOF)."""
    sock = request.environ.get("gunicorn.socket")
    if sock is None:
        raise ConnectionAbortedError("injected drop")  # not under gunicorn: fail loudly
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _write_log(path: str, entry: dict[str, Any]) -> None:
    line = json.dumps(entry, separators=(",", ":")) + "\n"
    with _log_lock, open(path, "a", encoding="utf-8") as log:
        log.write(line)


def _request_id() -> str:
    from flask import g

    return str(getattr(g, "request_id", "") or "")


@rawhttp
def run(request: Any) -> AMLResponse:
    """Answer one ``/score`` request (the server passes the Flask request)."""
    settings = _settings or Settings.from_env()
    started = time.time()
    entry: dict[str, Any] = {
        "seq": next(_sequence),
        "time": round(started, 3),
        "request_id": _request_id(),
        "status": None,
        "n_studies": 0,
        "sha256": [],
        "bytes": 0,
        "fault": None,
        "answers": [],
    }
    try:
        response = _score(request, settings, entry)
        entry["status"] = None if entry["fault"] == "drop" else response.status_code
        return response
    finally:
        entry["seconds"] = round(time.time() - started, 4)
        if settings.log_path:
            _write_log(settings.log_path, entry)


def _score(request: Any, settings: Settings, entry: dict[str, Any]) -> AMLResponse:
    if request.method != "POST":
        return _error(405, "use POST with a JSON body")
    if settings.key and not _authorized(request, settings.key):
        return _error(401, "missing or wrong key: send the header 'Authorization: Bearer <key>'")

    limit = settings.max_request_bytes
    length = request.content_length
    if length is not None and length > limit:
        while request.stream.read(_CHUNK):  # drain so the client can read the answer
            pass
        entry["bytes"] = length
        return _error(413, f"request body is {length} bytes; this endpoint takes at most {limit}")
    data = _read_body(request.stream, limit + 1, settings.body_deadline)
    if data is None:
        return _error(
            408,
            f"the request body took longer than {settings.body_deadline:g} s to arrive; "
            "send it in one go",
        )
    entry["bytes"] = len(data)
    if len(data) > limit:
        while request.stream.read(_CHUNK):
            pass
        return _error(
            413, f"request body is over {limit} bytes; this endpoint takes at most {limit}"
        )

    faults = settings.faults
    faults.transfer(len(data))

    rows: list[dict[str, Any]] = []
    problem = None
    try:
        rows = validate_request(json.loads(data))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError too
        problem = str(exc) if isinstance(exc, RequestError) else "the body is not valid JSON"
    entry["n_studies"] = len(rows)
    entry["sha256"] = [study_digest(row) for row in rows]

    retry_after = _seconds(faults.config.retry_after)
    fault = faults.draw()
    entry["fault"] = fault
    if fault == "drop":
        _drop(request)
        return _error(503, "dropped")  # never reaches the client
    if fault == "429":
        return _error(429, "too many requests (injected)", {"Retry-After": retry_after})
    if fault == "503":
        return _error(503, "service unavailable (injected)")

    if problem is not None:
        return _error(400, problem)

    held = faults.admit()
    if held is None:
        entry["fault"] = "pending_cap"
        return _error(
            429,
            f"too many pending requests ({faults.config.max_pending} already pending); "
            f"retry after {retry_after} s",
            {"Retry-After": retry_after},
        )
    entry["held"] = held
    try:
        entry["scoring"] = faults.score(len(rows))
        body = answer_rows(rows, settings.shape)  # type: ignore[arg-type]
        entry["answers"] = [answer_digest(demo_findings(row)) for row in rows]
        return _answer(200, body)
    finally:
        faults.release()


def _read_body(stream: Any, limit: int, deadline: float) -> bytes | None:
    """Up to ``limit`` bytes of the body (streams may return short reads); None when
    the body takes longer than ``deadline`` seconds (a client dripping it)."""
    parts = []
    size = 0
    give_up = time.monotonic() + deadline
    while size < limit:
        if time.monotonic() > give_up:
            return None
        chunk = stream.read(min(_CHUNK, limit - size))
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
