"""ReportGenClient over real HTTP: success, every error status, retries, deadlines, secrets.

Two servers on 127.0.0.1: a small scripted HTTP server that answers exactly
the statuses and headers a test asks for (so every status Azure ML can send
is covered, including 408/424/504 which the local endpoint does not make),
and the package's LocalEndpoint (real azureml-inference-server-http).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessTokenInfo

from cxr_widgets.client import EndpointConfig, ReportGenClient
from cxr_widgets.contract import PreparedRequest, assemble_request, encode_study, format_response
from cxr_widgets.errors import (
    BadRequestError,
    DeadlineExceededError,
    EndpointAuthError,
    EndpointBusyError,
    EndpointConnectionError,
    EndpointError,
    EndpointNotFoundError,
    EndpointServerError,
    EndpointTimeoutError,
    ModelError,
    RequestTooLargeError,
    ResponseFormatError,
)
from cxr_widgets.report import Box, Finding, Report
from cxr_widgets.study import Study

KEY = "k3y-Very-Secret-0123456789abcdef"
FINDINGS = [
    Finding("Heart size is normal.", []),
    Finding("Small left pleural effusion.", [Box(0.615, 0.705, 0.895, 0.905)]),
]


# --- a scripted HTTP server -----------------------------------------------------------


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None  # None: a valid response for the studies sent
    delay: float = 0.0
    drop: bool = False  # close the connection without answering


@dataclass
class Seen:
    at: float
    path: str
    headers: dict[str, str]
    size: int


class _QuietServer(ThreadingHTTPServer):
    """Ignores clients that hung up first (the deadline tests do that on purpose)."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class ScriptedServer:
    """Answers each POST with the next scripted Answer (then with ``default``)."""

    def __init__(self) -> None:
        self.script: list[Answer] = []
        self.default = Answer()
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self.server = _QuietServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/score"

    def reset(self, *answers: Answer, default: Answer | None = None) -> None:
        with self._lock:
            self.script = list(answers)
            self.default = default or Answer()
            self.seen = []

    def _next(self, seen: Seen) -> Answer:
        with self._lock:
            self.seen.append(seen)
            return self.script.pop(0) if self.script else self.default

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                answer = scripted._next(
                    Seen(time.monotonic(), self.path, dict(self.headers), len(body))
                )
                if answer.delay:
                    time.sleep(answer.delay)
                if answer.drop:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                data = answer.body
                if data is None:
                    rows = len(json.loads(body)["input_data"]["data"])
                    data = json.dumps(format_response([FINDINGS] * rows)).encode()
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("x-request-id", f"req-{len(scripted.seen)}")
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def one_study(rg1_path: Path) -> PreparedRequest:
    """The NEMA chest radiograph, prepared once (518 px shortest side) and reused."""
    study = Study(rg1_path, indication="Cough.")
    return assemble_request([encode_study(study, shortest_side=518)])


@pytest.fixture(scope="module")
def ten_studies(one_study: PreparedRequest) -> PreparedRequest:
    return assemble_request(one_study.studies * 10)


def make_client(uri: str, **options: Any) -> ReportGenClient:
    options.setdefault("key", KEY)
    options.setdefault("backoff_factor", 0.05)
    return ReportGenClient(EndpointConfig(uri, **options))


# --- success and headers ----------------------------------------------------------------


def test_success_sends_the_documented_headers(
    scripted: ScriptedServer, one_study: PreparedRequest
) -> None:
    scripted.reset()
    with make_client(scripted.uri, deployment="blue") as client:
        [report] = client.send(one_study)
    assert [f.text for f in report.findings] == [f.text for f in FINDINGS]
    assert report.findings[1].boxes == FINDINGS[1].boxes
    assert report.request_id == "req-1"
    assert report.image_size == (1841, 1955) or report.image_size == (1955, 1841)
    assert not report.demo
    [seen] = scripted.seen
    assert seen.headers["Authorization"] == f"Bearer {KEY}"
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.headers["azureml-model-deployment"] == "blue"
    assert seen.headers["User-Agent"].startswith("cxr-widgets/")
    assert seen.size == len(one_study.body)


def test_ten_studies_in_one_request(scripted: ScriptedServer, ten_studies: PreparedRequest) -> None:
    scripted.reset()
    with make_client(scripted.uri, max_request_bytes=4_000_000) as client:
        reports = client.send(ten_studies)
    assert len(reports) == 10 and len(scripted.seen) == 1
    assert all(len(r.findings) == 2 for r in reports)


