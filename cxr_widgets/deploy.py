"""Deploy CXRReportGen to an Azure ML managed online endpoint, and tear it down.

Build the entities with :func:`build_endpoint` and :func:`build_deployment`,
look at them with :func:`dry_run` (YAML, no Azure call), create them with
:func:`deploy`, check with :func:`list_deployed`, and delete with
:func:`teardown`. azure-ai-ml is imported inside the functions, so importing
this module is cheap.

A deployed GPU endpoint bills by the hour until it is deleted, whether or not
anyone sends it a request.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from typing import Any

# Re-exported: notebooks and scripts reach these as deploy.* (they live in their own modules).
from .access import (  # noqa: F401
    LIST_KEYS_ACTION,
    SCORE_ACTION,
    SCORING_ROLE,
    TOKEN_ACTION,
    endpoint_resource_id,
    grant_score_access,
    score_access_command,
    scoring_role_definition,
)
from .errors import ConfigError, DeploymentError
from .extras import needs
from .workspace import WORKSPACE_KEYS, find_workspace_config, workspace_client  # noqa: F401

MODEL_NAME = "CxrReportGen"
MODEL_REGISTRY = "azureml"
DEFAULT_INSTANCE_TYPE = "Standard_NC24ads_A100_v4"
#: What CXRReportGen deployments use (the platform's maximum is 180 000 ms).
DEFAULT_REQUEST_TIMEOUT_MS = 90_000
#: Seconds before the first liveness/readiness probe: the model takes many minutes to load.
DEFAULT_PROBE_INITIAL_DELAY = 1200
AUTH_MODES: tuple[str, ...] = ("key", "aml_token", "aad_token")

ENDPOINT_SCHEMA = "https://azuremlschemas.azureedge.net/latest/managedOnlineEndpoint.schema.json"
DEPLOYMENT_SCHEMA = (
    "https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json"
)


#: Quota families of the GPU instance types CXRReportGen runs on (vCPUs per instance).
GPU_FAMILIES: dict[str, tuple[str, int]] = {
    "standard_nc24ads_a100_v4": ("Standard NCADSA100v4 Family", 24),
    "standard_nc48ads_a100_v4": ("Standard NCADSA100v4 Family", 48),
    "standard_nc96ads_a100_v4": ("Standard NCADSA100v4 Family", 96),
    "standard_nc40ads_h100_v5": ("Standard NCadsH100v5 Family", 40),
    "standard_nc80adis_h100_v5": ("Standard NCadsH100v5 Family", 80),
}

COST_WARNING = (
    "A managed online endpoint with a GPU deployment is billed for every hour it exists, "
    "busy or idle. Delete it with teardown() when you are done."
)

_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,30}[A-Za-z0-9]$")
_QUOTA_PATTERN = re.compile(
    r"quota available for (?P<sku>\S+) in SubscriptionId \S+?\.?\s+"
    r"Current usage/limit: (?P<used>\d+)/(?P<limit>\d+)\.?\s+Additional needed: (?P<needed>\d+)",
    re.IGNORECASE,
)

Progress = Callable[[str], None]


# --- the model ---------------------------------------------------------------


def model_asset_id(version: str | int | None = None) -> str:
    """The registry asset id of CXRReportGen: a pinned version, or the ``latest`` label."""
    base = f"azureml://registries/{MODEL_REGISTRY}/models/{MODEL_NAME}"
    if version is None:
        return f"{base}/labels/latest"
    text = str(version).strip()
    if not text or "/" in text:
        raise ConfigError(f"model version must be a version number like 7, got {version!r}")
    return f"{base}/versions/{text}"


@needs("deploy")
def find_model(
    client: Any = None, version: str | int | None = None, *, credential: Any = None
) -> Any:
    """The CxrReportGen model entity from the ``azureml`` registry (latest, or ``version``).

    ``client`` is an ``MLClient`` for the ``azureml`` registry, or a workspace
    ``MLClient`` whose credential is reused, or None (``DefaultAzureCredential``).
    The entity's ``.id`` is ``azureml://registries/azureml/models/CxrReportGen/versions/<n>``.
    """
    try:
        registry = _registry_client(client, credential)
        if version is None:
            return registry.models.get(MODEL_NAME, label="latest")
        return registry.models.get(MODEL_NAME, version=str(version))
    except Exception as exc:
        raise _sdk_error(
            exc,
            f"looking up {MODEL_NAME} (version {version or 'latest'}) in the "
            f"'{MODEL_REGISTRY}' registry",
        ) from None


def _registry_client(client: Any, credential: Any) -> Any:
    scope = getattr(client, "_operation_scope", None)
    if client is not None and getattr(scope, "registry_name", None) == MODEL_REGISTRY:
        return client
    from azure.ai.ml import MLClient

    if credential is None and client is not None:
        credential = getattr(client, "_credential", None)
    if credential is None:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    return MLClient(credential, registry_name=MODEL_REGISTRY)


def _model_reference(model: Any) -> str:
    if isinstance(model, str):
        text = model.strip()
        if not text.startswith(("azureml:", "/subscriptions/")):
            raise ConfigError(
                f"model {model!r} is not an asset id; use find_model(...).id or "
                f"model_asset_id(version), e.g. {model_asset_id(7)!r}"
            )
        return text
    ident = getattr(model, "id", None)
    if isinstance(ident, str) and ident:
        return ident
    name, version = getattr(model, "name", None), getattr(model, "version", None)
    if name == MODEL_NAME and version:
        return model_asset_id(version)
    raise ConfigError(
        "model must be an asset id (str) or the entity find_model() returns, "
        f"got {type(model).__name__}"
    )


# --- the entities ---------------------------------------------------------------


def _check_name(kind: str, name: Any) -> str:
    if not isinstance(name, str) or not _NAME_PATTERN.match(name):
        raise ConfigError(
            f"{kind} name {name!r} is not valid: use 3 to 32 letters, digits and hyphens, "
            "starting with a letter and not ending with a hyphen"
            + (" (endpoint names must be unique in the Azure region)" if kind == "endpoint" else "")
        )
    return name


@needs("deploy")
def build_endpoint(
    name: str,
    auth_mode: str = "key",
    *,
    description: str = "CXRReportGen: grounded chest X-ray findings (research use only)",
    tags: dict[str, str] | None = None,
) -> Any:
    """A ``ManagedOnlineEndpoint`` for CXRReportGen.

    ``auth_mode``: ``key`` (static keys), ``aml_token`` (short-lived Azure ML
    tokens) or ``aad_token`` (Microsoft Entra ID; callers need a role with
    the score action).
    """
    from azure.ai.ml.entities import ManagedOnlineEndpoint

    _check_name("endpoint", name)
    if auth_mode not in AUTH_MODES:
        raise ConfigError(f"auth_mode must be one of {AUTH_MODES}, got {auth_mode!r}")
    return ManagedOnlineEndpoint(
        name=name,
        auth_mode=auth_mode,
        description=description,
        tags={"model": MODEL_NAME, **(tags or {})},
    )


@needs("deploy")
def build_deployment(
    endpoint_name: str,
    model_id: Any,
    *,
    name: str = "default",
    instance_type: str = DEFAULT_INSTANCE_TYPE,
    instance_count: int = 1,
    request_timeout_ms: int = DEFAULT_REQUEST_TIMEOUT_MS,
    max_concurrent_requests_per_instance: int = 1,
    max_queue_wait_ms: int | None = None,
    probe_initial_delay: int = DEFAULT_PROBE_INITIAL_DELAY,
    probe_period: int = 10,
    probe_timeout: int = 10,
    probe_failure_threshold: int = 30,
    tags: dict[str, str] | None = None,
) -> Any:
    """A ``ManagedOnlineDeployment`` of CXRReportGen on ``instance_count`` GPU instances.

    The liveness and readiness probes wait ``probe_initial_delay`` seconds
    (20 minutes by default) before the first check, because the model loads
    slowly; a shorter delay makes Azure restart the container mid-load.
    ``instance_count`` can be raised later (or by autoscale) to serve more
    requests at once: the endpoint queues at most 2 x
    ``max_concurrent_requests_per_instance`` x ``instance_count`` requests.
    """
    from azure.ai.ml.entities import ManagedOnlineDeployment, OnlineRequestSettings, ProbeSettings

    _check_name("endpoint", endpoint_name)
    _check_name("deployment", name)
    for label, value, low, high in (
        ("instance_count", instance_count, 1, 100),
        ("request_timeout_ms", request_timeout_ms, 1000, 180_000),
        ("max_concurrent_requests_per_instance", max_concurrent_requests_per_instance, 1, 1000),
        ("probe_initial_delay", probe_initial_delay, 0, 3600),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(f"{label} must be an integer from {low} to {high}, got {value!r}")
    if not isinstance(instance_type, str) or not instance_type.strip():
        raise ConfigError("instance_type must be an Azure VM size such as " + DEFAULT_INSTANCE_TYPE)
    settings: dict[str, int] = {
        "request_timeout_ms": request_timeout_ms,
        "max_concurrent_requests_per_instance": max_concurrent_requests_per_instance,
    }
    if max_queue_wait_ms is not None:
        settings["max_queue_wait_ms"] = max_queue_wait_ms

    def probe() -> Any:
        return ProbeSettings(
            initial_delay=probe_initial_delay,
            period=probe_period,
            timeout=probe_timeout,
            failure_threshold=probe_failure_threshold,
        )

    return ManagedOnlineDeployment(
        name=name,
        endpoint_name=endpoint_name,
        model=_model_reference(model_id),
        instance_type=instance_type.strip(),
        instance_count=instance_count,
        request_settings=OnlineRequestSettings(**settings),
        liveness_probe=probe(),
        readiness_probe=probe(),
        tags={"model": MODEL_NAME, **(tags or {})},
    )


def _plain(value: Any) -> Any:
    """Dicts (OrderedDicts included) and lists as plain Python, for yaml.safe_dump."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


