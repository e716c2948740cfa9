"""Start and stop the local endpoint: ``azureml-inference-server-http`` on 127.0.0.1.

``azmlinfsrv`` always binds 0.0.0.0, so this runs the same app
(``azureml_inference_server_http.server.entry:app``) under gunicorn directly,
bound to loopback, configured through the environment as ``azmlinfsrv`` does.
One worker process with threads, so the fault state (pending count, instance
semaphore, bandwidth) is shared by all concurrent requests.

    with LocalEndpoint(key="secret") as endpoint:
        client = ReportGenClient(EndpointConfig(endpoint.scoring_uri, key=endpoint.key))
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import IO, Any

from ..contract import DEFAULT_REQUEST_BUDGET
from ..errors import ConfigError, LocalEndpointError
from . import ENV_KEY, ENV_MAX_REQUEST_BYTES, ENV_REQUEST_LOG, ENV_RESPONSE_SHAPE
from .faults import FaultConfig
from .gunicorn_conf import DEFAULT_READ_TIMEOUT, ENV_READ_TIMEOUT

APP = "azureml_inference_server_http.server.entry:app"
SCORE_SCRIPT = Path(__file__).resolve().with_name("score.py")
LOOPBACK = "127.0.0.1"
_OWN_ENV_PREFIXES = ("CXR_LOCAL_", "CXR_FAULT_")


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free right now on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _check_port_free(host: str, port: int) -> None:
    """Fail at once (gunicorn would retry for seconds) when ``port`` is taken."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise LocalEndpointError(
                f"cannot listen on {host}:{port}: the port is in use or not available "
                f"({exc.strerror}). Choose another port, or port=None for a free one."
            ) from None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Ask Linux to SIGTERM the server when the process that started it dies."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _tie_to_parent() -> bool:
    return sys.platform == "linux" and threading.current_thread() is threading.main_thread()


def _server_version() -> str:
    try:
        return version("azureml-inference-server-http")
    except PackageNotFoundError:  # pragma: no cover - it is a dependency
        return "unknown"