def test_demo_header_marks_reports_demo(
    scripted: ScriptedServer, one_study: PreparedRequest
) -> None:
    scripted.reset(Answer(headers={"x-cxr-widgets-demo": "1"}))
    with make_client(scripted.uri) as client:
        [report] = client.send(one_study)
    assert report.demo


def test_asend_runs_the_same_pipeline(scripted: ScriptedServer, one_study: PreparedRequest) -> None:
    scripted.reset(Answer(status=503), Answer())
    with make_client(scripted.uri) as client:
        [report] = asyncio.run(client.asend(one_study))
    assert len(report.findings) == 2 and len(scripted.seen) == 2


def test_invalid_response_body_is_a_response_format_error(
    scripted: ScriptedServer, one_study: PreparedRequest
) -> None:
    scripted.reset(Answer(body=b'{"result": "ok"}'))
    with make_client(scripted.uri) as client, pytest.raises(ResponseFormatError) as info:
        client.send(one_study)
    assert 'no "output"' in str(info.value) and "x-request-id: req-1" in str(info.value)


# --- statuses that must not be retried ------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "error", "words"),
    [
        (
            Answer(400, body=b'{"error": "row 0 has 2 values but there are 1 columns"}'),
            BadRequestError,
            ["malformed (400)", "row 0 has 2 values", "not retried"],
        ),
        (Answer(401, body=b""), EndpointAuthError, ["(401)", "check the key", "get_keys"]),
        (
            Answer(403, body=b""),
            EndpointAuthError,
            ["(403)", "AzureML Data Scientist", "score/action"],
        ),
        (
            Answer(404, body=b"no healthy upstream"),
            EndpointNotFoundError,
            ["(404)", "ends in /score", "receives traffic"],
        ),
        (
            Answer(408, body=b""),
            EndpointTimeoutError,
            ["request timeout of", "(408)", "fewer studies"],
        ),
        (Answer(413, body=b""), RequestTooLargeError, ["too large (413", "shortest_side"]),
        (
            Answer(
                424,
                headers={
                    "ms-azureml-model-error-statuscode": "500",
                    "ms-azureml-model-error-reason": "CUDA out of memory",
                },
                body=b"",
            ),
            ModelError,
            ["model failed", "model status 500", "CUDA out of memory", "get_logs"],
        ),
    ],
    ids=["400", "401", "403", "404", "408", "413", "424"],
)
def test_client_errors_are_reported_once_with_advice(
    scripted: ScriptedServer,
    one_study: PreparedRequest,
    answer: Answer,
    error: type[EndpointError],
    words: list[str],
) -> None:
    scripted.reset(answer, default=Answer())  # a retry would succeed: it must not happen
    with make_client(scripted.uri) as client, pytest.raises(error) as info:
        client.send(one_study)
    message = str(info.value)
    for word in words:
        assert word in message
    assert info.value.status == answer.status
    assert info.value.request_id == "req-1" and "x-request-id: req-1" in message
    assert KEY not in message
    assert len(scripted.seen) == 1


def test_401_without_any_key_says_how_to_give_one(
    scripted: ScriptedServer, one_study: PreparedRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CXR_ENDPOINT_KEY", raising=False)
    scripted.reset(Answer(401, body=b""))
    with make_client(scripted.uri, key=None) as client, pytest.raises(EndpointAuthError) as info:
        client.send(one_study)
    assert "no key or token was sent" in str(info.value)
    assert "CXR_ENDPOINT_KEY" in str(info.value)
    assert "Authorization" not in scripted.seen[0].headers


# --- retries -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_retried_to_success(
    scripted: ScriptedServer, one_study: PreparedRequest, status: int
) -> None:
    scripted.reset(Answer(status, body=b"upstream failure"), Answer(status, body=b""))
    with make_client(scripted.uri) as client:
        [report] = client.send(one_study)
        assert client.stats.snapshot()["retries"] == 2
    assert len(report.findings) == 2 and len(scripted.seen) == 3


