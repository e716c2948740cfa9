"""A backend from what the user chose: the demo, a scoring URI, or a workspace endpoint.

One function for the command line (``--demo``, ``--scoring-uri``,
``--endpoint-name``) and the widget's endpoint form, so both accept the same
choices, refuse the same contradictions with the same words, and build the
same backend. Nothing here calls the network except a workspace look-up.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from .backend import ReportGenerator
from .config import DEFAULT_KEY_ENV
from .errors import ConfigError

__all__ = ["BACKEND_CHOICES", "BackendChoice", "backend_from_choice", "infer_choice"]

BackendChoice = Literal["demo", "uri", "workspace"]
#: What a user can choose, in the order the widget offers them.
BACKEND_CHOICES: tuple[BackendChoice, ...] = ("demo", "workspace", "uri")


def infer_choice(
    choice: str | None, *, scoring_uri: str | None = None, endpoint_name: str | None = None
) -> BackendChoice:
    """The choice, checked against what else was given; inferred when ``choice`` is None.

    Without a choice: an endpoint name means a workspace, a scoring URI a
    direct endpoint, neither the demo. Contradictions are a ConfigError.
    """
    given = [what for what, value in (("uri", scoring_uri), ("workspace", endpoint_name)) if value]
    if choice is not None and choice not in BACKEND_CHOICES:
        raise ConfigError(
            f"unknown backend choice {choice!r}; choose one of {', '.join(BACKEND_CHOICES)}"
        )
    if len(given) > 1:
        raise ConfigError(
            "give either a scoring URI or a workspace endpoint name, not both "
            "(--scoring-uri or --endpoint-name)"
        )
    if choice == "demo" and given:
        raise ConfigError(
            "the demo backend answers offline with canned findings: give no scoring URI "
            "or endpoint name with it (leave out --demo to call the endpoint)"
        )
    if choice is None:
        return given[0] if given else "demo"  # type: ignore[return-value]
    if choice == "uri" and not scoring_uri:
        raise ConfigError(
            "Scoring URI is empty: give the endpoint's scoring URI, e.g. "
            "https://<endpoint>.<region>.inference.ml.azure.com/score"
        )
    if choice == "workspace" and not endpoint_name:
        raise ConfigError("Endpoint name is empty: give the online endpoint's name.")
    return choice  # type: ignore[return-value]


def backend_from_choice(
    choice: str | None = None,
    *,
    scoring_uri: str | None = None,
    deployment: str | None = None,
    key: Any = None,
    key_env: str | None = DEFAULT_KEY_ENV,
    endpoint_name: str | None = None,
    workspace_config: str | os.PathLike[str] | None = None,
    credential: Any = None,
    image_options: dict[str, Any] | None = None,
    demo_latency: float = 0.0,
) -> ReportGenerator:
    """The backend for the user's choice (see :func:`infer_choice`).

    ``"demo"``: :class:`~cxr_widgets.demo.DemoBackend`; ``"uri"``: a
    :class:`~cxr_widgets.client.ReportGenClient` on ``scoring_uri`` with ``key``
    or the key in ``key_env``; ``"workspace"``: the endpoint looked up by name in
    the Azure ML workspace (``workspace_config``: its config.json), signed in
    with ``credential``. Blank strings count as not given.
    """
    scoring_uri = _text(scoring_uri)
    endpoint_name = _text(endpoint_name)
    deployment = _text(deployment)
    key_env = _text(key_env)
    chosen = infer_choice(choice, scoring_uri=scoring_uri, endpoint_name=endpoint_name)
    options = dict(image_options or {})
    if chosen == "demo":
        from .demo import DemoBackend

        return DemoBackend(image_options=options, latency=demo_latency)

    from .client import EndpointConfig, ReportGenClient

    if chosen == "workspace":
        assert endpoint_name is not None
        config = EndpointConfig.from_workspace(
            endpoint_name,
            deployment=deployment,
            credential=credential,
            config_path=None if workspace_config is None else os.fspath(workspace_config),
        )
    else:
        assert scoring_uri is not None
        config = EndpointConfig(
            scoring_uri, deployment, key=key, credential=credential, key_env=key_env
        )
    return ReportGenClient(config, image_options=options)


def _text(value: str | None) -> str | None:
    if value is None:
        return None
    return value.strip() or None
