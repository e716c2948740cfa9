"""A chat-model entailment judge: any OpenAI-compatible chat-completions endpoint.

Azure OpenAI (``https://<resource>.openai.azure.com/openai/deployments/<name>/
chat/completions?api-version=...``, key in the ``api-key`` header) or a local
model server (vLLM, llama.cpp, Ollama: ``http://127.0.0.1:<port>/v1/chat/
completions``, optional ``Authorization: Bearer`` key). The prompt is
:data:`SYSTEM_PROMPT` plus the numbered sentences (docs/evaluation.md shows it).

Every answer is cached in SQLite as soon as it arrives (one committed
transaction each), keyed by a SHA-256 of the prompt version, the model and the
sentences; the cache holds only the verdicts (booleans and sentence numbers),
never report text. A re-run asks only what is not cached, and a failure
(timeout, HTTP error, an answer that is not the JSON asked for) never loses
what was cached before it. The key lives in a :class:`~cxr_widgets.auth.Secret`:
never in repr, logs or exceptions.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .. import __version__
from ..auth import Secret, as_secret, redact
from ..config import is_loopback
from ..errors import ConfigError, JudgeError
from ..folders import make_folder
from .model import Judgement, StudyPair

__all__ = ["DEFAULT_JUDGE_KEY_ENV", "PROMPT_VERSION", "SYSTEM_PROMPT", "ChatJudge"]

DEFAULT_JUDGE_KEY_ENV = "CXR_JUDGE_KEY"
PROMPT_VERSION = "cxr-widgets-entailment-1"

SYSTEM_PROMPT = """\
You compare findings of chest X-ray reports. You get PREMISES (numbered \
sentences from one report) and HYPOTHESES (numbered sentences from another \
report of the same study). For each hypothesis decide whether the premises, \
taken together, entail it: a radiologist reading the premises would accept the \
hypothesis as stated (same finding, same side and location, compatible \
severity). A hypothesis that the premises contradict or do not mention is not \
entailed. Answer with JSON only, no other text:
{"results": [{"hypothesis": <number>, "entailed": true or false, "evidence": [<numbers of the premises that entail it>]}]}
Give exactly one result for every hypothesis; "evidence" is empty when the \
hypothesis is not entailed."""

_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")


def user_message(premises: Sequence[str], hypotheses: Sequence[str]) -> str:
    """The user turn: the numbered premises and hypotheses."""

    def numbered(items: Sequence[str]) -> str:
        return "\n".join(f"{k}. {text}" for k, text in enumerate(items, start=1)) or "(none)"

    return f"PREMISES:\n{numbered(premises)}\n\nHYPOTHESES:\n{numbered(hypotheses)}"


def parse_answer(
    content: str, n_hypotheses: int, n_premises: int
) -> tuple[list[bool], list[list[int]]]:
    """Verdicts and 0-based evidence from the model's answer; JudgeError for anything else."""
    try:
        data = json.loads(_FENCE.sub("", content.strip()))
        results = data["results"]
        if not isinstance(results, list):
            raise TypeError
    except (json.JSONDecodeError, KeyError, TypeError):
        raise JudgeError(
            'the chat judge did not answer with {"results": [...]} JSON as asked'
        ) from None
    entailed: list[bool | None] = [None] * n_hypotheses
    evidence: list[list[int]] = [[] for _ in range(n_hypotheses)]
    for item in results:
        try:
            number = int(item["hypothesis"])
            flag = item["entailed"]
            cited = [int(p) for p in item.get("evidence") or []]
        except (KeyError, TypeError, ValueError):
            raise JudgeError(
                "the chat judge's answer has a result without hypothesis/entailed"
            ) from None
        if not 1 <= number <= n_hypotheses or not isinstance(flag, bool):
            raise JudgeError(
                f"the chat judge answered for hypothesis {number} of {n_hypotheses} "
                "or with a non-boolean verdict"
            )
        if entailed[number - 1] is not None:
            raise JudgeError(f"the chat judge answered twice for hypothesis {number}")
        if any(not 1 <= p <= n_premises for p in cited):
            raise JudgeError(f"the chat judge cited a premise outside 1..{n_premises}")
        entailed[number - 1] = flag
        evidence[number - 1] = sorted({p - 1 for p in cited}) if flag else []
    missing = [k + 1 for k, flag in enumerate(entailed) if flag is None]
    if missing:
        raise JudgeError(f"the chat judge gave no verdict for hypotheses {missing[:10]}")
    return [bool(f) for f in entailed], evidence


