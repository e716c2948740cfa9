"""backends.backend_from_choice: one way from a user's choice to a backend (CLI and widget)."""

from __future__ import annotations

import pytest

from cxr_widgets.backends import backend_from_choice, infer_choice
from cxr_widgets.client import ReportGenClient
from cxr_widgets.demo import DemoBackend
from cxr_widgets.errors import ConfigError

URI = "http://127.0.0.1:5001/score"


def test_choices_are_inferred_from_what_was_given() -> None:
    assert infer_choice(None) == "demo"
    assert infer_choice(None, scoring_uri=URI) == "uri"
    assert infer_choice(None, endpoint_name="ep") == "workspace"
    assert infer_choice("uri", scoring_uri=URI) == "uri"


@pytest.mark.parametrize(
    ("choice", "given", "message"),
    [
        ("demo", {"scoring_uri": URI}, "demo backend answers offline"),
        (None, {"scoring_uri": URI, "endpoint_name": "ep"}, "not both"),
        ("uri", {}, "Scoring URI is empty"),
        ("workspace", {}, "Endpoint name is empty"),
        ("azure", {}, "unknown backend choice 'azure'"),
    ],
)
def test_contradictions_are_config_errors(choice: str | None, given: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        infer_choice(choice, **given)


def test_demo_and_uri_backends_carry_the_options(monkeypatch: pytest.MonkeyPatch) -> None:
    demo = backend_from_choice(image_options={"shortest_side": 600}, demo_latency=0.5)
    assert isinstance(demo, DemoBackend) and demo.latency == 0.5
    assert demo.image_options == {"shortest_side": 600}
    monkeypatch.setenv("CXR_TEST_KEY", "k" * 32)
    client = backend_from_choice(
        "uri", scoring_uri=f"  {URI} ", deployment=" ", key_env="CXR_TEST_KEY"
    )
    assert isinstance(client, ReportGenClient)
    assert client.config.scoring_uri == URI and client.config.deployment is None
    assert client.config.key_source == "$CXR_TEST_KEY"
    typed = backend_from_choice("uri", scoring_uri=URI, key="t" * 32, key_env=None)
    assert typed.config.key_source == "argument" and "t" * 32 not in repr(typed.config)
