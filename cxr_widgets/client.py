"""The HTTP client for CXRReportGen endpoints: the call, and errors that say what to do.

``ReportGenClient`` sends prepared requests through an azure-core pipeline
(its transport, headers, user agent, auth and HTTP logging policies, and the
retry policy in :mod:`cxr_widgets.retry`) and turns every failure into an
:class:`~cxr_widgets.errors.EndpointError` naming the status, the
``x-request-id`` and what to do. :class:`EndpointConfig` lives in
:mod:`cxr_widgets.config` and is re-exported here.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    ServiceRequestError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.core.pipeline import Pipeline
from azure.core.pipeline.policies import HeadersPolicy, HttpLoggingPolicy, UserAgentPolicy
from azure.core.rest import HttpRequest

from . import __version__
from .auth import TokenRecorder, auth_policy, redact
from .backend import SIZE_ADVICE, ReportGenerator
from .config import DEFAULT_KEY_ENV, EndpointConfig
from .contract import MAX_RESPONSE_BYTES, PreparedRequest, parse_response
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
from .report import Finding, Report
from .retry import (
    CallWatchdog,
    ClientStats,
    EndpointRetryPolicy,
    error_kind,
    request_id_of,
    watch_connections,
)

__all__ = ["ClientStats", "EndpointConfig", "ReportGenClient", "error_for_status"]

logger = logging.getLogger(__name__)

DEPLOYMENT_HEADER = "azureml-model-deployment"
DEMO_HEADER = "x-cxr-widgets-demo"
#: Response headers safe to log (everything else, Authorization first, is REDACTED).
LOGGED_HEADERS = (
    DEPLOYMENT_HEADER,
    "x-request-id",
    "ms-azureml-model-error-statuscode",  # not the reason: a server may echo a secret there
    DEMO_HEADER,
    "Retry-After",
)
ROLE_ADVICE = (
    "the 'AzureML Data Scientist' role, or a role with "
    "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/score/action, "
    "on the workspace"
)


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
    if len(value) <= limit:
        return value
    cut = limit
    while cut < len(value) and value[cut - 1] == "*" and value[cut] == "*":
        cut += 1  # never leave half a redaction mark
    return value[:cut] + "..."


def _key_origin(source: str | None) -> str:
    if source == "argument":
        return "passed as key="
    if source:
        return f"read from {source}"
    return "from the workspace"


def error_for_status(
    status: int,
    headers: Any,
    body_text: str,
    config: EndpointConfig,
    *,
    retries: int = 0,
    sent_bytes: int | None = None,
    where: str | None = None,
    secrets: tuple[Any, ...] = (),
) -> EndpointError:
    """The :class:`EndpointError` for an HTTP error answer, with advice.

    ``where`` names the endpoint in messages (default: ``config.label``).
    Everything the server said is redacted of the key and of ``secrets``
    (e.g. the current token), whole or in part, before it is shortened.
    """
    secrets = (config._key, *secrets)
    request_id = request_id_of(headers)
    if request_id:
        request_id = redact(request_id, *secrets)[:200]
    detail = _detail(redact(body_text, *secrets))
    said = f" The endpoint said: {detail.rstrip('.')}." if detail else ""
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
                f"check the key ({_key_origin(config.key_source)}): it must be the "
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
            f"the model took longer than the request timeout of {where} (408): send fewer studies "
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
        model_status = redact(
            headers.get("ms-azureml-model-error-statuscode") or "unknown", *secrets
        )[:40]
        given = redact(headers.get("ms-azureml-model-error-reason") or "", *secrets)
        reason = _detail(given) or detail or "not given"
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
    watch_connections(adapter.poolmanager)  # the call deadline can cut a dripping answer
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    if config.is_loopback:
        # Never through a proxy (HTTP_PROXY & co.): the key would go to it in clear text.
        session.trust_env = False
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
        super().__init__(image_options, request_budget=config.max_request_bytes)
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
            max_retry_after=config.max_retry_after,
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
        # Tokens handed out are remembered, to redact them from what comes back.
        self._tokens = TokenRecorder(config.credential) if config.credential is not None else None
        auth = auth_policy(config._key, self._tokens, config.scope)
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

    def __reduce__(self) -> Any:
        # Its auth policy holds the key; a client is rebuilt, never pickled.
        raise TypeError(
            "a ReportGenClient cannot be pickled; build one in each process from an "
            "EndpointConfig (keys are never pickled either)"
        )

    @property
    def max_attempts(self) -> int:
        """HTTP attempts per request at most: the first and ``config.max_retries`` retries
        (of 429, 500/502/503/504 and refused or dropped connections; see :mod:`.retry`)."""
        return self.config.max_retries + 1

    def provenance_fields(self) -> dict[str, Any]:
        return {
            "backend": "online-endpoint",
            "endpoint": self.identity,
            "deployment": self.config.deployment,
            "model": self.config.model,
            "model_version": self.config.model_version,
        }

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

    @property
    def _secrets(self) -> tuple[Any, ...]:
        """Every secret this client holds: the key and the latest tokens."""
        tokens = self._tokens.tokens if self._tokens is not None else []
        return (self.config._key, *tokens)

    def _redact(self, text: str) -> str:
        return redact(text, *self._secrets)

    def _send(self, request: PreparedRequest, body: bytes, size: int) -> list[Report]:
        http_request = HttpRequest("POST", self.config.scoring_uri, content=body)
        options: dict[str, Any] = {"stream": True}  # read below, capped and within the deadline
        if self.config.credential is not None and self.config.scoring_uri.startswith("http:"):
            # Loopback only (checked by EndpointConfig); the bearer policy pops this option.
            options["enforce_https"] = False
        started = time.monotonic()
        with CallWatchdog(started + self.config.deadline) as watchdog:
            pipeline_response = self._call(http_request, options, started)
            response = pipeline_response.http_response
            data = self._read_answer(response, watchdog)
        retries = int(pipeline_response.context.get("retry_count", 0) or 0)
        headers = response.headers
        request_id = request_id_of(headers)
        if request_id:
            request_id = self._redact(request_id)[:200]
        if not 200 <= response.status_code < 300:
            raise error_for_status(
                response.status_code,
                headers,
                data.decode("utf-8", "replace"),
                self.config,
                retries=retries,
                sent_bytes=size,
                secrets=self._secrets[1:],
            )
        try:
            reports = parse_response(data, n_studies=len(request.studies), repair_boxes=True)
        except ResponseFormatError as exc:
            suffix = f" (x-request-id: {request_id})" if request_id else ""
            raise ResponseFormatError(f"{self.label}: {self._redact(str(exc))}{suffix}") from None
        if any(self._secrets):
            reports = [self._redacted_report(report) for report in reports]
        demo = headers.get(DEMO_HEADER, "").strip() == "1"
        logger.debug(
            "scored %d studies at %s in %.2f s (%d retries)",
            len(reports),
            self.label,
            time.monotonic() - started,
            retries,
        )
        answered_by = headers.get(DEPLOYMENT_HEADER) or self.config.deployment
        return self.finish_reports(
            request,
            reports,
            request_id,
            demo=demo,
            body=body,
            backend="local-endpoint" if demo else "online-endpoint",
            deployment=self._redact(answered_by)[:200] if answered_by else None,
        )

    def _redacted_report(self, report: Report) -> Report:
        """A parsed report without any secret a server echoed into its texts."""
        return report.replace(
            findings=[Finding(self._redact(f.text), f.boxes) for f in report.findings],
            warnings=[self._redact(w) for w in report.warnings],
        )

    def _call(self, http_request: HttpRequest, options: dict[str, Any], started: float) -> Any:
        """Run the pipeline; every azure-core failure becomes an :class:`EndpointError`."""
        try:
            return self._pipeline.run(http_request, **options)
        except CxrWidgetsError:
            raise
        except ClientAuthenticationError as exc:
            raise EndpointAuthError(
                "could not get a Microsoft Entra ID token for "
                f"{self.config.scope} ({self._redact(_first_line(exc))[:300]}). "
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
                f"could not connect to {self.label}: {error_kind(exc)}"
                f"{_after_retries(exc)}. Check the scoring URI and your network.",
            ) from None
        except ServiceResponseError as exc:
            raise EndpointConnectionError(
                f"{self.label} dropped the connection ({error_kind(exc)})"
                f"{_after_retries(exc)}. Try again later.",
            ) from None
        except AzureError as exc:
            raise EndpointError(
                f"calling {self.label} failed: {self._redact(_first_line(exc))[:300]}"
            ) from None

    def _read_answer(self, response: Any, watchdog: CallWatchdog) -> bytes:
        """The decoded body, at most MAX_RESPONSE_BYTES, read before the call's deadline."""
        parts: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    raise ResponseFormatError(
                        f"{self.label} answered more than {MAX_RESPONSE_BYTES:,} bytes (decoded); "
                        "an answer for ten studies takes a few kilobytes, so it was refused "
                        "unread. Check the scoring URI (is it a CXRReportGen endpoint?)."
                    )
                parts.append(chunk)
        except CxrWidgetsError:
            raise
        except Exception as exc:
            if watchdog.fired:
                raise DeadlineExceededError(
                    f"gave up after the {self.config.deadline:g} s deadline for this call: "
                    f"{self.label} was still sending its answer. Raise "
                    "EndpointConfig(deadline=...) or try again when the endpoint is less busy.",
                    reason="deadline",
                ) from None
            raise EndpointConnectionError(
                f"{self.label} dropped the connection while answering ({error_kind(exc)}). "
                "Try again later.",
            ) from None
        finally:
            response.close()
        return b"".join(parts)

    def close(self) -> None:
        """Close pooled connections."""
        self._transport.close()


def _after_retries(exc: BaseException) -> str:
    retries = getattr(exc, "cxr_retries", 0)
    return f" (after {retries} retr{'y' if retries == 1 else 'ies'})" if retries else ""


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message, whole: redact it before shortening."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
