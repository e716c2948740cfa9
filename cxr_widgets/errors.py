"""One exception hierarchy for the whole package.

Every message says what was wrong, where, and what to do about it. Messages
never contain keys, tokens or patient text.
"""

from __future__ import annotations


class CxrWidgetsError(Exception):
    """Base class of every error raised by cxr_widgets."""


class MissingDependencyError(CxrWidgetsError, ImportError):
    """An optional part of the package is not installed; the message names the pip command."""

    def __init__(self, message: str, extra: str | None = None) -> None:
        super().__init__(message)
        self.extra = extra


class StudyError(CxrWidgetsError, ValueError):
    """A study is incomplete or one of its fields has the wrong type."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ImageError(CxrWidgetsError, ValueError):
    """An image could not be read or prepared."""

    def __init__(self, message: str, source: str | None = None) -> None:
        super().__init__(message)
        self.source = source


class RequestError(CxrWidgetsError, ValueError):
    """A request cannot be built or would break the endpoint's limits."""


class ResponseFormatError(CxrWidgetsError, ValueError):
    """The endpoint answered with something that is not a valid CXRReportGen response."""


class ConfigError(CxrWidgetsError, ValueError):
    """Endpoint configuration is missing or inconsistent."""


class ManifestError(CxrWidgetsError, ValueError):
    """A batch manifest is missing, empty or malformed."""


class StoreError(CxrWidgetsError):
    """The result store cannot be opened or read."""


class ReviewError(CxrWidgetsError, ValueError):
    """A review change names a study, finding, verdict, box or reviewer that does not fit."""


class DeploymentError(CxrWidgetsError):
    """An Azure ML deployment step failed."""


class EndpointError(CxrWidgetsError):
    """The endpoint could not be called or answered with an error.

    ``status`` is the HTTP status (None when no answer arrived) and
    ``request_id`` the endpoint's ``x-request-id`` when it sent one.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        request_id: str | None = None,
        reason: str | None = None,
    ) -> None:
        if request_id:
            message = f"{message} (x-request-id: {request_id})"
        super().__init__(message)
        self.status = status
        self.request_id = request_id
        self.reason = reason


class EndpointAuthError(EndpointError):
    """401/403: the key or token was refused."""


class EndpointNotFoundError(EndpointError):
    """404: no such endpoint, or no deployment receives traffic."""


class EndpointTimeoutError(EndpointError):
    """408 or a read timeout: the model ran past the request timeout."""


class RequestTooLargeError(EndpointError):
    """413: the request is larger than the endpoint accepts."""


class ModelError(EndpointError):
    """424: the model itself failed on the request."""


class EndpointBusyError(EndpointError):
    """429: too many pending requests, or rate limited."""


class EndpointServerError(EndpointError):
    """5xx: the endpoint's infrastructure failed."""


class EndpointConnectionError(EndpointError):
    """No answer: the connection was refused, dropped or timed out."""


class DeadlineExceededError(EndpointError):
    """The call's total deadline passed while retrying."""


class BadRequestError(EndpointError):
    """400: the endpoint rejected the request as malformed."""


class LocalEndpointError(CxrWidgetsError, RuntimeError):
    """The local endpoint (``cxr-widgets serve``, ``LocalEndpoint``) could not start."""


class EvaluationError(CxrWidgetsError, ValueError):
    """Generated reports or references cannot be evaluated as given."""


class JudgeError(CxrWidgetsError):
    """An entailment judge could not judge a study (timeout, refusal, nonsense answer)."""


def user_message(exc: BaseException) -> str:
    """The package's own message, or a short one for anything else (never a traceback)."""
    if isinstance(exc, CxrWidgetsError):
        return str(exc)
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    return f"{type(exc).__name__}: {first}"
