"""The local endpoint: the real azureml-inference-server-http on 127.0.0.1, spoken to in raw HTTP.

Each server start costs under a second; servers are module-scoped fixtures.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import io
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from doc_examples import DOC_REQUEST_FRONTAL, DOC_REQUEST_FULL, DOC_RESPONSE
from PIL import Image

from cxr_widgets.contract import build_request, parse_response, request_payload, validate_request
from cxr_widgets.demo import DemoBackend
from cxr_widgets.errors import ConfigError, LocalEndpointError
from cxr_widgets.local.demo_findings import (
    DOCUMENTATION_EXAMPLE,
    VARIANTS,
    answer_digest,
    demo_findings,
    wire_digest,
)
from cxr_widgets.local.faults import FaultConfig
from cxr_widgets.local.server import LocalEndpoint, free_port
from cxr_widgets.study import Study

KEY = "local-test-key-" + uuid.uuid4().hex
MAX_BYTES = 1_000_000

DOC_SIMPLE, DOC_COMPLEX = DOC_REQUEST_FRONTAL, DOC_REQUEST_FULL
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def png(seed: int, size: tuple[int, int] = (48, 40)) -> bytes:
    """A small grayscale PNG whose pixels depend on ``seed``."""
    rng = random.Random(seed)
    image = Image.new("L", size)
    image.putdata([rng.randrange(256) for _ in range(size[0] * size[1])])
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def study(seed: int, **text: str) -> Study:
    return Study(frontal_image=png(seed), **text)


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


def post(
    endpoint: LocalEndpoint,
    body: bytes | str | dict[str, Any],
    *,
    key: str | None = KEY,
    headers: dict[str, str] | None = None,
    chunked: bool = False,
    timeout: float = 60,
) -> Answer:
    """POST to /score with http.client (no proxies, no retries)."""
    if isinstance(body, dict):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode("utf-8")
    sent = {"Content-Type": "application/json", **(headers or {})}
    if key is not None:
        sent["Authorization"] = f"Bearer {key}"
    conn = http.client.HTTPConnection("127.0.0.1", endpoint.port, timeout=timeout)
    try:
        if chunked:
            conn.request("POST", "/score", iter([body]), sent, encode_chunked=True)
        else:
            conn.request("POST", "/score", body, sent)
        response = conn.getresponse()
        return Answer(
            response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        )
    finally:
        conn.close()


@pytest.fixture(scope="module")
def endpoint() -> Iterator[LocalEndpoint]:
    with LocalEndpoint(key=KEY, max_request_bytes=MAX_BYTES) as server:
        yield server


def entries_for(endpoint: LocalEndpoint, answer: Answer) -> list[dict[str, Any]]:
    return [e for e in endpoint.received() if e["request_id"] == answer.headers["x-request-id"]]


# --- the contract -------------------------------------------------------------------


def test_health_probe(endpoint: LocalEndpoint) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", endpoint.port, timeout=10)
    conn.request("GET", "/")
    response = conn.getresponse()
    assert (response.status, response.read()) == (200, b"Healthy")
    conn.close()
    assert endpoint.scoring_uri == f"http://127.0.0.1:{endpoint.port}/score"
    assert endpoint.startup_seconds is not None and endpoint.startup_seconds > 0


@pytest.mark.parametrize("example", [DOC_SIMPLE, DOC_COMPLEX], ids=["simple", "complex"])
def test_documentation_examples_are_answered_in_records_shape(
    endpoint: LocalEndpoint, example: str
) -> None:
    answer = post(endpoint, example)
    assert answer.status == 200, answer.body
    assert answer.headers["x-cxr-widgets-demo"] == "1"
    assert UUID.match(answer.headers["x-request-id"])
    body = answer.json()
    # The deployed service's shape: one record per study, "output" a JSON string.
    assert isinstance(body, list) and len(body) == 1
    assert isinstance(body[0]["output"], str)
    [report] = parse_response(answer.body, n_studies=1)
    assert [f.to_wire() for f in report.findings] == [
        f.to_wire() for f in demo_findings(validate_request(json.loads(example))[0])
    ]
    assert len(report.findings) >= 3
    for finding in report.findings:
        for box in finding.boxes:
            for value in box.as_list():
                assert abs(value * 100 - 0.5 - round(value * 100 - 0.5)) < 1e-9  # (k+0.5)/100


def test_canned_answers_are_the_documented_example_and_variants() -> None:
    assert json.loads(DOC_RESPONSE)["output"] == [list(f) for f in DOCUMENTATION_EXAMPLE]
    rows = [validate_request(build_request(study(seed)))[0] for seed in range(12)]
    chosen = {tuple(f.text for f in demo_findings(row)) for row in rows}
    assert len(chosen) > 1  # different studies, different canned answers
    assert chosen <= {tuple(text for text, _ in variant) for variant in VARIANTS}


def test_params_beside_input_data_is_accepted(endpoint: LocalEndpoint) -> None:
    # The official notebooks send "params": {} next to "input_data".
    payload = {**json.loads(DOC_COMPLEX), "params": {}}
    answer = post(endpoint, payload)
    assert answer.status == 200
    assert len(parse_response(answer.body, n_studies=1)) == 1


def test_ten_studies_in_one_request(endpoint: LocalEndpoint) -> None:
    studies = [study(seed, indication=f"case {seed}") for seed in range(10)]
    answer = post(endpoint, build_request(studies))
    assert answer.status == 200, answer.body
    reports = parse_response(answer.body, n_studies=10)
    expected = DemoBackend().generate(studies)
    assert [r.to_dict()["findings"] for r in reports] == [r.to_dict()["findings"] for r in expected]


def test_same_answers_as_demo_backend(endpoint: LocalEndpoint, rg1_path: Path) -> None:
    sample = Study(frontal_image=rg1_path, indication="Cough.")
    backend = DemoBackend(image_options={"shortest_side": 518})
    request = backend.prepare(sample)
    answer = post(endpoint, request.body)
    assert answer.status == 200
    [report] = parse_response(answer.body, n_studies=1)
    assert report.findings == backend.generate(sample).findings


PNG64 = base64.b64encode(png(1)).decode()
GIF64 = base64.b64encode(b"GIF89a" + bytes(40)).decode()

BAD_REQUESTS = {
    "not JSON": (b"{'input_data': ", "not valid JSON"),
    "truncated JSON": (
        json.dumps(request_payload(["frontal_image"], [[PNG64]]))[:-3],
        "not valid JSON",
    ),
    "not UTF-8": (b'{"input_data": "\xff\xfe"}', "not valid JSON"),
    "no input_data": ({"data": [[PNG64]]}, "input_data"),
    "unknown column": (
        request_payload(["frontal_image", "age"], [[PNG64, "70"]]),
        "unknown column",
    ),
    "short row": (
        request_payload(["frontal_image", "indication"], [[PNG64]]),
        "row 0 has 1 values",
    ),
    "long row": (request_payload(["frontal_image"], [[PNG64, "x"]]), "row 0 has 2 values"),
    "eleven rows": (request_payload(["frontal_image"], [[PNG64]] * 11), "at most 10"),
    "GIF image": (request_payload(["frontal_image"], [[GIF64]]), "not PNG or JPEG"),
    "text as image": (request_payload(["frontal_image"], [["hello world"]]), "not base64"),
    "base64 text as image": (
        request_payload(["frontal_image"], [[base64.b64encode(b"hello world").decode()]]),
        "not PNG or JPEG",
    ),
    "number value": (request_payload(["frontal_image", "indication"], [[PNG64, 5]]), "strings"),
    "no frontal image": (request_payload(["indication"], [["cough"]]), "frontal_image"),
    # A base64 string cut right after the PNG signature: an image in name only.
    "truncated base64 PNG": (
        request_payload(["frontal_image"], [[base64.b64encode(png(1)[:8]).decode()]]),
        "cut short or damaged",
    ),
    "PNG cut in its pixel data": (
        request_payload(["frontal_image"], [[base64.b64encode(png(1)[:-40]).decode()]]),
        "cut short or damaged",
    ),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_requests_get_400_with_json_error(endpoint: LocalEndpoint, case: str) -> None:
    body, expected = BAD_REQUESTS[case]
    answer = post(endpoint, body)
    assert answer.status == 400, answer.body
    assert expected in answer.json()["error"]
    assert UUID.match(answer.headers["x-request-id"])
    [entry] = entries_for(endpoint, answer)
    assert entry["status"] == 400 and entry["sha256"] == [] and entry["n_studies"] == 0


def test_413_above_the_size_limit(endpoint: LocalEndpoint) -> None:
    noise = Image.frombytes("L", (1000, 1000), os.urandom(1_000_000))
    out = io.BytesIO()
    noise.save(out, format="PNG")
    big = request_payload(["frontal_image"], [[base64.b64encode(out.getvalue()).decode()]])
    body = json.dumps(big).encode()
    assert len(body) > MAX_BYTES
    answer = post(endpoint, body)
    assert answer.status == 413
    assert f"at most {MAX_BYTES}" in answer.json()["error"]
    # Without Content-Length (chunked) the limit holds too.
    assert post(endpoint, body, chunked=True).status == 413
    # Under the limit the same endpoint answers.
    assert post(endpoint, build_request(study(3)), chunked=True).status == 200


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-key", f"bearer {KEY}", KEY, f"Bearer {KEY}x", f"Bearer  {KEY}"],
    ids=["missing", "wrong", "lowercase scheme", "no scheme", "longer", "two spaces"],
)
def test_401_without_the_right_key(endpoint: LocalEndpoint, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    answer = post(endpoint, DOC_SIMPLE, key=None, headers=headers)
    assert answer.status == 401
    assert "Authorization: Bearer" in answer.json()["error"]
    assert KEY not in answer.body.decode()
    assert UUID.match(answer.headers["x-request-id"])


def test_the_key_is_never_printed_or_logged(endpoint: LocalEndpoint) -> None:
    assert post(endpoint, DOC_SIMPLE).status == 200
    assert post(endpoint, DOC_SIMPLE, key="wrong").status == 401
    assert KEY not in endpoint.stderr_tail(lines=100_000)
    assert KEY not in Path(endpoint.log_path).read_text()  # type: ignore[arg-type]
    assert KEY not in repr(endpoint)


def test_request_log_has_study_hashes_and_no_patient_text(endpoint: LocalEndpoint) -> None:
    secret = "Patient John Q. Example, 71, indication text " + uuid.uuid4().hex
    studies = [study(10, indication=secret), study(11, indication=secret)]
    request = DemoBackend().prepare(studies)
    first = post(endpoint, request.body)
    again = post(endpoint, request.body)
    assert first.status == again.status == 200
    expected = [wire_digest(e.columns, e.row) for e in request.studies]
    assert len(set(expected)) == 2
    for answer in (first, again):
        [entry] = entries_for(endpoint, answer)
        assert entry["sha256"] == expected
        reports = parse_response(answer.body, n_studies=2)
        assert entry["answers"] == [answer_digest(r.findings) for r in reports]
        assert entry["n_studies"] == 2 and entry["status"] == 200
        assert entry["bytes"] == len(request.body)
    answered = endpoint.received_digests()
    assert answered.count(expected[0]) == answered.count(expected[1]) == 2
    log_text = Path(endpoint.log_path).read_text()  # type: ignore[arg-type]
    assert secret not in log_text and "John" not in log_text
    assert secret not in endpoint.stderr_tail(lines=100_000)
    # The digest ignores base64 line breaks: the documentation's example equals its one-line form.
    one_line = json.loads(DOC_SIMPLE)
    one_line["input_data"]["data"][0][0] = one_line["input_data"]["data"][0][0].replace("\n", "")
    answers = [post(endpoint, DOC_SIMPLE), post(endpoint, one_line)]
    digests = [entries_for(endpoint, a)[0]["sha256"] for a in answers]
    assert digests[0] == digests[1]


def _listening_addresses(port: int) -> list[str]:
    """Local addresses with a TCP socket listening on ``port`` (from /proc/net/tcp*)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                if len(address) == 8:
                    found.append(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
                else:
                    found.append(address)
    return found


def _non_loopback_ipv4() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.254", 9))  # no packet is sent for UDP connect
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_listens_on_loopback_only(endpoint: LocalEndpoint) -> None:
    assert _listening_addresses(endpoint.port) == ["127.0.0.1"]  # type: ignore[arg-type]
    other = _non_loopback_ipv4()
    if other is not None:
        with pytest.raises(OSError):
            socket.create_connection((other, endpoint.port), timeout=3).close()


# --- documented response shape -------------------------------------------------------


def test_documented_response_shape() -> None:
    with LocalEndpoint(response_shape="documented") as server:
        one = post(server, DOC_SIMPLE, key=None)
        assert one.status == 200
        assert isinstance(one.json(), dict) and isinstance(one.json()["output"], list)
        [report] = parse_response(one.body, n_studies=1)
        assert report.findings == tuple(demo_findings(validate_request(json.loads(DOC_SIMPLE))[0]))
        three = post(server, build_request([study(s) for s in range(3)]), key=None)
        assert three.status == 200
        assert len(parse_response(three.body, n_studies=3)) == 3


# --- faults --------------------------------------------------------------------------


def test_pending_cap_answers_429_with_retry_after() -> None:
    faults = FaultConfig(latency=2.0, instances=1, retry_after=2)
    n = 7
    answers: list[Answer] = []
    lock = threading.Lock()
    with LocalEndpoint(faults=faults) as server:
        barrier = threading.Barrier(n)

        def call(seed: int) -> None:
            body = json.dumps(build_request(study(seed)))
            barrier.wait()
            answer = post(server, body, key=None)
            with lock:
                answers.append(answer)

        threads = [threading.Thread(target=call, args=(seed,)) for seed in range(n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        log = server.received()
    statuses = Counter(a.status for a in answers)
    assert set(statuses) <= {200, 429} and sum(statuses.values()) == n
    # 1 instance, 2 pending allowed: the requests sent together are mostly refused.
    assert statuses[200] >= 2 and statuses[429] >= 1
    for answer in answers:
        assert UUID.match(answer.headers["x-request-id"])
        if answer.status == 429:
            assert answer.headers["retry-after"] == "2"
            assert "pending" in answer.json()["error"]
    assert Counter(e["fault"] for e in log if e["status"] == 429) == {"pending_cap": statuses[429]}
    # From the server's log: never more than 2 admitted at once, and each refusal came
    # while 2 were pending. Scored requests hold the single instance one after another.
    spans = [(e["time"], e["time"] + e["seconds"]) for e in log if e["status"] == 200]
    for start, _ in spans:
        assert sum(a <= start + 0.01 and start < b - 0.01 for a, b in spans) <= 2
    # A refusal is decided when its answer is written (arrival + its seconds): requests are
    # checked in the order their bodies are read, not the order they arrived.
    for refused in (e["time"] + e["seconds"] for e in log if e["status"] == 429):
        assert sum(a <= refused + 0.01 and refused <= b + 0.01 for a, b in spans) >= 2
    assert max(e["seconds"] for e in log if e["status"] == 200) >= 2 * faults.latency - 0.01


def _outcome(endpoint: LocalEndpoint, body: str) -> int | str:
    try:
        answer = post(endpoint, body, key=None, timeout=20)
    except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
        return "dropped"
    if answer.status == 429:
        assert answer.headers["retry-after"] == "1"
    if answer.status != 200:
        assert UUID.match(answer.headers["x-request-id"])
    return answer.status


def test_injected_failures_follow_the_seeded_rates() -> None:
    faults = FaultConfig(rate_429=0.2, rate_503=0.1, rate_drop=0.1, seed=7)
    n = 300
    body = DOC_SIMPLE
    with LocalEndpoint(faults=faults) as server:
        outcomes = [_outcome(server, body) for _ in range(n)]
        log = sorted(server.received(), key=lambda e: e["seq"])
    counts = Counter(outcomes)
    assert set(counts) <= {200, 429, 503, "dropped"}
    # Roughly honoured: within 4.5 standard deviations of n * rate.
    for outcome, rate in ((429, 0.2), (503, 0.1), ("dropped", 0.1), (200, 0.6)):
        sd = (n * rate * (1 - rate)) ** 0.5
        assert abs(counts[outcome] - n * rate) < 4.5 * sd, (outcome, counts)
    # Exactly the seeded sequence: the same draws replayed here give the same outcomes.
    rng = random.Random(7)
    expected = []
    for _ in range(n):
        u = rng.random()
        expected.append("dropped" if u < 0.1 else 429 if u < 0.3 else 503 if u < 0.4 else 200)
    assert outcomes == expected
    # The server's log agrees with what the client saw, and dropped requests were received.
    assert [e["status"] if e["status"] is not None else "dropped" for e in log] == outcomes
    assert all(e["n_studies"] == 1 and len(e["sha256"]) == 1 for e in log)


def test_latency_and_bandwidth_add_at_least_their_time() -> None:
    faults = FaultConfig(latency=0.2, latency_per_study=0.3, bandwidth=200_000)
    with LocalEndpoint(faults=faults) as server:
        two = json.dumps(build_request([study(1), study(2)]))
        answer = post(server, two, key=None)
        assert answer.status == 200
        [entry] = entries_for(server, answer)
        # 0.2 + 2 x 0.3 s of model time plus the body's time through the link.
        assert entry["seconds"] >= 0.2 + 2 * 0.3 + len(two) / 200_000 - 0.01
        # The link is shared: three 60 kB bodies sent at once need >= 0.9 s of link time.
        big = json.dumps(build_request(Study(frontal_image=png(5, (300, 200)))))
        assert 55_000 < len(big) < MAX_BYTES
        started = time.monotonic()
        threads = [threading.Thread(target=post, args=(server, big), kwargs={"key": None})]
        threads += [threading.Thread(target=post, args=(server, big), kwargs={"key": None})]
        threads += [threading.Thread(target=post, args=(server, big), kwargs={"key": None})]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert time.monotonic() - started >= 3 * len(big) / 200_000 - 0.01


# --- configuration and lifecycle -----------------------------------------------------


def test_fault_config_round_trips_through_env_and_arguments() -> None:
    config = FaultConfig(
        latency=0.5,
        latency_per_study=1.25,
        bandwidth=5e6,
        instances=4,
        retry_after=0.5,
        rate_429=0.1,
        rate_503=0.05,
        rate_drop=0.02,
        seed=None,
    )
    assert FaultConfig.from_env(config.to_env()) == config
    assert FaultConfig.from_env({}) == FaultConfig()
    assert config.max_pending == 8 and FaultConfig().max_pending is None
    parser = argparse.ArgumentParser()
    FaultConfig.add_arguments(parser)
    args = parser.parse_args(
        [
            "--latency",
            "0.5",
            "--latency-per-study",
            "1.25",
            "--bandwidth",
            "5e6",
            "--instances",
            "4",
            "--retry-after",
            "0.5",
            "--rate-429",
            "0.1",
            "--rate-503",
            "0.05",
            "--rate-drop",
            "0.02",
            "--seed",
            "3",
        ]
    )
    assert FaultConfig.from_args(args) == FaultConfig(**{**config.__dict__, "seed": 3})
    assert FaultConfig.from_args(parser.parse_args([])) == FaultConfig()


@pytest.mark.parametrize(
    "bad",
    [
        {"rate_429": 0.7, "rate_503": 0.5},
        {"rate_drop": -0.1},
        {"latency": -1},
        {"instances": 0},
        {"bandwidth": 0},
    ],
)
def test_fault_config_rejects_impossible_values(bad: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        FaultConfig(**bad)  # type: ignore[arg-type]


def test_fault_config_env_errors_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="CXR_FAULT_INSTANCES"):
        FaultConfig.from_env({"CXR_FAULT_INSTANCES": "two"})


def test_busy_port_gives_a_clear_error_and_stop_releases_everything() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = LocalEndpoint(port, startup_timeout=30)
        with pytest.raises(LocalEndpointError, match="in use"):
            server.start()
        assert not server.running
    server = LocalEndpoint()
    with server:
        pid, port = server.pid, server.port
        assert post(server, DOC_SIMPLE, key=None).status == 200
    assert not server.running
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # type: ignore[arg-type]
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()  # type: ignore[arg-type]
    assert [e["status"] for e in server.received()] == [200]  # kept after stop


@contextlib.contextmanager
def _serve_in_a_process(
    code: str, env: dict[str, str], *, until: str, stderr: int
) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """Run ``code`` in a new Python, read its output up to the line containing ``until``;
    on leaving, kill the process if it still runs and close its pipe."""
    with subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=stderr, env=env, text=True
    ) as process:
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stdout.readline()  # type: ignore[union-attr]
            lines.append(line)
            if until in line or not line:
                break
        try:
            yield process, lines
        finally:
            if process.poll() is None:
                process.kill()


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "kill"])
def test_serve_runs_in_the_foreground_until_stopped(isolated_home: Path, stop: int) -> None:
    port = free_port()
    code = f"from cxr_widgets.local.server import serve; serve(port={port})"
    env = {**os.environ, "HOME": str(isolated_home)}
    with _serve_in_a_process(code, env, until="scoring URI", stderr=subprocess.DEVNULL) as (
        process,
        lines,
    ):
        assert f"scoring URI: http://127.0.0.1:{port}/score" in "".join(lines)
        server = LocalEndpoint(port)
        server.port = port
        assert post(server, DOC_SIMPLE, key=None).status == 200
        process.send_signal(stop)
        assert process.wait(timeout=30) == 0
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_server_goes_when_the_process_that_started_it_is_killed(isolated_home: Path) -> None:
    code = (
        "import sys, time\n"
        "from cxr_widgets.local.server import LocalEndpoint\n"
        "endpoint = LocalEndpoint().start()\n"
        "print(endpoint.pid, endpoint.port, flush=True)\n"
        "time.sleep(120)\n"
    )
    env = {**os.environ, "HOME": str(isolated_home)}
    with subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env
    ) as parent:
        pid, port = map(int, parent.stdout.readline().split())  # type: ignore[union-attr]
        parent.kill()  # SIGKILL: no cleanup code runs in the parent
        parent.wait(timeout=10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()


# --- slow clients, quiet serve, demo marker ------------------------------------------


def test_slow_clients_cannot_starve_the_endpoint() -> None:
    with LocalEndpoint(read_timeout=1.0, threads=4) as server:
        slow = []
        try:
            for _ in range(12):  # three times the threads, each sends half a request
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
                sock.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
                slow.append(sock)
            time.sleep(0.3)
            started = time.monotonic()
            answer = post(server, DOC_SIMPLE, key=None, timeout=20)
            assert answer.status == 200
            assert time.monotonic() - started < 8  # a few read timeouts, not forever
        finally:
            for sock in slow:
                sock.close()


def test_serve_prints_its_banner_and_not_the_server_logs(isolated_home: Path) -> None:
    port = free_port()
    env = {**os.environ, "HOME": str(isolated_home)}
    outputs = {}
    for verbose in (False, True):
        code = f"from cxr_widgets.local.server import serve; serve(port={port}, verbose={verbose})"
        with _serve_in_a_process(code, env, until="Press Ctrl-C", stderr=subprocess.STDOUT) as (
            process,
            lines,
        ):
            process.send_signal(signal.SIGTERM)
            rest, _ = process.communicate(timeout=30)
            outputs[verbose] = "".join(lines) + rest
    quiet, verbose_output = outputs[False], outputs[True]
    assert quiet.startswith("CXRReportGen-compatible local endpoint (DEMO")
    assert "scoring URI" in quiet and "--verbose" in quiet
    for noise in ("gunicorn", "Booting worker", "Found extra keys", "Listening at"):
        assert noise not in quiet
    assert "Booting worker" in verbose_output or "Listening at" in verbose_output


def test_answers_of_the_local_endpoint_are_demo_in_every_format(
    endpoint: LocalEndpoint, tmp_path: Path
) -> None:
    import csv

    from cxr_widgets.client import EndpointConfig, ReportGenClient

    with ReportGenClient(EndpointConfig(endpoint.scoring_uri, key=KEY)) as client:
        report = client.generate(study(3))
    assert report.demo and report.provenance is not None
    assert report.provenance.backend == "local-endpoint"
    assert report.to_dict()["demo"] is True
    rows = list(csv.DictReader(io.StringIO(report.to_csv(), newline="")))
    assert rows and {row["demo"] for row in rows} == {"True"}
    assert {r["demo"] for r in report.to_records()} == {True}