class AnswerCache:
    """Verdicts by request digest in SQLite; each answer committed on arrival."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        make_folder(
            self.path.parent,
            purpose=f"the judge cache {self.path.name}",
            fix="give another cache= file.",
            error=ConfigError,
        )
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(
                str(self.path), check_same_thread=False, isolation_level=None, timeout=30.0
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, answer TEXT NOT NULL, "
                "created TEXT NOT NULL)"
            )
        except sqlite3.DatabaseError as exc:
            raise ConfigError(
                f"cannot open the judge cache {self.path} ({exc}); give another cache= file"
            ) from None

    def get(self, key: str) -> Any:
        with self._lock:
            row = self._conn.execute("SELECT answer FROM answers WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, answer: Any) -> None:
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO answers(key, answer, created) VALUES (?, ?, ?)",
                (key, json.dumps(answer), now),
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class ChatJudge:
    """Entailment decided by a chat model behind an OpenAI-compatible endpoint.

    ``url``: the full chat-completions URL. ``model``: sent in the body (a
    local server needs it; Azure OpenAI takes the deployment from the URL).
    The key comes from ``key`` or the environment variable ``key_env``
    (default ``CXR_JUDGE_KEY``); none for a local server without one. It is
    sent as ``api-key`` to Azure OpenAI hosts (``*.openai.azure.com``) and as
    ``Authorization: Bearer`` elsewhere. Plain http is allowed only to
    127.0.0.1/localhost: report text is patient data. ``cache``: the SQLite
    file of answers; ``concurrency``: requests in flight.
    """

    name = "chat"

    def __init__(
        self,
        url: str,
        *,
        model: str | None = None,
        key: Any = None,
        key_env: str | None = DEFAULT_JUDGE_KEY_ENV,
        cache: str | os.PathLike[str] = "judge-cache.sqlite",
        timeout: float = 60.0,
        concurrency: int = 4,
    ) -> None:
        secret = as_secret(key, "key")
        self.key_source = "argument" if secret is not None else None
        if secret is None and key_env:
            secret = as_secret(os.environ.get(key_env), f"the {key_env} environment variable")
            self.key_source = f"${key_env}" if secret is not None else None
        self._key: Secret | None = secret
        self.url = _check_url(url, has_key=secret is not None)
        host = urlsplit(self.url).hostname or ""
        self.header = "api-key" if host.endswith(".openai.azure.com") else "Authorization"
        self.model = model
        if not timeout or timeout <= 0:
            raise ConfigError(f"timeout must be > 0 seconds, got {timeout!r}")
        self.timeout = float(timeout)
        self.concurrency = max(1, int(concurrency))
        self.cache = AnswerCache(cache)
        #: HTTP requests sent (answers not found in the cache), for notebooks and tests.
        self.requests = 0
        self._count_lock = threading.Lock()

    # --- secret-free description ------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """Scheme, host and path of the URL (no query string, no key)."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}{parts.path}"

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "endpoint": self.endpoint,
            "model": self.model,
            "prompt_version": PROMPT_VERSION,
            "key_source": self.key_source,
            "cache": str(self.cache.path),
        }

    def __repr__(self) -> str:
        key = f", key from {self.key_source}" if self.key_source else ""
        return f"ChatJudge({self.endpoint!r}, model={self.model!r}{key})"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("a ChatJudge holds a key and cannot be pickled; create it again")

    # --- judging ----------------------------------------------------------------------

    def _digest(self, premises: Sequence[str], hypotheses: Sequence[str]) -> str:
        material = json.dumps(
            {"v": PROMPT_VERSION, "model": self.model, "p": list(premises), "h": list(hypotheses)},
            ensure_ascii=False,
        )
        return hashlib.sha256(material.encode("utf-8")).hexdigest()

    def entail(
        self, premises: Sequence[str], hypotheses: Sequence[str]
    ) -> tuple[list[bool], list[list[int]]]:
        """Which hypotheses the premises entail, with 0-based evidence (cached)."""
        if not hypotheses:
            return [], []
        if not premises:
            return [False] * len(hypotheses), [[] for _ in hypotheses]
        key = self._digest(premises, hypotheses)
        cached = self.cache.get(key)
        if cached is not None:
            return cached["entailed"], cached["evidence"]
        content = self._ask(user_message(premises, hypotheses))
        entailed, evidence = parse_answer(content, len(hypotheses), len(premises))
        self.cache.put(key, {"entailed": entailed, "evidence": evidence})
        return entailed, evidence

    def _ask(self, message: str) -> str:
        body: dict[str, Any] = {
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": message},
            ],
            "temperature": 0,
        }
        if self.model:
            body["model"] = self.model
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"cxr-widgets/{__version__}",
        }
        if self._key is not None:
            value = self._key.reveal()
            headers[self.header] = value if self.header == "api-key" else f"Bearer {value}"
        request = urllib.request.Request(
            self.url, data=json.dumps(body).encode("utf-8"), headers=headers, method="POST"
        )
        with self._count_lock:
            self.requests += 1
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            exc.close()  # it holds the connection open
            hint = " (check the key)" if exc.code in (401, 403) else ""
            raise JudgeError(f"the chat judge answered HTTP {exc.code}{hint}") from None
        except TimeoutError:
            raise JudgeError(f"the chat judge did not answer within {self.timeout:g} s") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise JudgeError(
                redact(f"cannot reach the chat judge at {self.endpoint} ({reason})", self._key)
            ) from None
        try:
            return str(json.loads(raw)["choices"][0]["message"]["content"])
        except (json.JSONDecodeError, KeyError, IndexError, TypeError, UnicodeDecodeError):
            raise JudgeError("the chat judge's reply is not a chat-completions response") from None

    def judge(self, pair: StudyPair) -> Judgement:
        generated = [s.text for s in pair.generated]
        reference = [s.text for s in pair.reference]
        g_flags, g_evidence = self.entail(reference, generated)
        r_flags, r_evidence = self.entail(generated, reference)
        return Judgement(
            tuple(g_flags),
            tuple(tuple(e) for e in g_evidence),
            tuple(r_flags),
            tuple(tuple(e) for e in r_evidence),
        )

    def judge_many(self, pairs: Sequence[StudyPair]) -> list[Judgement | JudgeError]:
        """Judge many studies, ``concurrency`` requests at a time; failures returned, not raised."""

        def one(pair: StudyPair) -> Judgement | JudgeError:
            try:
                return self.judge(pair)
            except JudgeError as exc:
                return exc

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(one, pairs))


def _check_url(url: Any, *, has_key: bool) -> str:
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(
            "url must be the chat-completions URL, e.g. http://127.0.0.1:8000/v1/chat/completions"
        )
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("url must be an http(s) URL with a host")
    if parts.username or parts.password:
        raise ConfigError(f"url must not carry a user or password; use {DEFAULT_JUDGE_KEY_ENV}")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ConfigError(
            f"url uses plain http to {parts.hostname}: report text (patient data)"
            f"{' and the key' if has_key else ''} would travel in clear text. Use https; "
            "plain http is only allowed to 127.0.0.1 / localhost."
        )
    return url.strip()