def test_429_waits_for_retry_after(scripted: ScriptedServer, one_study: PreparedRequest) -> None:
    scripted.reset(Answer(429, headers={"Retry-After": "1"}, body=b""))
    with make_client(scripted.uri) as client:
        client.send(one_study)
    first, second = scripted.seen
    assert second.at - first.at >= 1.0  # the endpoint's Retry-After was honoured


def test_429_until_retries_run_out_is_endpoint_busy(
    scripted: ScriptedServer, one_study: PreparedRequest
) -> None:
    scripted.reset(default=Answer(429, body=b""))
    with (
        make_client(scripted.uri, max_retries=2) as client,
        pytest.raises(EndpointBusyError) as info,
    ):
        client.send(one_study)
    assert "busy (429" in str(info.value) and "after 2 retries" in str(info.value)
    assert info.value.status == 429 and len(scripted.seen) == 3
    stats = client.stats.snapshot()
    assert stats["busy"] == 3 and stats["retries"] == 2 and stats["failures"] == 1


def test_503_until_retries_run_out_is_a_server_error(
    scripted: ScriptedServer, one_study: PreparedRequest
) -> None:
    scripted.reset(default=Answer(503, body=b'{"message": "no healthy upstream"}'))
    with (
        make_client(scripted.uri, max_retries=1) as client,
        pytest.raises(EndpointServerError) as info,
    ):
        client.send(one_study)
    assert "failed with 503 after 1 retry" in str(info.value)
    assert "no healthy upstream" in str(info.value)


def test_dropped_connection_is_retried(
    scripted: ScriptedServer, one_study: PreparedRequest
) -> None:
    scripted.reset(Answer(drop=True), Answer(drop=True))
    with make_client(scripted.uri) as client:
        [report] = client.send(one_study)
    assert len(report.findings) == 2 and len(scripted.seen) == 3


def test_always_dropped_connection_is_a_connection_error(
    scripted: ScriptedServer, one_study: PreparedRequest
) -> None:
    scripted.reset(default=Answer(drop=True))
    with (
        make_client(scripted.uri, max_retries=2) as client,
        pytest.raises(
            EndpointConnectionError, match=r"dropped the connection .* \(after 2 retries\)"
        ),
    ):
        client.send(one_study)
    assert len(scripted.seen) == 3


def test_connection_refused(one_study: PreparedRequest) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    with (
        make_client(f"http://127.0.0.1:{port}/score", max_retries=1) as client,
        pytest.raises(
            EndpointConnectionError, match=r"could not connect.*connection refused"
        ) as info,
    ):
        client.send(one_study)
    assert info.value.status is None


# --- deadlines and timeouts --------------------------------------------------------------------


def test_retry_after_beyond_the_deadline_fails_at_once(
    scripted: ScriptedServer, one_study: PreparedRequest
) -> None:
    scripted.reset(Answer(429, headers={"Retry-After": "30"}, body=b""))
    started = time.monotonic()
    with (
        make_client(scripted.uri, deadline=5) as client,
        pytest.raises(DeadlineExceededError, match="asked to wait 30 s") as info,
    ):
        client.send(one_study)
    assert time.monotonic() - started < 4
    assert info.value.status == 429 and info.value.request_id == "req-1"


def test_latency_longer_than_the_deadline(
    scripted: ScriptedServer, one_study: PreparedRequest
) -> None:
    scripted.reset(default=Answer(delay=3.0))
    started = time.monotonic()
    with (
        make_client(scripted.uri, deadline=1.0) as client,
        pytest.raises(DeadlineExceededError, match="1 s deadline"),
    ):
        client.send(one_study)
    assert time.monotonic() - started < 2.5
    assert len(scripted.seen) == 1


def test_read_timeout_is_not_retried(scripted: ScriptedServer, one_study: PreparedRequest) -> None:
    scripted.reset(default=Answer(delay=2.0))
    with (
        make_client(scripted.uri, read_timeout=0.5, deadline=30) as client,
        pytest.raises(EndpointTimeoutError, match=r"no answer within the 0.5 s read timeout"),
    ):
        client.send(one_study)
    assert len(scripted.seen) == 1


# --- size budget --------------------------------------------------------------------------------


def test_request_over_the_budget_is_not_sent(
    scripted: ScriptedServer, ten_studies: PreparedRequest
) -> None:
    scripted.reset()
    budget = len(ten_studies.body) - 1
    with (
        make_client(scripted.uri, max_request_bytes=budget) as client,
        pytest.raises(
            RequestTooLargeError,
            match=r"over the budget of [\d,]+ bytes.*shortest_side.*fewer studies",
        ) as info,
    ):
        client.send(ten_studies)
    assert info.value.status is None and scripted.seen == []


