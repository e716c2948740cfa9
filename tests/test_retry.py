"""retry.py: the one retry policy: which failures are tried again, how often, how long.

Over real HTTP on 127.0.0.1 (the scripted server of test_client.py) and real
socket errors (a refused port, a name under the reserved ``.invalid`` domain).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

import pytest
from test_client import Answer, ScriptedServer, make_client

from cxr_widgets.client import EndpointConfig, ReportGenClient
from cxr_widgets.contract import PreparedRequest, assemble_request, encode_study
from cxr_widgets.errors import EndpointBusyError, EndpointConnectionError
from cxr_widgets.retry import MAX_RETRY_AFTER, REFUSED_RETRIES, parse_retry_after
from cxr_widgets.study import Study


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedServer]:
    scripted = ScriptedServer()
    yield scripted
    scripted.close()


@pytest.fixture(scope="module")
def request_(rg1_path: Path) -> PreparedRequest:
    return assemble_request([encode_study(Study(rg1_path), shortest_side=518)])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # closed again: nothing listens there


# --- Retry-After ----------------------------------------------------------------------------


def test_parse_retry_after_accepts_seconds_dates_and_ms_and_ignores_garbage() -> None:
    assert parse_retry_after({"Retry-After": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "1500"}) == 1.5
    assert parse_retry_after({"x-ms-retry-after-ms": "250"}) == 0.25
    later = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    assert 25 <= (parse_retry_after({"Retry-After": later}) or 0) <= 31
    assert parse_retry_after({"Retry-After": "-5"}) == 0.0
    for garbage in ("soon", "nan", "inf", "Fri, 99 Foo 20x", "1e999"):
        assert parse_retry_after({"Retry-After": garbage}) is None, garbage
    # garbage in one header does not hide a valid one
    assert parse_retry_after({"Retry-After": "soon", "retry-after-ms": "100"}) == 0.1


@pytest.mark.parametrize(
    ("status", "header"),
    [
        (429, "Retry-After"),
        (503, "Retry-After"),
        (429, "retry-after-ms"),
        (503, "x-ms-retry-after-ms"),
    ],
)
def test_garbage_retry_after_is_ignored_and_backed_off_as_usual(
    server: ScriptedServer, request_: PreparedRequest, status: int, header: str
) -> None:
    server.reset(Answer(status, headers={header: "Invalid HTTP date, really"}, body=b""))
    with make_client(server.uri) as client:
        [report] = client.send(request_)
    assert report.findings and len(server.seen) == 2


def test_long_retry_after_stops_with_how_long_the_endpoint_asked(
    server: ScriptedServer, request_: PreparedRequest
) -> None:
    server.reset(default=Answer(429, headers={"Retry-After": "100000"}, body=b""))
    started = time.monotonic()
    with make_client(server.uri) as client, pytest.raises(EndpointBusyError) as info:
        client.send(request_)
    assert time.monotonic() - started < 2
    assert "asked to wait 100,000 s" in str(info.value)
    assert f"{MAX_RETRY_AFTER:g} s this client waits" in str(info.value)
    assert info.value.reason == "retry-after" and info.value.status == 429
    assert len(server.seen) == 1


def test_retry_after_within_the_bound_is_honoured(
    server: ScriptedServer, request_: PreparedRequest
) -> None:
    server.reset(Answer(429, headers={"Retry-After": "1"}, body=b""))
    with make_client(server.uri, max_retry_after=1.5) as client:
        client.send(request_)
    first, second = server.seen
    assert second.at - first.at >= 1.0


# --- the bound on attempts ----------------------------------------------------------------------


@pytest.mark.parametrize("max_retries", [0, 3])
def test_a_429_storm_costs_at_most_max_attempts(
    server: ScriptedServer, request_: PreparedRequest, max_retries: int
) -> None:
    server.reset(default=Answer(429, headers={"Retry-After": "0"}, body=b""))
    with make_client(server.uri, max_retries=max_retries) as client:
        with pytest.raises(EndpointBusyError):
            client.send(request_)
        assert client.max_attempts == max_retries + 1
        assert client.stats.snapshot()["attempts"] == client.max_attempts
    assert len(server.seen) == max_retries + 1


# --- connection failures: fast -------------------------------------------------------------------


def test_unresolvable_host_is_not_retried_and_fails_fast(request_: PreparedRequest) -> None:
    # Default backoff (0.5 s doubling): six retries took about 24 s before.
    config = EndpointConfig("https://no-such-endpoint.invalid/score", key_env=None)
    started = time.monotonic()
    with ReportGenClient(config) as client:
        with pytest.raises(EndpointConnectionError, match="host name could not be resolved"):
            client.send(request_)
        assert client.stats.snapshot()["attempts"] == 1
    assert time.monotonic() - started < 3


def test_refused_connection_is_retried_briefly(request_: PreparedRequest) -> None:
    config = EndpointConfig(f"http://127.0.0.1:{free_port()}/score", key_env=None)
    started = time.monotonic()
    with ReportGenClient(config) as client:
        with pytest.raises(EndpointConnectionError, match="connection refused") as info:
            client.send(request_)
        assert client.stats.snapshot()["attempts"] == REFUSED_RETRIES + 1
    assert time.monotonic() - started < 3
    assert f"after {REFUSED_RETRIES} retries" in str(info.value)
    assert "Check the scoring URI" in str(info.value)


@pytest.mark.parametrize(
    ("uri", "words"),
    [
        ("https://no-such-endpoint.invalid/score", "host name could not be resolved"),
        ("refused", "connection refused"),
    ],
    ids=["unresolvable", "refused"],
)
def test_the_cli_fails_fast_on_a_wrong_endpoint(
    tmp_path: Path, rg1_path: Path, uri: str, words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from cxr_widgets.cli import main

    if uri == "refused":
        uri = f"http://127.0.0.1:{free_port()}/score"
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "frontal,study_id\n" + "".join(f"{rg1_path},s{i}\n" for i in range(3)), encoding="utf-8"
    )
    started = time.monotonic()
    code = main(["run", str(manifest), "--scoring-uri", uri, "--no-progress", "--no-store"])
    elapsed = time.monotonic() - started
    out = capsys.readouterr()
    assert code != 0
    assert words in out.out + out.err
    assert elapsed < 12  # three studies; about 24 s each before
