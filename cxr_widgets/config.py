"""Endpoint configuration: where a CXRReportGen endpoint is and how to authenticate.

:class:`EndpointConfig` validates the scoring URI and holds a key or a token
credential without ever showing it (repr, str, logs, exceptions, pickles).
"""

from __future__ import annotations

import copy
import ipaddress
import os
import warnings
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .auth import ENTRA_SCOPE, Secret, as_secret, is_token_credential
from .contract import DEFAULT_REQUEST_BUDGET
from .errors import ConfigError
from .retry import MAX_RETRY_AFTER

DEFAULT_KEY_ENV = "CXR_ENDPOINT_KEY"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_uri(scoring_uri: Any, has_secret: bool, allow_insecure_http: bool = False) -> str:
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
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        if has_secret and not allow_insecure_http:
            raise ConfigError(
                f"scoring_uri uses plain http to {parts.hostname}: the key or token would "
                "travel in clear text (any proxy or network on the way could read it). Use "
                "https (Azure ML endpoints always offer it); plain http with a key is only "
                "allowed to 127.0.0.1 / localhost, unless you pass allow_insecure_http=True "
                "for a network you trust."
            )
        warnings.warn(
            f"scoring_uri uses plain http to {parts.hostname}; requests (with patient "
            "images) travel unencrypted. Use https outside this machine.",
            UserWarning,
            stacklevel=3,
        )
    path = parts.path if parts.path not in ("", "/") else "/score"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def _model_name_version(model: Any) -> tuple[str | None, str | None]:
    """``(name, version)`` from a model name, ``name:version`` or an Azure ML asset id
    (``azureml://registries/azureml/models/CxrReportGen/versions/12``)."""
    if model is None:
        return None, None
    if not isinstance(model, str) or not model.strip():
        raise ConfigError("model must be a model name, name:version or asset id, or None")
    text = model.strip()
    parts = text.split("/")
    if "models" in parts:
        at = parts.index("models")
        name = parts[at + 1] if at + 1 < len(parts) else text
        version = parts[at + 3] if at + 3 < len(parts) and parts[at + 2] == "versions" else None
        return name, version
    name, _, version = text.partition(":")
    return name, version or None


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

    A key or token goes over plain ``http`` only to loopback (the local
    endpoint) unless ``allow_insecure_http=True``. ``model`` (a name,
    ``name:version`` or an Azure ML asset id) is recorded in every report's
    provenance. ``max_request_bytes`` is the client's request budget.
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
        pool_size: int | None = None,
        auth_mode: str | None = None,
        source: str | None = None,
        model: str | None = None,
        allow_insecure_http: bool = False,
        max_retry_after: float = MAX_RETRY_AFTER,
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

        self.scoring_uri = _check_uri(
            scoring_uri, secret is not None or credential is not None, bool(allow_insecure_http)
        )
        self.allow_insecure_http = bool(allow_insecure_http)
        self.model, self.model_version = _model_name_version(model)
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
        self.max_retry_after = _positive("max_retry_after", max_retry_after, allow_zero=True)
        if max_request_bytes is not None and (
            not isinstance(max_request_bytes, int) or max_request_bytes <= 0
        ):
            raise ConfigError("max_request_bytes must be a positive integer or None")
        self.max_request_bytes = max_request_bytes
        if pool_size is None:  # a connection for every request a batch run may keep in flight
            from .adaptive import default_max_in_flight

            pool_size = default_max_in_flight(max_request_bytes or DEFAULT_REQUEST_BUDGET)
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
        return is_loopback(urlsplit(self.scoring_uri).hostname or "")

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
            "max_retry_after": self.max_retry_after,
            "max_request_bytes": self.max_request_bytes,
            "pool_size": self.pool_size,
            "source": self.source,
            "model": self.model,
            "model_version": self.model_version,
            "allow_insecure_http": self.allow_insecure_http,
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