# --- Microsoft Entra ID --------------------------------------------------------------------------


class CountingCredential:
    """An azure-core TokenCredential: issues numbered tokens with a given lifetime."""

    def __init__(self, lifetime: float) -> None:
        self.lifetime = lifetime
        self.scopes: list[tuple[str, ...]] = []

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        self.scopes.append(scopes)
        return AccessTokenInfo(f"entra-{len(self.scopes)}", int(time.time() + self.lifetime))

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        raise AssertionError("azure-core prefers get_token_info when it exists")

    def close(self) -> None:
        return None

    def __enter__(self) -> CountingCredential:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def test_entra_token_is_cached_and_scoped(
    scripted: ScriptedServer, one_study: PreparedRequest
) -> None:
    scripted.reset()
    credential = CountingCredential(lifetime=3600)
    with make_client(scripted.uri, key=None, credential=credential) as client:
        client.send(one_study)
        client.send(one_study)
    assert credential.scopes == [("https://ml.azure.com/.default",)]
    assert [s.headers["Authorization"] for s in scripted.seen] == ["Bearer entra-1"] * 2


def test_entra_token_is_refreshed_when_it_expires(
    scripted: ScriptedServer, one_study: PreparedRequest
) -> None:
    scripted.reset()
    credential = CountingCredential(lifetime=-1)  # already expired when issued
    with make_client(scripted.uri, key=None, credential=credential) as client:
        client.send(one_study)
        client.send(one_study)
    assert [s.headers["Authorization"] for s in scripted.seen] == [
        "Bearer entra-1",
        "Bearer entra-2",
    ]


def test_entra_token_failure_is_an_auth_error(
    scripted: ScriptedServer, one_study: PreparedRequest
) -> None:
    from azure.core.exceptions import ClientAuthenticationError

    class Refusing(CountingCredential):
        def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
            raise ClientAuthenticationError("AADSTS700016: application not found in tenant")

    scripted.reset()
    with (
        make_client(scripted.uri, key=None, credential=Refusing(0)) as client,
        pytest.raises(
            EndpointAuthError, match=r"could not get a Microsoft Entra ID token.*AADSTS700016"
        ),
    ):
        client.send(one_study)
    assert scripted.seen == []


# --- secrets ------------------------------------------------------------------------------------


def test_key_never_logged_even_on_a_401(
    scripted: ScriptedServer, one_study: PreparedRequest, caplog: pytest.LogCaptureFixture
) -> None:
    scripted.reset(Answer(401, body=json.dumps({"error": f"bad key Bearer {KEY}"}).encode()))
    with caplog.at_level(logging.DEBUG):
        with make_client(scripted.uri) as client, pytest.raises(EndpointAuthError) as info:
            client.send(one_study)
        logging.getLogger("test").debug("%r %s", client, client.config.describe())
    assert KEY not in str(info.value) and KEY not in repr(info.value)
    assert "***" in str(info.value)  # the server echoed the key: redacted in the message
    assert "Authorization" in caplog.text and "REDACTED" in caplog.text  # logging is on...
    assert KEY not in caplog.text  # ...and the key is not in it
    assert "Cough." not in caplog.text  # nor is patient text


# --- against the local endpoint (real azureml-inference-server-http) -------------------------


@pytest.fixture(scope="module")
def local() -> Iterator[Any]:
    """A keyed local endpoint taking up to 2 MB per request."""
    from cxr_widgets.local.server import LocalEndpoint

    with LocalEndpoint(key=KEY, max_request_bytes=2_000_000) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def big_request(rg1_path: Path) -> PreparedRequest:
    """Ten copies of the radiograph at 1024 px: about 4 MB, over the endpoint's 2 MB."""
    encoded = encode_study(Study(rg1_path), shortest_side=1024)
    return assemble_request([encoded] * 10)


def statuses_since(endpoint: Any, start: int) -> list[Any]:
    return [entry["status"] for entry in endpoint.received()[start:]]


@pytest.mark.server
def test_local_one_study(local: Any, one_study: PreparedRequest) -> None:
    with make_client(local.scoring_uri) as client:
        [report] = client.send(one_study)
    assert report.demo  # the local endpoint marks its canned findings
    assert report.findings and report.request_id
    assert report.source == client.label == local.url