@needs("deploy")
def dry_run(endpoint: Any, deployment: Any) -> str:
    """The endpoint and deployment as YAML (two documents); nothing is sent to Azure.

    The documents are what azure-ai-ml would create (its own ``_to_dict()``),
    with ``$schema`` added, so they also work with
    ``az ml online-endpoint create -f`` and ``az ml online-deployment create -f``.
    """
    import yaml

    documents = []
    for entity, schema in ((endpoint, ENDPOINT_SCHEMA), (deployment, DEPLOYMENT_SCHEMA)):
        data = _plain(entity._to_dict())
        for empty in ("properties", "environment_variables", "traffic", "mirror_traffic"):
            if data.get(empty) in ({}, []):
                data.pop(empty)
        documents.append({"$schema": schema, **data})
    header = (
        "# Dry run: nothing was sent to Azure.\n"
        "# Document 1 is the endpoint, document 2 its deployment. With the az CLI:\n"
        "#   az ml online-endpoint create -f endpoint.yml\n"
        "#   az ml online-deployment create -f deployment.yml --all-traffic\n"
    )
    return header + yaml.safe_dump_all(documents, sort_keys=False, default_flow_style=False)


# --- talking to Azure -----------------------------------------------------------


def _reporter(progress: bool | Progress) -> Progress:
    if callable(progress):
        return progress
    if progress:
        return lambda message: print(message, file=sys.stdout, flush=True)
    return lambda message: None


