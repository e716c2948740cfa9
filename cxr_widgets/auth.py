"""Endpoint authentication: keys and tokens that never show themselves.

A key lives in a :class:`Secret`, whose repr, str and pickle reveal nothing;
only :meth:`Secret.reveal` gives the value, and only the pipeline's auth policy
calls it. Entra ID tokens come from any azure-core ``TokenCredential`` through
azure-core's own ``BearerTokenCredentialPolicy`` (which caches tokens and
refreshes them before they expire).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from azure.core.credentials import AccessTokenInfo, AzureKeyCredential
from azure.core.pipeline.policies import AzureKeyCredentialPolicy, BearerTokenCredentialPolicy

from .errors import ConfigError

#: The scope of Azure ML online endpoints for Microsoft Entra ID tokens.
ENTRA_SCOPE = "https://ml.azure.com/.default"


class Secret:
    """A key or token (or a credential object) that prints as ``'***'`` and refuses to be pickled."""

    __slots__ = ("_value",)

    def __init__(self, value: Any) -> None:
        self._value = value

    def reveal(self) -> Any:
        """The value itself; pass it only to an HTTP header."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __reduce__(self) -> Any:
        raise TypeError("a Secret cannot be pickled; pass the key again after loading")


def as_secret(value: Any, what: str) -> Secret | None:
    """A :class:`Secret` from a string, an ``AzureKeyCredential`` or a Secret (None stays None)."""
    if value is None or isinstance(value, Secret):
        return value
    if isinstance(value, AzureKeyCredential):
        value = value.key
    if not isinstance(value, str):
        raise ConfigError(
            f"{what} must be a string (or an AzureKeyCredential), got {type(value).__name__}"
        )
    value = value.strip()
    if any(not (" " <= ch <= "~") for ch in value):
        # Never in the message: not the key, not the character (it is part of the key).
        raise ConfigError(
            f"{what} holds a character that is not printable ASCII (a copy-paste accident? "
            "keys and tokens are plain ASCII): copy it again from the endpoint's "
            "Consume page or ml_client.online_endpoints.get_keys(name)."
        )
    return Secret(value) if value else None


def is_token_credential(value: Any) -> bool:
    """True for objects azure-core can take tokens from (``get_token`` or ``get_token_info``)."""
    return callable(getattr(value, "get_token_info", None)) or callable(
        getattr(value, "get_token", None)
    )


#: A run of this many characters of a secret, anywhere in a text, is redacted.
REDACT_RUN = 8


def redact(text: str, *secrets: Secret | str | None) -> str:
    """``text`` with every secret, whole or in part, replaced by ``***``.

    Any run of :data:`REDACT_RUN` or more characters that also occurs in a
    secret is removed (a server may quote a header cut short, or a proxy a
    token); so is a whole secret, however short. Call it before truncating.
    """
    values = [s.reveal() if isinstance(s, Secret) else s for s in secrets]
    values = [v for v in values if isinstance(v, str) and v]
    if not values or not text:
        return text
    for value in values:
        text = text.replace(value, "***")
    grams = {v[i : i + REDACT_RUN] for v in values for i in range(len(v) - REDACT_RUN + 1)}
    if not grams:
        return text
    covered = [False] * len(text)
    hit = False
    for start in range(len(text) - REDACT_RUN + 1):
        if text[start : start + REDACT_RUN] in grams:
            hit = True
            for position in range(start, start + REDACT_RUN):
                covered[position] = True
    if not hit:
        return text
    out = []
    for position, char in enumerate(text):
        if not covered[position]:
            out.append(char)
        elif position == 0 or not covered[position - 1]:
            out.append("***")
    return "".join(out)


class TokenRecorder:
    """A TokenCredential that passes tokens through and remembers the latest ones,
    so that the client can redact them from what a server or proxy echoes back."""

    def __init__(self, credential: Any, keep: int = 2) -> None:
        self._credential = credential
        self._keep = keep
        self._tokens: list[Secret] = []
        self._lock = threading.Lock()

    def _remember(self, token: str) -> None:
        with self._lock:
            if not any(t.reveal() == token for t in self._tokens):
                self._tokens = [*self._tokens, Secret(token)][-self._keep :]

    @property
    def tokens(self) -> list[Secret]:
        with self._lock:
            return list(self._tokens)

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        if callable(getattr(self._credential, "get_token_info", None)):
            info = self._credential.get_token_info(*scopes, options=options)
        else:
            token = self._credential.get_token(*scopes)
            info = AccessTokenInfo(token.token, token.expires_on)
        self._remember(info.token)
        return info

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        token = self._credential.get_token(*scopes, **kwargs)
        self._remember(token.token)
        return token

    def close(self) -> None:
        close = getattr(self._credential, "close", None)
        if callable(close):
            close()

    def __repr__(self) -> str:
        return f"TokenRecorder({type(self._credential).__name__})"

    def __reduce__(self) -> Any:
        raise TypeError("a token credential cannot be pickled")


class RefreshingTokenCredential:
    """A TokenCredential over a function returning ``(token, expires_on, refresh_on)``.

    Used for ``aml_token`` endpoints: the token comes from
    ``ml_client.online_endpoints.get_keys`` and is fetched again when it is
    due. The token is held as a :class:`Secret`; azure-core's bearer policy
    decides when to ask for a new one.
    """

    def __init__(
        self,
        fetch: Callable[[], tuple[str, float, float | None]],
        *,
        first: tuple[str, float, float | None] | None = None,
        label: str = "token",
    ) -> None:
        self._fetch = fetch
        self._label = label
        self._lock = threading.Lock()
        self._token: Secret | None = None
        self._expires_on = 0.0
        self._refresh_on: float | None = None
        self.fetch_count = 0
        if first is not None:
            self._store(first)

    def _store(self, value: tuple[str, float, float | None]) -> None:
        token, expires_on, refresh_on = value
        self._token = Secret(token)
        self._expires_on = float(expires_on or 0)
        self._refresh_on = float(refresh_on) if refresh_on else None

    def _due(self) -> bool:
        now = time.time()
        if self._token is None or self._expires_on <= now + 30:
            return True
        return self._refresh_on is not None and self._refresh_on <= now

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        with self._lock:
            if self._due():
                self._store(self._fetch())
                self.fetch_count += 1
            assert self._token is not None
            refresh_on = int(self._refresh_on) if self._refresh_on else None
            return AccessTokenInfo(
                self._token.reveal(), int(self._expires_on), refresh_on=refresh_on
            )

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        info = self.get_token_info(*scopes)
        return AccessToken(info.token, info.expires_on)

    def close(self) -> None:
        return None

    def __enter__(self) -> RefreshingTokenCredential:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def __repr__(self) -> str:
        return f"RefreshingTokenCredential({self._label})"

    def __reduce__(self) -> Any:
        raise TypeError("a token credential cannot be pickled")


def auth_policy(key: Secret | None, credential: Any, scope: str) -> Any:
    """The azure-core policy that puts ``Authorization: Bearer ...`` on each request.

    Key: ``AzureKeyCredentialPolicy`` with the ``Bearer`` prefix, as Azure ML
    expects. Credential: ``BearerTokenCredentialPolicy`` for ``scope``.
    No auth: None.
    """
    if key is not None:
        return AzureKeyCredentialPolicy(
            AzureKeyCredential(key.reveal()), "Authorization", prefix="Bearer"
        )
    if credential is not None:
        return BearerTokenCredentialPolicy(credential, scope)
    return None