@pytest.mark.server
def test_local_ten_studies(local: Any, ten_studies: PreparedRequest) -> None:
    start = len(local.received())
    with make_client(local.scoring_uri, max_request_bytes=2_000_000) as client:
        reports = client.send(ten_studies)
    assert len(reports) == 10 and all(r.demo and r.findings for r in reports)
    [entry] = local.received()[start:]
    assert entry["status"] == 200 and entry["n_studies"] == 10


@pytest.mark.server
def test_local_generate_from_a_study(local: Any, rg1_path: Path) -> None:
    with make_client(local.scoring_uri) as client:
        client.image_options = {"shortest_side": 518}
        report = client.generate(Study(rg1_path))
    assert report.demo and report.image_size is not None


@pytest.mark.server
def test_local_wrong_key(local: Any, one_study: PreparedRequest) -> None:
    start = len(local.received())
    with (
        make_client(local.scoring_uri, key="wrong-key") as client,
        pytest.raises(
            EndpointAuthError, match=r"refused the credentials \(401\): check the key"
        ) as info,
    ):
        client.send(one_study)
    assert info.value.status == 401 and info.value.request_id
    assert statuses_since(local, start) == [401]  # not retried


@pytest.mark.server
def test_local_wrong_path(local: Any, one_study: PreparedRequest) -> None:
    with (
        make_client(local.url + "/predict") as client,
        pytest.raises(
            EndpointNotFoundError,
            match=r"nothing answers at http://127\.0\.0\.1:\d+/predict \(404\)",
        ),
    ):
        client.send(one_study)


@pytest.mark.server
def test_local_bad_request_is_not_retried(local: Any, one_study: PreparedRequest) -> None:
    bad = PreparedRequest(
        payload={
            "input_data": {
                "columns": ["frontal_image", "x_ray_notes"],
                "index": [0],
                "data": [[one_study.studies[0].row[0], "?"]],
            }
        },
        studies=one_study.studies,
    )
    start = len(local.received())
    with (
        make_client(local.scoring_uri) as client,
        pytest.raises(
            BadRequestError, match=r"malformed \(400\)\. The endpoint said: unknown column"
        ),
    ):
        client.send(bad)
    assert statuses_since(local, start) == [400]


@pytest.mark.server
def test_local_413_from_the_server(local: Any, big_request: PreparedRequest) -> None:
    start = len(local.received())
    with (
        make_client(local.scoring_uri, max_request_bytes=None) as client,
        pytest.raises(
            RequestTooLargeError, match=r"too large \(413, [\d.]+ MB sent\).*shortest_side"
        ) as info,
    ):
        client.send(big_request)
    assert info.value.status == 413
    assert statuses_since(local, start) == [413]


@pytest.mark.server
def test_local_client_budget_stops_it_before_sending(
    local: Any, big_request: PreparedRequest
) -> None:
    start = len(local.received())
    with (
        make_client(local.scoring_uri, max_request_bytes=2_000_000) as client,
        pytest.raises(RequestTooLargeError, match="It was not sent") as info,
    ):
        client.send(big_request)
    assert info.value.status is None
    assert statuses_since(local, start) == []


@pytest.mark.server
def test_local_entra_token_reaches_the_endpoint(local: Any, one_study: PreparedRequest) -> None:
    class KeyAsToken(CountingCredential):
        def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
            self.scopes.append(scopes)
            return AccessTokenInfo(KEY, int(time.time() + 3600))

    credential = KeyAsToken(0)
    with make_client(local.scoring_uri, key=None, credential=credential) as client:
        [report] = client.send(one_study)
        client.send(one_study)
    assert report.findings
    assert credential.scopes == [("https://ml.azure.com/.default",)]  # fetched once, cached


@pytest.fixture(scope="module")
def faulty() -> Iterator[Any]:
    """Seeded faults: 20% 429 (Retry-After 0.2 s), 10% 503, 10% dropped connections."""
    from cxr_widgets.local.faults import FaultConfig
    from cxr_widgets.local.server import LocalEndpoint

    faults = FaultConfig(rate_429=0.2, rate_503=0.1, rate_drop=0.1, retry_after=0.2, seed=7)
    with LocalEndpoint(faults=faults) as endpoint:
        yield endpoint


