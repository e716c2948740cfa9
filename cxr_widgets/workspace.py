"""Azure ML workspace helpers: find config.json, connect, resolve an endpoint once, or
invoke as the docs do.

``azure.ai.ml`` is imported only inside these functions (it takes seconds).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .auth import RefreshingTokenCredential
from .backend import ReportGenerator
from .contract import PreparedRequest, parse_response
from .errors import (
    ConfigError,
    EndpointAuthError,
    EndpointError,
    EndpointNotFoundError,
    ResponseFormatError,
)
from .extras import needs
from .report import Report
from .study import Study

WORKSPACE_KEYS = ("subscription_id", "resource_group", "workspace_name")


def find_workspace_config(start: str | os.PathLike[str] = ".") -> Path | None:
    """The nearest workspace ``config.json`` (or ``.azureml/config.json``) from ``start`` up.

    Only files with ``subscription_id``, ``resource_group`` and
    ``workspace_name`` count (Azure ML studio's "Download config.json").
    None when there is none: notebooks then run offline or as a dry run.
    """
    folder = Path(start).resolve()
    for parent in (folder, *folder.parents):
        for candidate in (parent / "config.json", parent / ".azureml" / "config.json"):
            try:
                data = json.loads(candidate.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and all(data.get(k) for k in WORKSPACE_KEYS):
                return candidate
    return None


@needs("deploy")
def workspace_client(config: str | os.PathLike[str] | None = None, credential: Any = None) -> Any:
    """An ``MLClient`` for the workspace in ``config`` (default: :func:`find_workspace_config`).

    ``credential`` defaults to ``DefaultAzureCredential()`` (``az login``,
    a managed identity, environment variables, ...).
    """
    path = Path(config) if config is not None else find_workspace_config()
    if path is None:
        raise ConfigError(
            "no workspace config.json found here or in a parent folder: download it from "
            "your workspace's page in Azure ML studio (or the Azure portal) and put it next "
            "to the notebook"
        )
    try:
        from azure.ai.ml import MLClient

        if credential is None:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
        return MLClient.from_config(credential=credential, path=str(path))
    except Exception as exc:
        from .deploy import deployment_error

        raise deployment_error(exc, f"connecting to the workspace of {path}") from None


def _ml_client(ml_client: Any, credential: Any, config_path: str | None) -> Any:
    """The given MLClient, or one built from ``config.json`` (as :mod:`cxr_widgets.deploy` does)."""
    if ml_client is not None:
        return ml_client

    path: Any = config_path
    if path is not None and Path(path).is_dir():
        path = find_workspace_config(path)
        if path is None:
            raise ConfigError(
                f"no workspace config.json in {config_path} or its parents: download it from "
                "your workspace's page in Azure ML studio, or pass ml_client=MLClient(...)"
            )
    return workspace_client(path, credential)


def _workspace_label(ml_client: Any) -> str:
    return str(getattr(ml_client, "workspace_name", None) or "workspace")


def _sdk_error(exc: Exception, what: str, endpoint_name: str, workspace: str) -> EndpointError:
    """An EndpointError for an azure-ai-ml / azure-core failure (no secrets, short)."""
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

    status = getattr(exc, "status_code", None)
    if isinstance(exc, HttpResponseError) and exc.response is not None:
        status = exc.response.status_code
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    if status == 404:
        return EndpointNotFoundError(
            f"{what}: no online endpoint named {endpoint_name!r} in workspace {workspace} "
            "(404). Check the name with ml_client.online_endpoints.list().",
            status=404,
        )
    if status in (401, 403) or isinstance(exc, ClientAuthenticationError):
        return EndpointAuthError(
            f"{what}: the workspace refused the request ({status or 'no token'}): sign in again "
            "and check that your identity has a role on the workspace that can read online "
            f"endpoints and their keys. ({first})",
            status=status,
        )
    return EndpointError(f"{what} for endpoint {endpoint_name!r} failed: {first}", status=status)


@needs("deploy")
def resolve_endpoint(
    config_cls: Any,
    endpoint_name: str,
    *,
    ml_client: Any = None,
    deployment: str | None = None,
    credential: Any = None,
    config_path: str | None = None,
    **options: Any,
) -> Any:
    """``EndpointConfig.from_workspace``: scoring URI, auth mode and key, looked up once."""
    if not isinstance(endpoint_name, str) or not endpoint_name.strip():
        raise ConfigError("endpoint_name must be the online endpoint's name")
    ml_client = _ml_client(ml_client, credential, config_path)
    workspace = _workspace_label(ml_client)
    try:
        endpoint = ml_client.online_endpoints.get(endpoint_name)
    except Exception as exc:
        raise _sdk_error(exc, "looking up the endpoint", endpoint_name, workspace) from None
    scoring_uri = getattr(endpoint, "scoring_uri", None)
    if not scoring_uri:
        state = getattr(endpoint, "provisioning_state", None) or "unknown"
        raise ConfigError(
            f"endpoint {endpoint_name!r} has no scoring URI yet (provisioning state: {state}); "
            "wait until it is created."
        )
    auth_mode = str(getattr(endpoint, "auth_mode", "") or "key").lower()
    traffic = dict(getattr(endpoint, "traffic", None) or {})
    if deployment is None and traffic and not any(v for v in traffic.values()):
        raise ConfigError(
            f"endpoint {endpoint_name!r} sends no traffic to any deployment ({traffic}); "
            "set endpoint.traffic or pass deployment= to pin one"
        )
    if deployment is not None and traffic and deployment not in traffic:
        raise ConfigError(
            f"endpoint {endpoint_name!r} has no deployment {deployment!r} "
            f"(deployments: {', '.join(sorted(traffic))})"
        )
    source = f"workspace {workspace}, endpoint {endpoint_name}"
    options.setdefault("key_env", None)
    config = _resolve_auth(
        config_cls,
        ml_client,
        endpoint_name,
        workspace,
        scoring_uri,
        auth_mode,
        deployment,
        credential,
        source,
        options,
    )
    # What the deployment can hold at once: where a batch run starts (see adaptive.py).
    pinned = deployment or (max(traffic, key=lambda k: traffic[k]) if traffic else None)
    config.capacity_hint = deployment_capacity(ml_client, endpoint_name, pinned)
    return config


def deployment_capacity(ml_client: Any, endpoint_name: str, deployment: str | None) -> int | None:
    """``instance_count x max_concurrent_requests_per_instance`` of a deployment, or None
    when the workspace does not tell it (no permission, no such deployment)."""
    if not deployment:
        return None
    try:
        found = ml_client.online_deployments.get(name=deployment, endpoint_name=endpoint_name)
        count = int(getattr(found, "instance_count", None) or 0)
        settings = getattr(found, "request_settings", None)
        per_instance = int(getattr(settings, "max_concurrent_requests_per_instance", None) or 1)
    except Exception:  # only a starting point: the run finds the level anyway
        return None
    return count * per_instance if count > 0 else None


def _resolve_auth(
    config_cls: Any,
    ml_client: Any,
    endpoint_name: str,
    workspace: str,
    scoring_uri: str,
    auth_mode: str,
    deployment: str | None,
    credential: Any,
    source: str,
    options: dict[str, Any],
) -> Any:
    if auth_mode == "key":
        try:
            keys = ml_client.online_endpoints.get_keys(endpoint_name)
        except Exception as exc:
            raise _sdk_error(exc, "getting the endpoint's keys", endpoint_name, workspace) from None
        key = getattr(keys, "primary_key", None) or getattr(keys, "secondary_key", None)
        if not key:
            raise ConfigError(f"endpoint {endpoint_name!r} returned no key")
        config = config_cls(
            scoring_uri, deployment, key=key, auth_mode="key", source=source, **options
        )
        config.key_source = source
        return config
    if auth_mode in ("aml_token", "amltoken"):

        def fetch() -> tuple[str, float, float | None]:
            try:
                token = ml_client.online_endpoints.get_keys(endpoint_name)
            except Exception as exc:
                raise _sdk_error(
                    exc, "getting an Azure ML token", endpoint_name, workspace
                ) from None
            if not getattr(token, "access_token", None):
                raise ConfigError(f"endpoint {endpoint_name!r} returned no access token")
            return (
                token.access_token,
                float(getattr(token, "expiry_time_utc", 0) or 0),
                float(getattr(token, "refresh_after_time_utc", 0) or 0) or None,
            )

        token_credential = RefreshingTokenCredential(
            fetch, first=fetch(), label=f"aml_token for {endpoint_name}"
        )
        return config_cls(
            scoring_uri,
            deployment,
            credential=token_credential,
            auth_mode="aml_token",
            source=source,
            **options,
        )
    if auth_mode in ("aad_token", "aadtoken"):
        entra = credential or getattr(ml_client, "_credential", None)
        if entra is None:
            raise ConfigError(
                f"endpoint {endpoint_name!r} uses Microsoft Entra ID (aad_token): pass credential="
            )
        return config_cls(
            scoring_uri,
            deployment,
            credential=entra,
            auth_mode="aad_token",
            source=source,
            **options,
        )
    raise ConfigError(f"endpoint {endpoint_name!r} has an unknown auth mode {auth_mode!r}")


class MLClientBackend(ReportGenerator):
    """The model documentation's path: ``ml_client.online_endpoints.invoke`` with a request file.

    Slower than :class:`~cxr_widgets.client.ReportGenClient` (azure-ai-ml makes
    control-plane calls on every invoke) but exactly what the documentation does.
    """

    def __init__(
        self,
        ml_client: Any,
        endpoint_name: str,
        *,
        deployment_name: str | None = None,
        image_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(image_options)
        self.ml_client = ml_client
        self.endpoint_name = endpoint_name
        self.deployment_name = deployment_name
        workspace = _workspace_label(ml_client)
        self.label = f"{workspace}/{endpoint_name}" + (
            f" (deployment {deployment_name})" if deployment_name else ""
        )

    def send(self, request: PreparedRequest) -> list[Report]:
        from azure.ai.ml.constants._endpoint import EndpointInvokeFields

        # invoke() writes Authorization and the deployment into this shared class
        # attribute; restore it so the key does not linger in azure-ai-ml's globals.
        saved = dict(EndpointInvokeFields.DEFAULT_HEADER)
        with tempfile.TemporaryDirectory(prefix="cxr-widgets-") as folder:
            path = os.path.join(folder, "request.json")
            with open(path, "w", encoding="utf-8") as handle:
                json.dump(request.payload, handle)
            try:
                text = self.ml_client.online_endpoints.invoke(
                    endpoint_name=self.endpoint_name,
                    deployment_name=self.deployment_name,
                    request_file=path,
                )
            except Exception as exc:
                raise self._error(exc) from None
            finally:
                EndpointInvokeFields.DEFAULT_HEADER.clear()
                EndpointInvokeFields.DEFAULT_HEADER.update(saved)
        try:
            reports = parse_response(text, n_studies=len(request.studies))
        except ResponseFormatError as exc:
            raise ResponseFormatError(f"{self.label}: {exc}") from None
        return self.finish_reports(request, reports)

    def _error(self, exc: Exception) -> EndpointError:
        from .client import EndpointConfig, error_for_status

        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
        if status is not None and response is not None:
            try:
                body = response.text()
            except Exception:
                body = ""
            scoring = EndpointConfig(
                "https://invoke.invalid/score", self.deployment_name, key_env=None
            )
            return error_for_status(status, response.headers, body, scoring, where=self.label)
        error = _sdk_error(exc, "invoking", self.endpoint_name, _workspace_label(self.ml_client))
        if error.status is None:
            # azure-ai-ml raises plain exceptions for some error bodies and drops the status.
            return EndpointError(
                f"{error} (azure-ai-ml's invoke() does not report the HTTP status here; "
                "EndpointConfig.from_workspace(...) with ReportGenClient reports it with advice)"
            )
        return error


@needs("deploy")
def invoke_with_mlclient(
    ml_client: Any,
    endpoint_name: str,
    studies: Study | Iterable[Study],
    *,
    deployment_name: str | None = None,
    **image_options: Any,
) -> list[Report]:
    """Reports through ``ml_client.online_endpoints.invoke`` with a request file, as documented."""
    backend = MLClientBackend(
        ml_client, endpoint_name, deployment_name=deployment_name, image_options=image_options
    )
    return backend.send(backend.prepare(studies))