def _wait(poller: Any, what: str, report: Progress, poll_interval: float, started: float) -> Any:
    """Wait for an LRO poller, reporting its status every ``poll_interval`` seconds."""
    while not poller.done():
        poller.wait(timeout=poll_interval)
        if not poller.done():
            elapsed = int(time.monotonic() - started)
            status = poller.status() if callable(getattr(poller, "status", None)) else "running"
            report(f"  {what}: {status} ({elapsed // 60} min {elapsed % 60:02d} s)")
    return poller.result()


def _messages(exc: BaseException) -> str:
    """The text of an exception and everything it was raised from."""
    parts, seen = [], set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(str(current))
        for attr in ("message", "exc_msg"):
            value = getattr(current, attr, None)
            if isinstance(value, str):
                parts.append(value)
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


def _first_line(text: str, limit: int = 300) -> str:
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def quota_error(
    exc: BaseException, *, instance_type: str | None = None, instance_count: int = 1
) -> DeploymentError | None:
    """A plain-words :class:`DeploymentError` when ``exc`` is a quota failure, else None."""
    text = _messages(exc)
    if "quota" not in text.lower():
        return None
    match = _QUOTA_PATTERN.search(text)
    sku = match.group("sku") if match else (instance_type or "the instance type")
    family, cores = GPU_FAMILIES.get(sku.lower(), (None, None))
    if match:
        detail = (
            f"quota in use/limit: {match.group('used')}/{match.group('limit')} cores; "
            f"this deployment needs {match.group('needed')} more"
        )
        needed = int(match.group("used")) + int(match.group("needed"))
    else:
        detail = f"Azure said: {_first_line(text, 200)}"
        needed = cores * instance_count if cores else None
    family_text = (
        f"the quota of the '{family}' (vCPUs)" if family else f"the vCPU quota of {sku}'s VM family"
    )
    amount = f" to at least {needed}" if needed else ""
    return DeploymentError(
        f"Not enough quota to deploy {MODEL_NAME} on {sku} ({detail}). GPU VM families start "
        "with zero quota in most subscriptions. What to do:\n"
        f"  1. Request more quota: raise {family_text}{amount} in your workspace's region "
        "(Azure ML studio > Quota > Dedicated, or the Azure portal > Quotas > Machine "
        "learning). Approval can take from minutes to days.\n"
        "  2. For a short test: deploy the model from the Azure ML model catalog in the studio "
        "and choose the temporary shared quota, if it is offered for this model and region "
        "(such endpoints are deleted automatically after a limited time, 168 hours at the "
        "time of writing).\n"
        "  3. Or pick an instance type or region you already have quota for: "
        "build_deployment(..., instance_type=...).\n"
        "Then run deploy() again. The endpoint itself may already exist; it costs nothing "
        "without a deployment, and teardown() deletes it."
    )