@pytest.mark.server
def test_local_faults_are_retried_to_success(faulty: Any, one_study: PreparedRequest) -> None:
    with make_client(faulty.scoring_uri, key=None) as client:
        for _ in range(12):
            [report] = client.send(one_study)
            assert report.findings
        stats = client.stats.snapshot()
    log = faulty.received()
    faults = {entry["fault"] for entry in log}
    assert {"429", "503", "drop"} <= faults  # every kind happened and was survived
    assert sum(entry["status"] == 200 for entry in log) == 12
    assert stats["retries"] == len(log) - 12 and stats["failures"] == 0
    assert stats["busy"] == sum(entry["fault"] == "429" for entry in log)


@pytest.fixture(scope="module")
def slow() -> Iterator[Any]:
    """One instance, 1 s per request, at most 2 pending (then 429 with Retry-After: 1)."""
    from cxr_widgets.local.faults import FaultConfig
    from cxr_widgets.local.server import LocalEndpoint

    faults = FaultConfig(latency=1.0, instances=1, pending_per_instance=2, retry_after=1.0)
    with LocalEndpoint(faults=faults) as endpoint:
        yield endpoint


@pytest.mark.server
def test_local_deadline_is_respected(slow: Any, one_study: PreparedRequest) -> None:
    started = time.monotonic()
    with (
        make_client(slow.scoring_uri, key=None, deadline=0.4) as client,
        pytest.raises(DeadlineExceededError, match=r"0\.4 s deadline"),
    ):
        client.send(one_study)
    assert time.monotonic() - started < 1.0  # did not wait for the 1 s answer


@pytest.mark.server
def test_local_pending_cap_429_is_retried(slow: Any, one_study: PreparedRequest) -> None:
    time.sleep(1.2)  # let the deadline test's abandoned request finish
    start = len(slow.received())
    results: list[Any] = []
    with make_client(slow.scoring_uri, key=None, deadline=60) as client:

        def one() -> None:
            try:
                results.append(client.send(one_study))
            except Exception as exc:  # reported below
                results.append(exc)

        threads = [threading.Thread(target=one) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stats = client.stats.snapshot()
    assert all(isinstance(r, list) and r[0].findings for r in results), results
    log = slow.received()[start:]
    assert any(entry["fault"] == "pending_cap" for entry in log)  # the cap answered 429...
    assert sum(entry["status"] == 200 for entry in log) == 4  # ...and every study got through
    assert stats["busy"] >= 1 and stats["retries"] >= 1


def test_entra_token_never_logged(
    scripted: ScriptedServer, one_study: PreparedRequest, caplog: pytest.LogCaptureFixture
) -> None:
    scripted.reset(Answer(401, body=b""))
    credential = CountingCredential(lifetime=3600)
    with (
        caplog.at_level(logging.DEBUG),
        make_client(scripted.uri, key=None, credential=credential) as client,
        pytest.raises(EndpointAuthError, match="AzureML Data Scientist") as info,
    ):
        client.send(one_study)
    assert scripted.seen[0].headers["Authorization"] == "Bearer entra-1"
    assert "entra-1" not in caplog.text and "entra-1" not in str(info.value)


def test_clients_refuse_to_be_pickled() -> None:
    import pickle

    client = make_client("https://myep.eastus.inference.ml.azure.com/score")
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(client)
    client.close()


# --- hostile servers: secrets echoed, dripped answers, huge answers -----------------------


class RawServer:
    """Accepts connections on 127.0.0.1 and hands each socket to ``serve(sock)``."""

    def __init__(self, serve: Any) -> None:
        self.serve = serve
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}/score"

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._run, args=(sock,), daemon=True).start()

    def _run(self, sock: socket.socket) -> None:
        with sock:
            try:
                _read_request(sock)
                self.serve(sock)
            except OSError:
                pass

    def close(self) -> None:
        self.listener.close()