class LocalEndpoint:
    """A CXRReportGen-compatible endpoint in a subprocess, answering demo findings.

    Use as a context manager (or :meth:`start` / :meth:`stop`). ``port=None``
    picks a free port. ``host`` is 127.0.0.1 unless you ask otherwise. With a
    ``key``, callers must send ``Authorization: Bearer <key>``. ``faults``
    injects latency, a bandwidth cap, a pending cap and failures. Each request
    is recorded (no patient text) in ``log_path``, read back by :meth:`received`.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = LOOPBACK,
        key: str | None = None,
        faults: FaultConfig | None = None,
        max_request_bytes: int = DEFAULT_REQUEST_BUDGET,
        response_shape: str = "records",
        log_path: str | os.PathLike[str] | None = None,
        threads: int | None = None,
        startup_timeout: float = 60.0,
        output: str = "file",
        read_timeout: float = DEFAULT_READ_TIMEOUT,
    ) -> None:
        if response_shape not in ("records", "documented"):
            raise ConfigError(
                f"response_shape must be records or documented, not {response_shape!r}"
            )
        self.host = host
        self.requested_port = port
        self.port: int | None = port
        self.key = key
        self.faults = faults or FaultConfig()
        self.max_request_bytes = int(max_request_bytes)
        self.response_shape = response_shape
        self.log_path: Path | None = Path(log_path) if log_path is not None else None
        pending = self.faults.max_pending or 0
        self.threads = threads or max(16, pending + 8)
        self.startup_timeout = startup_timeout
        if output not in ("file", "inherit"):
            raise ConfigError(f"output must be 'file' or 'inherit', not {output!r}")
        self.output = output
        if not read_timeout > 0:
            raise ConfigError(f"read_timeout must be > 0 seconds, got {read_timeout!r}")
        #: Seconds a read from a client may wait (slow clients cannot hold every thread).
        self.read_timeout = float(read_timeout)
        #: Seconds from launching the process to the first healthy ``GET /``.
        self.startup_seconds: float | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._tmp: Path | None = None
        self._own_log = log_path is None
        self._stdout: IO[bytes] | None = None
        self._final_received: list[dict[str, Any]] | None = None

    # --- addresses ------------------------------------------------------
    @property
    def _connect_host(self) -> str:
        return LOOPBACK if self.host in ("0.0.0.0", "", "::") else self.host

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:5001``."""
        if self.port is None:
            raise LocalEndpointError("the local endpoint is not started; use start() or `with`")
        return f"http://{self._connect_host}:{self.port}"

    @property
    def scoring_uri(self) -> str:
        """The URI to POST requests to (``<url>/score``)."""
        return f"{self.url}/score"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def __repr__(self) -> str:
        where = self.url if self.port else "not started"
        return (
            f"LocalEndpoint({where}, key={'set' if self.key else 'none'}, "
            f"{'running' if self.running else 'stopped'})"
        )

    # --- lifecycle ------------------------------------------------------
    def _environment(self) -> dict[str, str]:
        assert self._tmp is not None and self.log_path is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_ENV_PREFIXES)}
        env.pop("XDG_RUNTIME_DIR", None)
        for folder in ("app", "model"):
            (self._tmp / folder).mkdir(exist_ok=True)
        env.update(
            HOME=str(self._tmp),  # gunicorn and the server write under $HOME
            AZUREML_ENTRY_SCRIPT=str(SCORE_SCRIPT),
            AML_APP_ROOT=str(self._tmp / "app"),
            AZUREML_MODEL_DIR=str(self._tmp / "model"),
            AML_APP_INSIGHTS_ENABLED="false",
            SERVICE_NAME="cxr-widgets local endpoint",
            HTTP_X_MS_SERVER_VERSION=f"azmlinfsrv/{_server_version()}",
            PYTHONUNBUFFERED="1",
        )
        env[ENV_MAX_REQUEST_BYTES] = str(self.max_request_bytes)
        env[ENV_READ_TIMEOUT] = f"{self.read_timeout:g}"
        env[ENV_RESPONSE_SHAPE] = self.response_shape
        env[ENV_REQUEST_LOG] = str(self.log_path)
        if self.key:
            env[ENV_KEY] = self.key
        env.update(self.faults.to_env())
        return env

    def _command(self, port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "gunicorn",
            "-b",
            f"{self.host}:{port}",
            "-w",
            "1",
            "-k",
            "gthread",
            "--threads",
            str(self.threads),
            "--timeout",
            "600",
            "--graceful-timeout",
            "3",
            "--no-control-socket",
            "-c",
            "python:cxr_widgets.local.gunicorn_conf",
            "--access-logfile",
            "-",
            "--error-logfile",
            "-",
            APP,
        ]

    def start(self) -> LocalEndpoint:
        """Launch the server and wait until ``GET /`` answers (raises LocalEndpointError)."""
        if self.running:
            return self
        self._tmp = Path(tempfile.mkdtemp(prefix="cxr-local-endpoint-"))
        if self.log_path is None:
            self.log_path = self._tmp / "requests.jsonl"
        self._final_received = None
        attempts = 3 if self.requested_port is None else 1
        for attempt in range(attempts):
            port = self.requested_port or free_port(self._connect_host)
            try:
                self._launch(port)
                return self
            except LocalEndpointError as exc:
                self._kill()
                self._process = None
                taken = "in use" in str(exc) or "in use" in self.stderr_tail()
                if attempt == attempts - 1 or not taken:
                    if self._own_log:
                        self.log_path = None
                    self._cleanup()
                    raise
        return self  # pragma: no cover

    def _launch(self, port: int) -> None:
        assert self._tmp is not None
        self.port = port
        _check_port_free(self.host, port)
        if self.output == "file":
            self._stdout = open(self._tmp / "server.log", "wb")  # noqa: SIM115
            out: Any = self._stdout
        else:
            out = None
        began = time.monotonic()
        self._process = subprocess.Popen(
            self._command(port),
            env=self._environment(),
            cwd=self._tmp,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT if out is not None else None,
            start_new_session=True,  # its own process group, stopped as a whole
            # Linux ties the child to the starting *thread*: only do it from the main thread.
            preexec_fn=_die_with_parent if _tie_to_parent() else None,
        )
        deadline = began + self.startup_timeout
        while True:
            if self._process.poll() is not None:
                raise LocalEndpointError(
                    f"the local endpoint exited with code {self._process.returncode} while "
                    f"starting on {self.host}:{port}. Server output (last lines):\n"
                    f"{self.stderr_tail()}"
                )
            if self._healthy():
                self.startup_seconds = time.monotonic() - began
                return
            if time.monotonic() > deadline:
                raise LocalEndpointError(
                    f"the local endpoint did not answer GET / on {self.host}:{port} within "
                    f"{self.startup_timeout:.0f} s (a busy machine? raise startup_timeout). "
                    f"Server output (last lines):\n{self.stderr_tail()}"
                )
            time.sleep(0.1)

    def _healthy(self) -> bool:
        conn = http.client.HTTPConnection(self._connect_host, self.port, timeout=2)
        try:
            conn.request("GET", "/")
            response = conn.getresponse()
            return response.status == 200 and response.read().strip() == b"Healthy"
        except OSError:
            return False
        finally:
            conn.close()

    def stderr_tail(self, lines: int = 30) -> str:
        """The last lines the server printed (when ``output="file"``)."""
        if self._tmp is None or not (self._tmp / "server.log").exists():
            return "(no server output captured)"
        text = (self._tmp / "server.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def wait(self) -> int:
        """Block until the server process ends; its exit code."""
        if self._process is None:
            raise LocalEndpointError("the local endpoint is not started")
        return self._process.wait()

    def _kill(self) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
            except ProcessLookupError:
                pass
        if self._stdout is not None:
            self._stdout.close()
            self._stdout = None

    def _cleanup(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def stop(self) -> None:
        """Stop the server (its whole process group) and remove its temporary files."""
        self._kill()
        self._process = None
        if self._own_log and self.log_path is not None:
            self._final_received = self.received()
            self.log_path = None
        self._cleanup()

    def __enter__(self) -> LocalEndpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __del__(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._kill()

    # --- request log ----------------------------------------------------
    def received(self) -> list[dict[str, Any]]:
        """The request log so far, one dict per request: ``seq`` (arrival order),
        ``time``, ``request_id``, ``status`` (None: dropped), ``n_studies``,
        ``sha256`` (one per study, see ``demo_findings.wire_digest``), ``answers``
        (sha256 per study of the findings sent, ``demo_findings.answer_digest``), ``bytes``,
        ``fault`` (None, "drop", "429", "503" or "pending_cap"), ``seconds``; admitted
        requests also have ``held`` (requests pending at admission, itself included) and
        ``scoring`` (requests scoring when it started, itself included)."""
        if self.log_path is None:
            return list(self._final_received or [])
        try:
            text = Path(self.log_path).read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def received_digests(self, status: int | None = 200) -> list[str]:
        """Study digests of requests answered with ``status`` (None: every request)."""
        return [
            digest
            for entry in self.received()
            if status is None or entry["status"] == status
            for digest in entry["sha256"]
        ]


def serve(
    port: int = 5001,
    host: str = LOOPBACK,
    key: str | None = None,
    faults: FaultConfig | None = None,
    *,
    max_request_bytes: int = DEFAULT_REQUEST_BUDGET,
    response_shape: str = "records",
    log_path: str | os.PathLike[str] | None = None,
    verbose: bool = False,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
) -> None:
    """Run the local endpoint in the foreground until Ctrl-C, SIGTERM or SIGHUP
    (``cxr-widgets serve``). Prints its banner and errors; the server's own logs
    only with ``verbose=True``."""
    from ..signals import stop_signals_as_interrupt

    endpoint = LocalEndpoint(
        port,
        host=host,
        key=key,
        faults=faults,
        max_request_bytes=max_request_bytes,
        response_shape=response_shape,
        log_path=log_path,
        output="inherit" if verbose else "file",
        read_timeout=read_timeout,
    )
    with stop_signals_as_interrupt():
        _serve_foreground(endpoint, host, key)


def _serve_foreground(endpoint: LocalEndpoint, host: str, key: str | None) -> None:
    try:
        endpoint.start()
    except KeyboardInterrupt:
        endpoint.stop()
        return
    with endpoint:
        print(
            f"CXRReportGen-compatible local endpoint (DEMO: canned findings, not a model) "
            f"ready in {endpoint.startup_seconds:.1f} s\n"
            f"  scoring URI: {endpoint.scoring_uri}\n"
            f"  key: {'required (Authorization: Bearer <key>)' if key else 'none'}\n"
            f"  listening on {host}:{endpoint.port}"
            + (
                "  (WARNING: reachable from your network)"
                if host not in (LOOPBACK, "localhost")
                else ""
            )
            + ("" if endpoint.output == "inherit" else "\n  server logs: --verbose")
            + "\nPress Ctrl-C to stop.",
            flush=True,
        )
        try:
            code = endpoint.wait()
            if code:
                raise LocalEndpointError(
                    f"the local endpoint stopped with exit code {code}. Server output "
                    f"(last lines):\n{endpoint.stderr_tail()}"
                )
        except KeyboardInterrupt:
            print("\nstopping the local endpoint", flush=True)
