"""The HTTP client for CXRReportGen endpoints: configuration, retries, errors.

``EndpointConfig`` says where the endpoint is and how to authenticate;
``ReportGenClient`` sends prepared requests through an azure-core pipeline
(its transport, headers, user agent, auth and HTTP logging policies, and a
retry policy tuned for online endpoints) and turns every failure into an
:class:`~cxr_widgets.errors.EndpointError` that says what to do.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import logging
import os
import random
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    ServiceRequestError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.core.pipeline import Pipeline, PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import (
    HeadersPolicy,
    HttpLoggingPolicy,
    RetryPolicy,
    UserAgentPolicy,
)
from azure.core.rest import HttpRequest

from . import __version__
from .auth import (
    ENTRA_SCOPE,
    Secret,
    as_secret,
    auth_policy,
    is_token_credential,
    redact,
)
from .backend import ReportGenerator
from .contract import DEFAULT_REQUEST_BUDGET, PreparedRequest, parse_response
from .errors import (
    BadRequestError,
    ConfigError,
    CxrWidgetsError,
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
from .report import Report

logger = logging.getLogger(__name__)

DEFAULT_KEY_ENV = "CXR_ENDPOINT_KEY"
DEPLOYMENT_HEADER = "azureml-model-deployment"
DEMO_HEADER = "x-cxr-widgets-demo"
#: Statuses worth sending again: busy, and transient infrastructure failures.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Response headers safe to log (everything else, Authorization first, is REDACTED).
LOGGED_HEADERS = (
    DEPLOYMENT_HEADER,
    "x-request-id",
    "ms-azureml-model-error-statuscode",
    "ms-azureml-model-error-reason",
    DEMO_HEADER,
    "Retry-After",
)
ROLE_ADVICE = (
    "the 'AzureML Data Scientist' role, or a role with "
    "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/score/action, "
    "on the workspace"
)
SIZE_ADVICE = "lower the image size (image option shortest_side) or send fewer studies per request"


# --- configuration -------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_uri(scoring_uri: Any, has_secret: bool) -> str:
    """The scoring URI, normalised; ConfigError when it cannot be right."""
    if not isinstance(scoring_uri, str) or not scoring_uri.strip():
        raise ConfigError(
            "scoring_uri must be the endpoint's scoring URI, e.g. "
            "https://<endpoint>.<region>.inference.ml.azure.com/score"
        )
    parts = urlsplit(scoring_uri.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"scoring_uri {parts.scheme + '://' if parts.scheme else ''}{parts.hostname or ''}... "
            "is not an http(s) URL with a host; expected "
            "https://<endpoint>.<region>.inference.ml.azure.com/score"
        )
    if parts.username or parts.password:
        raise ConfigError(
            "scoring_uri must not carry a user or password; pass the key as key= "
            f"or in the {DEFAULT_KEY_ENV} environment variable"
        )
    if parts.query or parts.fragment:
        raise ConfigError("scoring_uri must not have a query string or fragment")
    try:
        parts.port  # noqa: B018  (raises ValueError for a bad port)
    except ValueError:
        raise ConfigError("scoring_uri has an invalid port number") from None
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        if has_secret:
            raise ConfigError(
                f"scoring_uri uses plain http to {parts.hostname}: the key or token would "
                "travel in clear text. Use https (Azure ML endpoints always offer it); "
                "plain http is only allowed to 127.0.0.1 / localhost."
            )
        warnings.warn(
            f"scoring_uri uses plain http to {parts.hostname}; requests (with patient "
            "images) travel unencrypted. Use https outside this machine.",
            UserWarning,
            stacklevel=3,
        )
    path = parts.path if parts.path not in ("", "/") else "/score"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def _positive(name: str, value: Any, *, allow_zero: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number of seconds, got {value!r}") from None
    if number < 0 or (number == 0 and not allow_zero) or number != number:
        raise ConfigError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return number


class EndpointConfig:
    """Where a CXRReportGen endpoint is and how to authenticate to it.

    Authentication, in order: ``key`` (a string or ``AzureKeyCredential``);
    ``credential`` (any azure-identity / azure-core ``TokenCredential``, for
    Microsoft Entra ID with scope ``https://ml.azure.com/.default``); else the
    key in the environment variable ``key_env`` (``CXR_ENDPOINT_KEY``); else
    none (a local endpoint started without a key).

    The key is held privately and never shown: not in ``repr``, ``str``,
    :meth:`to_dict`, :meth:`describe`, logs, exceptions or pickles (an
    unpickled config re-reads the environment variable or needs the key again).
    """

    def __init__(
        self,
        scoring_uri: str,
        deployment: str | None = None,
        key: Any = None,
        credential: Any = None,
        *,
        key_env: str | None = DEFAULT_KEY_ENV,
        scope: str = ENTRA_SCOPE,
        connect_timeout: float = 10.0,
        read_timeout: float = 180.0,
        deadline: float = 600.0,
        max_retries: int = 6,
        backoff_factor: float = 0.5,
        backoff_max: float = 30.0,
        max_request_bytes: int | None = DEFAULT_REQUEST_BUDGET,
        pool_size: int = 16,
        auth_mode: str | None = None,
        source: str | None = None,
    ) -> None:
        from azure.core.credentials import AzureKeyCredential

        if isinstance(credential, AzureKeyCredential):
            key, credential = credential, None
        secret = as_secret(key, "key")
        if secret is not None and credential is not None:
            raise ConfigError("give either key= or credential=, not both")
        if credential is not None and not is_token_credential(credential):
            raise ConfigError(
                "credential must be an azure-identity credential (e.g. DefaultAzureCredential()) "
                f"with get_token(); got {type(credential).__name__}"
            )
        key_source: str | None = "argument" if secret is not None else None
        if secret is None and credential is None and key_env:
            secret = as_secret(os.environ.get(key_env), f"the {key_env} environment variable")
            key_source = f"${key_env}" if secret is not None else None
        if deployment is not None and (not isinstance(deployment, str) or not deployment.strip()):
            raise ConfigError("deployment must be a deployment name (a non-empty string) or None")

        self.scoring_uri = _check_uri(scoring_uri, secret is not None or credential is not None)
        self.deployment = deployment.strip() if deployment else None
        self.key_env = key_env
        self.scope = scope
        self.connect_timeout = _positive("connect_timeout", connect_timeout)
        self.read_timeout = _positive("read_timeout", read_timeout)
        self.deadline = _positive("deadline", deadline)
        if not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        self.max_retries = max_retries
        self.backoff_factor = _positive("backoff_factor", backoff_factor, allow_zero=True)
        self.backoff_max = _positive("backoff_max", backoff_max, allow_zero=True)
        if max_request_bytes is not None and (
            not isinstance(max_request_bytes, int) or max_request_bytes <= 0
        ):
            raise ConfigError("max_request_bytes must be a positive integer or None")
        self.max_request_bytes = max_request_bytes
        self.pool_size = max(1, int(pool_size))
        if secret is not None:
            self.auth_mode = auth_mode or "key"
        elif credential is not None:
            self.auth_mode = auth_mode or "aad_token"
        else:
            self.auth_mode = "none"
        self.key_source = key_source if secret is not None else None
        #: Where the configuration came from (e.g. "workspace ws/endpoint ep"), for messages.
        self.source = source
        self._key: Secret | None = secret
        # Wrapped so that a credential with a talkative repr cannot show a token here.
        self._credential: Secret | None = Secret(credential) if credential is not None else None
        self._secret_lost = False

    # -- construction from a workspace ---------------------------------------------

    @classmethod
    def from_workspace(
        cls,
        endpoint_name: str,
        *,
        ml_client: Any = None,
        deployment: str | None = None,
        credential: Any = None,
        config_path: str | None = None,
        **options: Any,
    ) -> EndpointConfig:
        """Look the endpoint up once with azure-ai-ml: scoring URI, auth mode and key/token.

        ``ml_client``: an ``azure.ai.ml.MLClient``; without one it is built with
        ``MLClient.from_config(credential, path=config_path)`` (``config.json``).
        Key endpoints get the primary key; ``aml_token`` endpoints a token that
        is fetched again when it expires; ``aad_token`` endpoints use ``credential``
        (or the MLClient's). ``options`` go to :class:`EndpointConfig`.
        """
        from .workspace import resolve_endpoint

        return resolve_endpoint(
            cls,
            endpoint_name,
            ml_client=ml_client,
            deployment=deployment,
            credential=credential,
            config_path=config_path,
            **options,
        )

    # -- secret-free views -----------------------------------------------------------

    @property
    def credential(self) -> Any:
        """The token credential (Entra ID or aml_token), or None."""
        return self._credential.reveal() if self._credential is not None else None

    @property
    def has_key(self) -> bool:
        return self._key is not None

    @property
    def base_url(self) -> str:
        parts = urlsplit(self.scoring_uri)
        return f"{parts.scheme}://{parts.netloc.lower()}"

    @property
    def label(self) -> str:
        """e.g. ``https://myep.eastus.inference.ml.azure.com (deployment blue)``."""
        path = urlsplit(self.scoring_uri).path
        text = self.base_url + ("" if path == "/score" else path)
        return f"{text} (deployment {self.deployment})" if self.deployment else text

    @property
    def identity(self) -> str:
        """Stable and secret-free: URI and deployment (part of result-store keys)."""
        path = urlsplit(self.scoring_uri).path
        return f"{self.base_url}{path}" + (f"#{self.deployment}" if self.deployment else "")

    @property
    def is_loopback(self) -> bool:
        return _is_loopback(urlsplit(self.scoring_uri).hostname or "")

    def auth_description(self) -> str:
        if self.auth_mode == "none":
            return "no authentication"
        if self.auth_mode == "key":
            return f"key auth (key from {self.key_source or 'workspace'})"
        if self.auth_mode == "aml_token":
            return "Azure ML token auth (aml_token)"
        return f"Microsoft Entra ID ({type(self.credential).__name__}, scope {self.scope})"

    def describe(self) -> str:
        """One line for people: endpoint, auth method and limits; never a secret."""
        return (
            f"{self.label}, {self.auth_description()}, connect/read timeout "
            f"{self.connect_timeout:g}/{self.read_timeout:g} s, deadline {self.deadline:g} s, "
            f"up to {self.max_retries} retries"
        )

    def to_dict(self) -> dict[str, Any]:
        """Secret-free settings (the key itself is never included)."""
        return {
            "scoring_uri": self.scoring_uri,
            "deployment": self.deployment,
            "auth_mode": self.auth_mode,
            "key_source": self.key_source,
            "key_env": self.key_env,
            "credential": type(self.credential).__name__ if self._credential else None,
            "scope": self.scope,
            "connect_timeout": self.connect_timeout,
            "read_timeout": self.read_timeout,
            "deadline": self.deadline,
            "max_retries": self.max_retries,
            "backoff_factor": self.backoff_factor,
            "backoff_max": self.backoff_max,
            "max_request_bytes": self.max_request_bytes,
            "pool_size": self.pool_size,
            "source": self.source,
        }

    def __repr__(self) -> str:
        deployment = f", deployment={self.deployment!r}" if self.deployment else ""
        return f"EndpointConfig({self.scoring_uri!r}{deployment}, auth={self.auth_description()!r})"

    __str__ = __repr__

    # -- copying and pickling: copies keep the secret, pickles never carry it ---------

    def __copy__(self) -> EndpointConfig:
        clone = object.__new__(EndpointConfig)
        clone.__dict__.update(self.__dict__)
        return clone

    def __deepcopy__(self, memo: dict[int, Any]) -> EndpointConfig:
        clone = object.__new__(EndpointConfig)
        for name, value in self.__dict__.items():
            keep = name in ("_key", "_credential")
            clone.__dict__[name] = value if keep else copy.deepcopy(value, memo)
        return clone

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        lost = state.get("_key") is not None or state.get("_credential") is not None
        state["_key"] = None
        state["_credential"] = None
        state["_secret_lost"] = lost
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        env = self.key_env
        if self._secret_lost and self.key_source == f"${env}" and env:
            self._key = as_secret(os.environ.get(env), f"the {env} environment variable")
            self._secret_lost = self._key is None

    def _check_usable(self) -> None:
        if self._secret_lost:
            raise ConfigError(
                "this EndpointConfig was unpickled: keys and credentials are never pickled. "
                f"Build it again with key= or credential= (or set {self.key_env or 'key_env'})."
            )


# --- retries ----------------------------------------------------------------------


@dataclass
class ClientStats:
    """Counters for benchmarks and batch summaries (thread-safe)."""

    requests: int = 0
    attempts: int = 0
    retries: int = 0
    failures: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {
                "requests": self.requests,
                "attempts": self.attempts,
                "retries": self.retries,
                "failures": self.failures,
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
                if not self.increment(settings, response=request, error=err):
                    raise
                self._wait(settings, deadline_at, transport, None, err)
                retries += 1
                continue
            if not self.is_retry(settings, response) or not self.increment(
                settings, response=response
            ):
                break
            self._wait(settings, deadline_at, transport, response, None)
            retries += 1
        response.context["retry_count"] = retries
        self.update_context(response.context, settings)
        return response


def _request_id(headers: Any) -> str | None:
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
        request_id = _request_id(response.http_response.headers)
    if retry_after:
        what = f"the endpoint answered {status} and asked to wait {retry_after:g} s (Retry-After)"
    elif status is not None:
        what = f"the endpoint answered {status}; the next retry (in {wait:.1f} s)"
    elif error is not None and isinstance(error, ServiceResponseTimeoutError):
        what = "no answer arrived"
    elif error is not None:
        what = f"the connection failed ({_error_kind(error)}); the next retry"
    else:
        what = "the retries"
    return DeadlineExceededError(
        f"gave up after the {deadline:g} s deadline for this call: {what} would pass it. "
        "Raise EndpointConfig(deadline=...) or try again when the endpoint is less busy.",
        status=status,
        request_id=request_id,
        reason="deadline",
    )


def _error_kind(error: BaseException) -> str:
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


# --- errors from answers ------------------------------------------------------------


def _detail(text: str, limit: int = 300) -> str:
    """The server's own message from an error body (JSON ``error``/``message`` or text)."""
    text = (text or "").strip()
    if not text:
        return ""
    try:
        value = json.loads(text)
    except ValueError:
        value = text
    for _ in range(3):
        if isinstance(value, dict):
            value = value.get("error") or value.get("message") or value.get("detail") or ""
        else:
            break
    if not isinstance(value, str):
        value = json.dumps(value)[:limit]
    value = " ".join(value.split())
    return value[:limit] + ("..." if len(value) > limit else "")


def error_for_status(
    status: int,
    headers: Any,
    body_text: str,
    config: EndpointConfig,
    *,
    retries: int = 0,
    sent_bytes: int | None = None,
    where: str | None = None,
) -> EndpointError:
    """The :class:`EndpointError` for an HTTP error answer, with advice.

    ``where`` names the endpoint in messages (default: ``config.label``).
    """
    request_id = _request_id(headers)
    detail = redact(_detail(body_text), config._key)
    said = f" The endpoint said: {detail}" if detail else ""
    tried = f" after {retries} retr{'y' if retries == 1 else 'ies'}" if retries else ""
    where = where or config.label
    kwargs: dict[str, Any] = {"status": status, "request_id": request_id}
    if status == 400:
        return BadRequestError(
            f"{where} rejected the request as malformed (400).{said} Check the studies "
            "and image options; the request was not retried.",
            **kwargs,
        )
    if status in (401, 403):
        mode = config.auth_mode
        if status == 403:
            advice = f"your identity is not allowed to score: it needs {ROLE_ADVICE}."
        elif mode == "none":
            advice = (
                "no key or token was sent. Pass key=..., set the "
                f"{config.key_env or DEFAULT_KEY_ENV} environment variable, or pass "
                "credential= (e.g. DefaultAzureCredential()) for Microsoft Entra ID."
            )
        elif mode == "key":
            advice = (
                f"check the key (from {config.key_source or 'the workspace'}): it must be the "
                "endpoint's current primary or secondary key (regenerating keys invalidates "
                "old ones; see ml_client.online_endpoints.get_keys(name))."
            )
        elif mode == "aml_token":
            advice = "the Azure ML token expired or was revoked; build the config again."
        else:
            advice = (
                "check that the endpoint's auth mode is aad_token and that your identity "
                f"has {ROLE_ADVICE}."
            )
        return EndpointAuthError(
            f"{where} refused the credentials ({status}): {advice}{said}", **kwargs
        )
    if status == 404:
        pin = (
            f" and that deployment {config.deployment!r} exists"
            if config.deployment
            else " and that a deployment receives traffic (or pin one with deployment=)"
        )
        return EndpointNotFoundError(
            f"nothing answers at {where} (404): check the scoring URI (it ends in /score){pin}.",
            **kwargs,
        )
    if status == 408:
        return EndpointTimeoutError(
            f"the model took longer than {where}'s request timeout (408): send fewer studies "
            "per request, or raise request_timeout_ms in the deployment's OnlineRequestSettings "
            "(at most 180000).",
            **kwargs,
        )
    if status == 413:
        size = f", {sent_bytes / 1e6:.2f} MB sent" if sent_bytes else ""
        return RequestTooLargeError(
            f"{where} refused the request as too large (413{size}): {SIZE_ADVICE}.", **kwargs
        )
    if status == 424:
        model_status = headers.get("ms-azureml-model-error-statuscode") or "unknown"
        reason = headers.get("ms-azureml-model-error-reason") or detail or "not given"
        return ModelError(
            f"the model failed on this request (424; model status {model_status}, reason: "
            f"{reason}). Check the studies; the deployment logs "
            "(ml_client.online_deployments.get_logs) have details.",
            reason=reason,
            **kwargs,
        )
    if status == 429:
        return EndpointBusyError(
            f"{where} is busy (429: too many pending requests or rate limited){tried}. Send "
            "fewer requests at once (run_batch adapts), try again later, or add instances "
            "to the deployment.",
            **kwargs,
        )
    if status >= 500:
        return EndpointServerError(
            f"{where} failed with {status}{tried}.{said} Try again later; if it persists, "
            "check the deployment's state and logs.",
            **kwargs,
        )
    return EndpointError(f"{where} answered HTTP {status}.{said}", **kwargs)


# --- the client -----------------------------------------------------------------------


def _requests_transport(config: EndpointConfig) -> Any:
    """azure-core's RequestsTransport over a pooled session (no urllib3 retries)."""
    import requests
    from azure.core.pipeline.transport import RequestsTransport
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    session = requests.Session()
    adapter = HTTPAdapter(
        pool_connections=2,
        pool_maxsize=config.pool_size,
        max_retries=Retry(total=False, redirect=False, raise_on_status=False),
    )
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return RequestsTransport(
        session=session,
        session_owner=True,
        connection_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
    )


class ReportGenClient(ReportGenerator):
    """Calls a CXRReportGen endpoint (Azure ML, or the local endpoint) over HTTPS.

    ``ReportGenClient(config).generate(study)`` returns a Report;
    ``generate([s1, ..., s10])`` a list. ``config`` is an :class:`EndpointConfig`
    or a scoring URI. ``transport``: an azure-core HttpTransport (default: a
    pooled RequestsTransport). ``asend``/``agenerate`` run the same pipeline in a
    worker thread (azure-core's async pipeline would need aiohttp; a thread keeps
    one code path, and the widget sends one request at a time).
    """

    def __init__(
        self,
        config: EndpointConfig | str,
        *,
        image_options: dict[str, Any] | None = None,
        transport: Any = None,
    ) -> None:
        if isinstance(config, str):
            config = EndpointConfig(config)
        if not isinstance(config, EndpointConfig):
            raise ConfigError(
                f"ReportGenClient needs an EndpointConfig or a scoring URI, got "
                f"{type(config).__name__}"
            )
        config._check_usable()
        super().__init__(image_options)
        self.config = config
        self.label = config.label
        self.stats = ClientStats()
        self._retry = EndpointRetryPolicy(
            max_retries=config.max_retries,
            backoff_factor=config.backoff_factor,
            backoff_max=config.backoff_max,
            deadline=config.deadline,
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
            stats=self.stats,
        )
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if config.deployment:
            headers[DEPLOYMENT_HEADER] = config.deployment
        http_logging = HttpLoggingPolicy()
        http_logging.allowed_header_names.update(LOGGED_HEADERS)
        policies: list[Any] = [
            HeadersPolicy(headers),
            UserAgentPolicy(base_user_agent=f"cxr-widgets/{__version__}"),
            self._retry,
        ]
        auth = auth_policy(config._key, config.credential, config.scope)
        if auth is not None:
            policies.append(auth)
        policies.append(http_logging)
        self._transport = transport if transport is not None else _requests_transport(config)
        self._pipeline = Pipeline(transport=self._transport, policies=policies)

    @property
    def identity(self) -> str:
        return self.config.identity

    def __repr__(self) -> str:
        return f"ReportGenClient({self.config!r})"

    def check_size(self, request: PreparedRequest | bytes) -> int:
        """The request's size in bytes; RequestTooLargeError when over ``max_request_bytes``."""
        size = len(request if isinstance(request, bytes) else request.body)
        budget = self.config.max_request_bytes
        if budget is not None and size > budget:
            raise RequestTooLargeError(
                f"the request is {size:,} bytes, over the budget of {budget:,} bytes "
                f"(EndpointConfig max_request_bytes): {SIZE_ADVICE}. It was not sent."
            )
        return size

    def send(self, request: PreparedRequest) -> list[Report]:
        """POST one prepared request; one Report per study, in order."""
        body = request.body
        size = self.check_size(body)
        self.stats.add(requests=1)
        try:
            return self._send(request, body, size)
        except CxrWidgetsError:
            self.stats.add(failures=1)
            raise

    def _send(self, request: PreparedRequest, body: bytes, size: int) -> list[Report]:
        http_request = HttpRequest("POST", self.config.scoring_uri, content=body)
        options: dict[str, Any] = {}
        if self.config.credential is not None and self.config.scoring_uri.startswith("http:"):
            # Loopback only (checked by EndpointConfig); the bearer policy pops this option.
            options["enforce_https"] = False
        started = time.monotonic()
        try:
            pipeline_response = self._pipeline.run(http_request, **options)
        except CxrWidgetsError:
            raise
        except ClientAuthenticationError as exc:
            raise EndpointAuthError(
                "could not get a Microsoft Entra ID token for "
                f"{self.config.scope} ({redact(_first_line(exc), self.config._key)}). "
                "Sign in again (az login, or the credential's own prompt) and check the "
                "credential's tenant.",
            ) from None
        except ServiceResponseTimeoutError:
            waited = time.monotonic() - started
            raise EndpointTimeoutError(
                f"{self.label} sent no answer within the {self.config.read_timeout:g} s read "
                f"timeout ({waited:.0f} s in all): the model may still be working; send fewer "
                "studies per request or raise EndpointConfig(read_timeout=...). "
                "Not retried, to avoid running the same studies twice.",
            ) from None
        except ServiceRequestError as exc:
            raise EndpointConnectionError(
                f"could not connect to {self.label}: {_error_kind(exc)}"
                f"{self._after_retries()}. Check the scoring URI and your network.",
            ) from None
        except ServiceResponseError as exc:
            raise EndpointConnectionError(
                f"{self.label} dropped the connection ({_error_kind(exc)})"
                f"{self._after_retries()}. Try again later.",
            ) from None
        except AzureError as exc:
            raise EndpointError(
                f"calling {self.label} failed: {redact(_first_line(exc), self.config._key)}"
            ) from None
        response = pipeline_response.http_response
        retries = int(pipeline_response.context.get("retry_count", 0) or 0)
        headers = response.headers
        request_id = _request_id(headers)
        if not 200 <= response.status_code < 300:
            raise error_for_status(
                response.status_code,
                headers,
                _safe_text(response),
                self.config,
                retries=retries,
                sent_bytes=size,
            )
        try:
            reports = parse_response(response.body(), n_studies=len(request.studies))
        except ResponseFormatError as exc:
            suffix = f" (x-request-id: {request_id})" if request_id else ""
            raise ResponseFormatError(f"{self.label}: {exc}{suffix}") from None
        if headers.get(DEMO_HEADER, "").strip() == "1":
            for report in reports:
                report.demo = True
        logger.debug(
            "scored %d studies at %s in %.2f s (%d retries)",
            len(reports),
            self.label,
            time.monotonic() - started,
            retries,
        )
        return self.finish_reports(request, reports, request_id)

    def _after_retries(self) -> str:
        return " (after retries)" if self.config.max_retries else ""

    def close(self) -> None:
        """Close pooled connections."""
        self._transport.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _safe_text(response: Any) -> str:
    try:
        return response.body().decode("utf-8", "replace")
    except Exception:
        return ""