def _read_request(sock: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(rest) < length:
        rest += sock.recv(65536)


def _drip(data: bytes, every: float) -> Any:
    def serve(sock: socket.socket) -> None:
        for byte in data:
            sock.sendall(bytes([byte]))
            time.sleep(every)

    return serve


def test_the_deadline_bounds_a_dripped_body(one_study: PreparedRequest) -> None:
    body = json.dumps(format_response([FINDINGS])).encode()
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode()

    def serve(sock: socket.socket) -> None:
        sock.sendall(head)
        _drip(body, 0.3)(sock)

    server = RawServer(serve)
    started = time.monotonic()
    try:
        with (
            make_client(server.uri, deadline=1.5, read_timeout=5) as client,
            pytest.raises(DeadlineExceededError, match="still sending its answer"),
        ):
            client.send(one_study)
    finally:
        server.close()
    assert time.monotonic() - started < 3


def test_the_deadline_bounds_dripped_headers(one_study: PreparedRequest) -> None:
    server = RawServer(_drip(b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 200 + b"\r\n\r\n", 0.2))
    started = time.monotonic()
    try:
        with (
            make_client(server.uri, deadline=1.5, read_timeout=5) as client,
            pytest.raises(DeadlineExceededError),
        ):
            client.send(one_study)
    finally:
        server.close()
    assert time.monotonic() - started < 3
    assert server.connections == 1  # cut by the deadline, not retried


@pytest.mark.parametrize("gzip_bomb", [False, True], ids=["plain", "gzip-bomb"])
def test_answers_over_the_size_cap_are_refused(
    scripted: ScriptedServer, one_study: PreparedRequest, gzip_bomb: bool
) -> None:
    import gzip

    from cxr_widgets.contract import MAX_RESPONSE_BYTES

    decoded = b"[" + b" " * (MAX_RESPONSE_BYTES * (6 if gzip_bomb else 1)) + b"]"
    if gzip_bomb:
        body = gzip.compress(decoded, compresslevel=9)
        assert len(body) < MAX_RESPONSE_BYTES // 50  # small on the wire, huge decoded
        scripted.reset(Answer(body=body, headers={"Content-Encoding": "gzip"}))
    else:
        scripted.reset(Answer(body=decoded))
    with (
        make_client(scripted.uri) as client,
        pytest.raises(ResponseFormatError, match=f"more than {MAX_RESPONSE_BYTES:,} bytes"),
    ):
        client.send(one_study)


def _runs(secret: str, length: int = 8) -> list[str]:
    return [secret[i : i + length] for i in range(len(secret) - length + 1)]


def assert_no_secret(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text
        for run in _runs(secret):
            assert run not in text, f"{run!r} of a secret leaked"


@pytest.mark.parametrize(
    "answer",
    [
        Answer(
            424,
            headers={"ms-azureml-model-error-reason": f"bad header Authorization: Bearer {KEY}"},
            body=b"",
        ),
        # A 400 body quoting the key past the 300 characters a message keeps.
        Answer(400, body=json.dumps({"error": "x" * 290 + f" Bearer {KEY}"}).encode()),
        Answer(400, body=json.dumps({"error": f"key ...{KEY[5:23]}... was cut"}).encode()),
        Answer(503, body=f"<html>proxy saw Authorization: Bearer {KEY}</html>".encode()),
        Answer(200, body=json.dumps([{"output": json.dumps([[f"echo {KEY}", None]])}]).encode()),
    ],
    ids=["424-reason", "400-long", "400-partial", "503-body", "finding-text"],
)
def test_an_echoed_key_is_redacted_whole_or_in_part_everywhere(
    scripted: ScriptedServer,
    one_study: PreparedRequest,
    answer: Answer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    scripted.reset(answer, default=answer)
    with caplog.at_level(logging.DEBUG), make_client(scripted.uri, max_retries=0) as client:
        try:
            (report,) = client.send(one_study)
            text = report.to_json() + report.to_csv() + repr(report)
        except EndpointError as error:
            text = str(error) + repr(error) + str(error.reason or "")
    assert "**" in text  # redacted (then maybe shortened, cutting the mark)
    assert_no_secret(text + caplog.text, KEY)


def test_an_echoed_entra_token_is_redacted(
    scripted: ScriptedServer, one_study: PreparedRequest
) -> None:
    class LongTokenCredential(CountingCredential):
        def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
            self.scopes.append(scopes)
            token = f"eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.token-{len(self.scopes)}-xyz"
            return AccessTokenInfo(token, int(time.time() + 3600))

    credential = LongTokenCredential(3600)
    token = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.token-1-xyz"
    scripted.reset(default=Answer(400, body=json.dumps({"error": f"got {token[3:40]}"}).encode()))
    with (
        make_client(scripted.uri, key=None, key_env=None, credential=credential) as client,
        pytest.raises(BadRequestError) as info,
    ):
        client.send(one_study)
    assert scripted.seen[0].headers["Authorization"] == f"Bearer {token}"
    assert "***" in str(info.value)
    assert_no_secret(str(info.value), token)


def test_loopback_never_goes_through_a_proxy(
    scripted: ScriptedServer, one_study: PreparedRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = ScriptedServer()  # would record the key if the request went through it
    try:
        proxy_url = proxy.uri.removesuffix("/score")
        for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"):
            monkeypatch.setenv(name, proxy_url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        scripted.reset()
        for uri in (scripted.uri, scripted.uri.replace("127.0.0.1", "localhost")):
            with make_client(uri) as client:
                client.send(one_study)
        assert proxy.seen == [] and len(scripted.seen) == 2
    finally:
        proxy.close()


def test_a_key_over_plain_http_to_another_host_needs_an_opt_in() -> None:
    from cxr_widgets.errors import ConfigError

    with pytest.raises(ConfigError, match=r"clear text.*allow_insecure_http=True") as info:
        EndpointConfig("http://scoring.example.org/score", key=KEY)
    assert KEY not in str(info.value)
    with pytest.warns(UserWarning, match="unencrypted"):
        config = EndpointConfig(
            "http://scoring.example.org/score", key=KEY, allow_insecure_http=True
        )
    assert config.allow_insecure_http and KEY not in repr(config)


@pytest.mark.parametrize("bad", ["é", "\u200b", "\n", "\x00"], ids=["e-acute", "zwsp", "nl", "nul"])
def test_a_key_with_a_non_ascii_character_is_a_config_error_without_the_key(bad: str) -> None:
    from cxr_widgets.errors import ConfigError

    key = KEY[:10] + bad + KEY[10:]
    with pytest.raises(ConfigError, match="not printable ASCII") as info:
        EndpointConfig("https://ep.eastus.inference.ml.azure.com/score", key=key)
    shown = str(info.value) + repr(info.value)
    assert_no_secret(shown, KEY[:10], KEY[10:])


def test_a_bad_box_costs_the_box_not_the_report(
    scripted: ScriptedServer, one_study: PreparedRequest
) -> None:
    findings = [
        ["Swapped corners.", [[0.6, 0.7, 0.2, 0.3]]],
        ["Slightly outside.", [[-0.01, 0.2, 1.02, 0.4]]],
        ["Unplaceable.", [[2.0, 3.0, 4.0, 5.0], [0.1, 0.1, 0.2, 0.2]]],
    ]
    scripted.reset(Answer(body=json.dumps([{"output": json.dumps(findings)}]).encode()))
    with make_client(scripted.uri) as client:
        (report,) = client.send(one_study)
    assert [f.text for f in report.findings] == [f[0] for f in findings]
    assert report.findings[0].boxes == (Box(0.2, 0.3, 0.6, 0.7),)
    assert report.findings[1].boxes == (Box(0.0, 0.2, 1.0, 0.4),)
    assert report.findings[2].boxes == (Box(0.1, 0.1, 0.2, 0.2),)
    assert len(report.warnings) == 3
    assert "box repaired" in report.warnings[0] and "box dropped" in report.warnings[2]
    assert Report.from_json(report.to_json()).warnings == report.warnings


def test_a_transport_error_quoting_the_key_is_redacted_before_it_is_shortened(
    one_study: PreparedRequest,
) -> None:
    from azure.core.exceptions import AzureError
    from azure.core.pipeline.transport import HttpTransport

    class Failing(HttpTransport):  # type: ignore[misc]
        def send(self, request: Any, **kwargs: Any) -> Any:
            raise AzureError("y" * 280 + f" Bearer {KEY}")  # a 300-char cut keeps 12 of it

        def open(self) -> None:
            return None

        def close(self) -> None:
            return None

        def __enter__(self) -> Failing:
            return self

        def __exit__(self, *args: object) -> None:
            return None

    config = EndpointConfig("http://127.0.0.1:9/score", key=KEY, max_retries=0)
    with (
        ReportGenClient(config, transport=Failing()) as client,
        pytest.raises(EndpointError, match="failed") as info,
    ):
        client.send(one_study)
    assert_no_secret(str(info.value), KEY)
