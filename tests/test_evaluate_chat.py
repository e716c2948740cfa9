"""The chat judge against a scripted OpenAI-compatible server on 127.0.0.1.

The server reads the prompt it gets (numbered premises and hypotheses) and
answers as a chat model would: entailed when a premise has the same
normalised text. Scripts make it answer nonsense, HTTP errors or too late.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from cxr_widgets.errors import ConfigError, JudgeError
from cxr_widgets.evaluate import ChatJudge, evaluate, normalise_text
from cxr_widgets.evaluate.chat import SYSTEM_PROMPT, parse_answer
from cxr_widgets.report import Box, Finding, Report

KEY = "judge-key-0123456789abcdef"


class ScriptedChat:
    """What the server answers: "model" (a working judge), "nonsense", "wrong",
    "slow", "500", or "401" unless the right key is sent."""

    def __init__(self) -> None:
        self.mode = "model"
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.fail_after: int | None = None

    @staticmethod
    def _section(text: str, name: str) -> list[str]:
        block = text.split(f"{name}:\n", 1)[1].split("\n\n", 1)[0]
        return (
            [] if block == "(none)" else [re.sub(r"^\d+\. ", "", ln) for ln in block.splitlines()]
        )

    def answer(self, body: dict[str, Any]) -> str:
        user = body["messages"][1]["content"]
        premises = [normalise_text(p) for p in self._section(user, "PREMISES")]
        hypotheses = self._section(user, "HYPOTHESES")
        results = []
        for k, h in enumerate(hypotheses, start=1):
            cited = [j + 1 for j, p in enumerate(premises) if p == normalise_text(h)]
            results.append({"hypothesis": k, "entailed": bool(cited), "evidence": cited})
        if self.mode == "wrong":
            results = results[:-1]  # a verdict missing
        return "```json\n" + json.dumps({"results": results}) + "\n```"


@pytest.fixture
def chat_server() -> Iterator[tuple[str, ScriptedChat]]:
    script = ScriptedChat()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            script.requests.append(body)
            script.headers.append(dict(self.headers))
            mode = script.mode
            if script.fail_after is not None and len(script.requests) > script.fail_after:
                mode = "500"
            if self.headers.get("Authorization") != f"Bearer {KEY}":
                mode = "401"
            if mode == "slow":
                time.sleep(1.5)
            if mode in ("500", "401"):
                payload = json.dumps({"error": f"echo {body['messages'][1]['content'][:40]}"})
                self.send_response(int(mode))
            else:
                content = "I think so." if mode == "nonsense" else script.answer(body)
                payload = json.dumps(
                    {"choices": [{"message": {"role": "assistant", "content": content}}]}
                )
                self.send_response(200)
            data = payload.encode()
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1/chat/completions", script
    finally:
        server.shutdown()
        server.server_close()


def reports_and_refs() -> tuple[list[Report], list[dict]]:
    generated = [
        Report(
            findings=[Finding("Heart normal."), Finding("Left effusion.", [Box(0, 0.5, 0.5, 1)])],
            study_id="s1",
        ),
        Report(findings=[Finding("No pneumothorax.")], study_id="s2"),
        Report(findings=[Finding("Cardiomegaly.")], study_id="s3"),
    ]
    refs = [
        {
            "study_id": "s1",
            "findings": [
                {"text": "heart normal"},
                {"text": "left effusion", "boxes": [[0, 0.5, 0.5, 0.9]]},
            ],
        },
        {"study_id": "s2", "findings": [{"text": "Small pneumothorax."}]},
        {"study_id": "s3", "findings": [{"text": "Cardiomegaly"}, {"text": "Edema"}]},
    ]
    return generated, refs


def test_chat_judge_agrees_with_the_exact_judge_and_caches(
    chat_server: tuple[str, ScriptedChat], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, script = chat_server
    monkeypatch.setenv("CXR_JUDGE_KEY", KEY)
    generated, refs = reports_and_refs()
    judge = ChatJudge(url, model="local-model", cache=tmp_path / "cache.sqlite", concurrency=2)
    evaluation = evaluate(generated, refs, judge=judge, bootstrap=50)
    exact = evaluate(generated, refs, judge="exact", bootstrap=50)
    assert evaluation.summary == exact.summary
    assert len(script.requests) == 6 == judge.requests  # two directions x three studies
    body = script.requests[0]
    assert body["model"] == "local-model" and body["temperature"] == 0
    assert body["messages"][0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert script.headers[0]["Authorization"] == f"Bearer {KEY}"
    assert evaluation.provenance["judge"] == {
        "name": "chat",
        "endpoint": url,
        "model": "local-model",
        "prompt_version": "cxr-widgets-entailment-1",
        "key_source": "$CXR_JUDGE_KEY",
        "cache": str(tmp_path / "cache.sqlite"),
    }
    # a re-run, even with a new judge object, is answered from the cache
    again = ChatJudge(url, model="local-model", cache=tmp_path / "cache.sqlite")
    assert evaluate(generated, refs, judge=again, bootstrap=50).summary == evaluation.summary
    assert again.requests == 0 and len(script.requests) == 6
    # the cache holds verdicts only, never report text
    raw = (tmp_path / "cache.sqlite").read_bytes()
    assert b"effusion" not in raw.lower() and b"pneumothorax" not in raw.lower()


def test_failures_are_counted_and_never_lose_cached_answers(
    chat_server: tuple[str, ScriptedChat], tmp_path: Path
) -> None:
    url, script = chat_server
    generated, refs = reports_and_refs()
    cache = tmp_path / "cache.sqlite"
    script.fail_after = 3  # the 4th request onward: HTTP 500
    judge = ChatJudge(url, key=KEY, key_env=None, cache=cache, concurrency=1)
    with pytest.warns(UserWarning, match="judge"):
        first = evaluate(generated, refs, judge=judge, bootstrap=0)
    assert first.counts["judge_failed"] == 2 and first.counts["evaluated"] == 1
    assert {p.reason for p in first.problems} == {"the chat judge answered HTTP 500"}
    assert judge.cache.__len__() == 3  # answers that arrived before the failures
    script.fail_after = None
    fixed = ChatJudge(url, key=KEY, key_env=None, cache=cache)
    second = evaluate(generated, refs, judge=fixed, bootstrap=0)
    assert second.counts["judge_failed"] == 0 and second.counts["evaluated"] == 3
    assert fixed.requests == 3  # only what was not cached


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("nonsense", 'did not answer with {"results": [...]} JSON'),
        ("wrong", "gave no verdict for hypotheses [2]"),
        ("slow", "did not answer within 0.5 s"),
    ],
)
def test_timeouts_and_nonsense_are_judge_failures(
    chat_server: tuple[str, ScriptedChat], tmp_path: Path, mode: str, reason: str
) -> None:
    url, script = chat_server
    script.mode = mode
    generated, refs = reports_and_refs()
    judge = ChatJudge(url, key=KEY, key_env=None, cache=tmp_path / "c.sqlite", timeout=0.5)
    with pytest.warns(UserWarning):
        evaluation = evaluate(generated[:1], refs[:1], judge=judge, bootstrap=0)
    (problem,) = evaluation.problems
    assert problem.side == "judge" and reason in problem.reason
    assert len(judge.cache) == 0  # nothing wrong was cached


def test_the_key_never_shows(
    chat_server: tuple[str, ScriptedChat], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url, _ = chat_server
    caplog.set_level(logging.DEBUG)
    judge = ChatJudge(url, key="wrong-" + KEY, key_env=None, cache=tmp_path / "c.sqlite")
    shown = [repr(judge), str(judge), json.dumps(judge.describe())]
    generated, refs = reports_and_refs()
    with pytest.warns(UserWarning):
        evaluation = evaluate(generated, refs, judge=judge, bootstrap=0)
    assert {p.reason for p in evaluation.problems} == {
        "the chat judge answered HTTP 401 (check the key)"
    }
    shown += [evaluation.to_json(), caplog.text]
    with pytest.raises(TypeError, match="cannot be pickled"):
        import pickle

        pickle.dumps(judge)
    for text in shown:
        assert KEY not in text
    assert "key from argument" in repr(judge)


def test_unreachable_server_and_bad_urls(tmp_path: Path) -> None:
    judge = ChatJudge(
        "http://127.0.0.1:9/v1/chat/completions",
        key=KEY,
        key_env=None,
        cache=tmp_path / "c.sqlite",
        timeout=2,
    )
    with pytest.raises(
        JudgeError, match=re.escape("cannot reach the chat judge at http://127.0.0.1:9")
    ) as info:
        judge.entail(["a"], ["b"])
    assert KEY not in str(info.value)
    with pytest.raises(ConfigError, match=r"plain http to example\.org"):
        ChatJudge("http://example.org/v1/chat/completions", cache=tmp_path / "c.sqlite")
    with pytest.raises(ConfigError, match="must not carry a user or password"):
        ChatJudge(f"https://me:{KEY}@example.org/v1", cache=tmp_path / "c.sqlite")
    azure = ChatJudge(
        "https://res.openai.azure.com/openai/deployments/gpt/chat/completions?api-version=2024-10-21",
        key=KEY,
        cache=tmp_path / "c.sqlite",
    )
    assert azure.header == "api-key" and "api-version" not in azure.describe()["endpoint"]


def test_parse_answer_checks_every_verdict() -> None:
    ok = '{"results": [{"hypothesis": 2, "entailed": false, "evidence": []}, {"hypothesis": 1, "entailed": true, "evidence": [2]}]}'
    assert parse_answer(ok, 2, 2) == ([True, False], [[1], []])
    for bad, message in [
        ('{"results": [{"hypothesis": 3, "entailed": true}]}', "hypothesis 3 of 1"),
        ('{"results": [{"hypothesis": 1, "entailed": "yes"}]}', "non-boolean"),
        ('{"results": [{"hypothesis": 1, "entailed": true, "evidence": [5]}]}', "outside 1..2"),
        (
            '{"results": [{"hypothesis": 1, "entailed": true}, {"hypothesis": 1, "entailed": true}]}',
            "twice",
        ),
        ('{"answer": 1}', "JSON as asked"),
    ]:
        with pytest.raises(JudgeError, match=re.escape(message)):
            parse_answer(bad, 1, 2)


def test_cli_with_the_chat_judge(
    chat_server: tuple[str, ScriptedChat],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from cxr_widgets.cli import main

    url, script = chat_server
    monkeypatch.setenv("MY_JUDGE_KEY", KEY)
    generated, refs = reports_and_refs()
    run = tmp_path / "run.jsonl"
    run.write_text("".join(json.dumps({"report": r.to_dict()}) + "\n" for r in generated))
    (tmp_path / "refs.json").write_text(json.dumps(refs))
    argv = [
        "evaluate", str(run), str(tmp_path / "refs.json"), "--judge", "chat",
        "--chat-url", url, "--chat-key-env", "MY_JUDGE_KEY", "--out", str(tmp_path / "out"),
        "--bootstrap", "20",
    ]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "3 studies evaluated (chat judge)" in out and KEY not in out
    assert len(script.requests) == 6
    assert (tmp_path / "out" / "judge-cache.sqlite").is_file()
    assert main(argv) == 0 and len(script.requests) == 6  # the second run is cached
    summary = (tmp_path / "out" / "summary.json").read_text()
    assert '"key_source": "$MY_JUDGE_KEY"' in summary and KEY not in summary