def deployment_error(
    exc: BaseException, step: str, *, instance_type: str | None = None, instance_count: int = 1
) -> DeploymentError:
    """Any failure of a deployment step as a :class:`DeploymentError` that says what to do."""
    if isinstance(exc, DeploymentError):
        return exc
    quota = quota_error(exc, instance_type=instance_type, instance_count=instance_count)
    if quota is not None:
        return quota
    return _sdk_error(exc, step)


def _sdk_error(exc: BaseException, step: str) -> DeploymentError:
    text = _messages(exc)
    lowered = text.lower()
    if "authorizationfailed" in lowered or "does not have authorization" in lowered:
        advice = (
            "your identity lacks permission: ask for the 'AzureML Data Scientist' role (or "
            "Contributor) on the workspace"
        )
    elif "resourcenotfound" in lowered or "not found" in lowered:
        advice = "check the workspace (config.json), endpoint and deployment names"
    elif "credential" in lowered or "authentication" in lowered or "az login" in lowered:
        advice = "sign in first (az login, or a DefaultAzureCredential that works here)"
    else:
        advice = (
            "see the deployment logs: ml_client.online_deployments.get_logs(name, "
            "endpoint_name, lines=200)"
        )
    return DeploymentError(f"{step} failed: {_first_line(text)}. What to do: {advice}.")


def _step(
    start: Callable[[], Any],
    what: str,
    report: Progress,
    poll_interval: float,
    started: float,
    **sizing: Any,
) -> Any:
    """Start one long-running Azure operation, wait for it, and explain a failure in plain words."""
    try:
        return _wait(start(), what, report, poll_interval, started)
    except Exception as exc:
        raise deployment_error(exc, what, **sizing) from None


def deploy(
    ml_client: Any,
    endpoint: Any,
    deployment: Any,
    *,
    traffic: int = 100,
    progress: bool | Progress = True,
    poll_interval: float = 30.0,
) -> Any:
    """Create (or update) the endpoint, then the deployment, then route ``traffic`` % to it.

    Waits for each step, reporting progress every ``poll_interval`` seconds
    (``progress``: True prints, a callable receives each line, False is
    silent). A deployment takes 20 minutes or more. Failures, a quota
    shortfall above all, raise :class:`DeploymentError` in plain words.
    Returns the endpoint as Azure now has it (``.scoring_uri``, ``.auth_mode``).
    """
    if not 0 <= traffic <= 100:
        raise ConfigError(f"traffic must be a percentage from 0 to 100, got {traffic!r}")
    if deployment.endpoint_name != endpoint.name:
        raise ConfigError(
            f"the deployment belongs to endpoint {deployment.endpoint_name!r}, "
            f"not {endpoint.name!r}"
        )
    report = _reporter(progress)
    started = time.monotonic()
    where = f"endpoint {endpoint.name!r}"
    sizing = {
        "instance_type": deployment.instance_type,
        "instance_count": deployment.instance_count or 1,
    }
    report(f"Creating {where} (auth mode {endpoint.auth_mode}) ...")
    report(f"Cost: {COST_WARNING}")
    _step(
        lambda: ml_client.online_endpoints.begin_create_or_update(endpoint),
        f"creating {where}",
        report,
        poll_interval,
        started,
        **sizing,
    )
    what = (
        f"deployment {deployment.name!r} ({deployment.instance_count} x {deployment.instance_type})"
    )
    report(f"Creating {what}; the model loads slowly, expect 20 minutes or more ...")
    _step(
        lambda: ml_client.online_deployments.begin_create_or_update(deployment),
        f"creating {what}",
        report,
        poll_interval,
        started,
        **sizing,
    )
    report(f"Routing {traffic}% of the traffic to {deployment.name!r} ...")
    try:
        current = ml_client.online_endpoints.get(endpoint.name)
    except Exception as exc:
        raise deployment_error(exc, f"routing traffic on {where}", **sizing) from None
    current.traffic = {**(current.traffic or {}), deployment.name: traffic}
    result = _step(
        lambda: ml_client.online_endpoints.begin_create_or_update(current),
        f"routing traffic on {where}",
        report,
        poll_interval,
        started,
        **sizing,
    )
    elapsed = int(time.monotonic() - started)
    scoring_uri = getattr(result, "scoring_uri", None) or getattr(current, "scoring_uri", "")
    report(f"Done in {elapsed // 60} min {elapsed % 60:02d} s. Scoring URI: {scoring_uri}")
    return result if result is not None else current


def list_deployed(ml_client: Any) -> list[dict[str, Any]]:
    """The workspace's online endpoints with their deployments (no keys)."""
    try:
        endpoints = list(ml_client.online_endpoints.list())
    except Exception as exc:
        raise _sdk_error(exc, "listing the online endpoints") from None
    rows = []
    for endpoint in endpoints:
        try:
            deployments = list(ml_client.online_deployments.list(endpoint.name))
        except Exception as exc:
            raise _sdk_error(exc, f"listing the deployments of {endpoint.name!r}") from None
        rows.append(
            {
                "endpoint": endpoint.name,
                "auth_mode": endpoint.auth_mode,
                "scoring_uri": endpoint.scoring_uri,
                "state": endpoint.provisioning_state,
                "traffic": dict(endpoint.traffic or {}),
                "deployments": [
                    {
                        "name": d.name,
                        "model": d.model
                        if isinstance(d.model, str)
                        else getattr(d.model, "id", None),
                        "instance_type": d.instance_type,
                        "instance_count": d.instance_count,
                        "state": d.provisioning_state,
                    }
                    for d in deployments
                ],
            }
        )
    return rows


def teardown(
    ml_client: Any,
    endpoint_name: str,
    *,
    confirm: bool = True,
    wait: bool = True,
    ask: Callable[[str], str] = input,
    progress: bool | Progress = True,
) -> None:
    """Delete the endpoint and all its deployments (this stops the billing).

    With ``confirm=True`` (the default) you must type the endpoint's name;
    anything else, or no way to ask (a headless kernel), refuses and deletes
    nothing. Pass ``confirm=False`` in scripts.
    """
    _check_name("endpoint", endpoint_name)
    report = _reporter(progress)
    if confirm:
        prompt = f"Delete endpoint {endpoint_name!r} and all its deployments? Type its name: "
        try:
            answer = ask(prompt)
        except (EOFError, OSError, RuntimeError) as exc:
            raise DeploymentError(
                f"teardown of {endpoint_name!r} needs a confirmation and none could be asked "
                f"({type(exc).__name__}); nothing was deleted. Call "
                "teardown(ml_client, name, confirm=False) to delete without asking."
            ) from None
        if (answer or "").strip() != endpoint_name:
            raise DeploymentError(
                f"teardown of {endpoint_name!r} not confirmed (the name typed did not match); "
                f"nothing was deleted. {COST_WARNING}"
            )
    report(f"Deleting endpoint {endpoint_name!r} ...")
    what = f"deleting endpoint {endpoint_name!r}"
    if wait:
        _step(
            lambda: ml_client.online_endpoints.begin_delete(name=endpoint_name),
            what,
            report,
            30.0,
            time.monotonic(),
        )
    else:
        try:
            ml_client.online_endpoints.begin_delete(name=endpoint_name)
        except Exception as exc:
            raise _sdk_error(exc, what) from None
    report(f"Endpoint {endpoint_name!r} deleted." if wait else "Deletion started.")
