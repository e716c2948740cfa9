"""Deployment helpers: real azure-ai-ml entities, their YAML, and failures in plain words."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import yaml

from cxr_widgets import deploy
from cxr_widgets.errors import ConfigError, DeploymentError

ENDPOINT = "cxr-reportgen-test"
MODEL_ID = "azureml://registries/azureml/models/CxrReportGen/versions/7"
SUBSCRIPTION = "11111111-2222-3333-4444-555555555555"
QUOTA_DETAIL = (
    "InferencingClient HttpRequest error, error detail: "
    '{"errors":{"VmSize":["Not enough quota available for Standard_NC24ads_A100_v4 in '
    f"SubscriptionId {SUBSCRIPTION}. Current usage/limit: 0/0. Additional needed: 24 "
    'Please see troubleshooting guide, available here: https://aka.ms/oe-tsg#error-outofquota"]},'
    '"title":"One or more validation errors occurred.","status":400}'
)
ARM_QUOTA_BODY = {
    "error": {
        "code": "BadRequest",
        "message": "The request is invalid.",
        "details": [{"code": "InferencingClientCreateDeploymentFailed", "message": QUOTA_DETAIL}],
    }
}


# --- entities ------------------------------------------------------------------


def test_model_asset_id_forms() -> None:
    assert deploy.model_asset_id(7) == MODEL_ID
    assert deploy.model_asset_id("12") == MODEL_ID.replace("/7", "/12")
    assert (
        deploy.model_asset_id() == "azureml://registries/azureml/models/CxrReportGen/labels/latest"
    )
    with pytest.raises(ConfigError):
        deploy.model_asset_id("7/../8")


@pytest.mark.parametrize(
    ("auth_mode", "rest_mode"),
    [("key", "Key"), ("aml_token", "AMLToken"), ("aad_token", "AADToken")],
)
def test_endpoint_entity(auth_mode: str, rest_mode: str) -> None:
    from azure.ai.ml.entities import ManagedOnlineEndpoint

    endpoint = deploy.build_endpoint(ENDPOINT, auth_mode=auth_mode)
    assert isinstance(endpoint, ManagedOnlineEndpoint)
    assert endpoint.name == ENDPOINT
    assert endpoint.auth_mode == auth_mode
    rest = endpoint._to_rest_online_endpoint(location="eastus")
    assert rest.properties.auth_mode.value == rest_mode  # what Azure receives


def test_endpoint_rejects_bad_input() -> None:
    with pytest.raises(ConfigError, match="auth_mode"):
        deploy.build_endpoint(ENDPOINT, auth_mode="password")
    with pytest.raises(ConfigError, match="letters, digits and hyphens"):
        deploy.build_endpoint("my endpoint!")
    with pytest.raises(ConfigError):
        deploy.build_endpoint("ends-with-")


def test_deployment_entity_fields() -> None:
    from azure.ai.ml.entities import ManagedOnlineDeployment

    deployment = deploy.build_deployment(ENDPOINT, MODEL_ID)
    assert isinstance(deployment, ManagedOnlineDeployment)
    assert deployment.name == "default"
    assert deployment.endpoint_name == ENDPOINT
    assert deployment.model == MODEL_ID
    assert deployment.instance_type == "Standard_NC24ads_A100_v4"
    assert deployment.instance_count == 1
    assert deployment.request_settings.request_timeout_ms == 90_000
    assert deployment.request_settings.max_concurrent_requests_per_instance == 1
    for probe in (deployment.liveness_probe, deployment.readiness_probe):
        assert 600 <= probe.initial_delay <= 1200  # 10-20 minutes for the model to load
        assert probe.failure_threshold >= 3
    # The wire body azure-ai-ml would PUT to Azure: ISO 8601 durations.
    rest = deployment._to_rest_object(location="eastus")
    wire = rest["properties"]
    assert wire["requestSettings"]["requestTimeout"] == "PT1M30S"
    assert wire["livenessProbe"]["initialDelay"] == "PT20M"
    assert wire["readinessProbe"]["initialDelay"] == "PT20M"
    assert wire["instanceType"] == "Standard_NC24ads_A100_v4"
    assert rest["sku"]["capacity"] == 1


def test_deployment_options_and_model_entity() -> None:
    from azure.ai.ml.entities import Model

    deployment = deploy.build_deployment(
        ENDPOINT,
        Model(name="CxrReportGen", version="9"),
        name="blue",
        instance_type="Standard_NC40ads_H100_v5",
        instance_count=3,
        max_concurrent_requests_per_instance=2,
        probe_initial_delay=900,
    )
    assert deployment.model == MODEL_ID.replace("/7", "/9")
    assert deployment.name == "blue"
    assert deployment.instance_count == 3
    assert deployment.instance_type == "Standard_NC40ads_H100_v5"
    assert deployment.request_settings.max_concurrent_requests_per_instance == 2
    assert deployment.readiness_probe.initial_delay == 900


def test_deployment_rejects_bad_input() -> None:
    with pytest.raises(ConfigError, match="asset id"):
        deploy.build_deployment(ENDPOINT, "CxrReportGen")
    with pytest.raises(ConfigError, match="request_timeout_ms"):
        deploy.build_deployment(ENDPOINT, MODEL_ID, request_timeout_ms=300_000)
    with pytest.raises(ConfigError, match="instance_count"):
        deploy.build_deployment(ENDPOINT, MODEL_ID, instance_count=0)


# --- dry run -------------------------------------------------------------------


def test_dry_run_yaml_parses_and_loads_back() -> None:
    from azure.ai.ml import load_online_deployment, load_online_endpoint

    text = deploy.dry_run(
        deploy.build_endpoint(ENDPOINT, auth_mode="aad_token"),
        deploy.build_deployment(ENDPOINT, MODEL_ID, instance_count=2),
    )
    assert text.startswith("# Dry run: nothing was sent to Azure.")
    endpoint, deployment = yaml.safe_load_all(text)
    assert endpoint["$schema"].endswith("managedOnlineEndpoint.schema.json")
    assert endpoint["name"] == ENDPOINT
    assert endpoint["auth_mode"] == "aad_token"
    assert deployment["$schema"].endswith("managedOnlineDeployment.schema.json")
    assert deployment["endpoint_name"] == ENDPOINT
    assert deployment["model"] == MODEL_ID
    assert deployment["instance_type"] == "Standard_NC24ads_A100_v4"
    assert deployment["instance_count"] == 2
    assert deployment["request_settings"]["request_timeout_ms"] == 90_000
    assert deployment["liveness_probe"]["initial_delay"] == 1200
    assert deployment["readiness_probe"]["initial_delay"] == 1200
    # azure-ai-ml itself accepts the documents (as `az ml ... create -f` would).
    loaded_endpoint = load_online_endpoint(source=io.StringIO(yaml.safe_dump(endpoint)))
    loaded = load_online_deployment(source=io.StringIO(yaml.safe_dump(deployment)))
    assert loaded_endpoint.auth_mode == "aad_token"
    assert loaded.model == MODEL_ID
    assert loaded.request_settings.request_timeout_ms == 90_000
    assert loaded.liveness_probe.initial_delay == 1200


# --- quota and other failures --------------------------------------------------


@pytest.fixture
def arm_error_server() -> Iterator[str]:
    """A local server answering every request as Azure Resource Manager does on a quota failure."""

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = json.dumps(ARM_QUOTA_BODY).encode()
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.send_header("x-ms-request-id", "abc-123")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _real_quota_error(base_url: str) -> Exception:
    """An HttpResponseError built the way azure-ai-ml's generated clients build it."""
    from azure.core import PipelineClient
    from azure.core.exceptions import HttpResponseError
    from azure.core.rest import HttpRequest
    from azure.mgmt.core.exceptions import ARMErrorFormat

    with PipelineClient(base_url) as client:
        request = HttpRequest("PUT", f"{base_url}/onlineEndpoints/x/deployments/default", json={})
        response = client.send_request(request)
        assert response.status_code == 400
        return HttpResponseError(response=response, error_format=ARMErrorFormat)


def test_quota_error_in_plain_words(arm_error_server: str) -> None:
    error = deploy.deployment_error(
        _real_quota_error(arm_error_server),
        "creating deployment 'default'",
        instance_type="Standard_NC24ads_A100_v4",
    )
    message = str(error)
    assert isinstance(error, DeploymentError)
    assert message.startswith("Not enough quota to deploy CxrReportGen on Standard_NC24ads_A100_v4")
    assert "0/0 cores" in message and "needs 24 more" in message
    assert "'Standard NCADSA100v4 Family' (vCPUs) to at least 24 " in message
    assert "shared quota" in message
    assert "instance_type" in message  # the third way out: another instance type
    assert SUBSCRIPTION not in message


def test_quota_error_without_details_uses_instance_count() -> None:
    from azure.core.exceptions import HttpResponseError

    error = deploy.deployment_error(
        HttpResponseError(message="Deployment failed: insufficient quota for this VM size"),
        "creating deployment",
        instance_type="Standard_NC40ads_H100_v5",
        instance_count=2,
    )
    assert "Not enough quota" in str(error)
    assert "Azure said: Deployment failed: insufficient quota for this VM size" in str(error)
    assert "'Standard NCadsH100v5 Family' (vCPUs) to at least 80 " in str(error)


def test_other_errors_say_what_to_do() -> None:
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

    error = deploy.deployment_error(
        HttpResponseError(message="(ResourceNotReady) User container has crashed or terminated"),
        "creating deployment 'default'",
    )
    assert str(error).startswith("creating deployment 'default' failed: (ResourceNotReady)")
    assert "get_logs" in str(error)
    missing = deploy.deployment_error(ResourceNotFoundError("workspace not found"), "listing")
    assert "config.json" in str(missing)
    assert deploy.quota_error(ValueError("something else")) is None


# --- deploy, list, teardown against a stand-in for MLClient ---------------------
# Azure cannot be reached from the tests; these stand-ins record the calls the
# helpers make and return what azure-ai-ml's pollers return.


class _Poller:
    def __init__(self, result: Any = None, error: Exception | None = None, polls: int = 1) -> None:
        self._result, self._error, self._polls = result, error, polls

    def done(self) -> bool:
        return self._polls <= 0

    def wait(self, timeout: float | None = None) -> None:
        self._polls -= 1

    def status(self) -> str:
        return "InProgress" if self._polls > 0 else "Succeeded"

    def result(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._result


class _Endpoints:
    def __init__(self, store: dict[str, Any]) -> None:
        self.store, self.calls = store, []

    def begin_create_or_update(self, endpoint: Any) -> _Poller:
        self.calls.append(("create", endpoint.name, dict(endpoint.traffic or {})))
        endpoint._scoring_uri = f"https://{endpoint.name}.eastus.inference.ml.azure.com/score"
        endpoint._id = deploy.endpoint_resource_id(SUBSCRIPTION, "rg", "ws", endpoint.name)
        endpoint._provisioning_state = "Succeeded"
        self.store[endpoint.name] = endpoint
        return _Poller(endpoint, polls=2)

    def get(self, name: str) -> Any:
        return self.store[name]

    def list(self) -> list[Any]:
        return list(self.store.values())

    def begin_delete(self, name: str) -> _Poller:
        self.calls.append(("delete", name))
        self.store.pop(name, None)
        return _Poller()


class _Deployments:
    def __init__(self, error: Exception | None = None) -> None:
        self.error, self.calls, self.created = error, [], []

    def begin_create_or_update(self, deployment: Any) -> _Poller:
        self.calls.append(deployment.name)
        if self.error is None:
            deployment._provisioning_state = "Succeeded"
            self.created.append(deployment)
        return _Poller(deployment, error=self.error, polls=3)

    def list(self, endpoint_name: str) -> list[Any]:
        return [d for d in self.created if d.endpoint_name == endpoint_name]


class _MLClient:
    def __init__(self, deployment_error: Exception | None = None) -> None:
        self.online_endpoints = _Endpoints({})
        self.online_deployments = _Deployments(deployment_error)


def test_deploy_creates_then_routes_traffic() -> None:
    client = _MLClient()
    lines: list[str] = []
    endpoint = deploy.build_endpoint(ENDPOINT)
    result = deploy.deploy(
        client,
        endpoint,
        deploy.build_deployment(ENDPOINT, MODEL_ID),
        progress=lines.append,
        poll_interval=0.01,
    )
    assert client.online_deployments.calls == ["default"]
    creates = client.online_endpoints.calls
    assert creates[0] == ("create", ENDPOINT, {})
    assert creates[-1] == ("create", ENDPOINT, {"default": 100})  # traffic routed last
    assert result.traffic == {"default": 100}
    assert any("InProgress" in line for line in lines)
    assert any("billed" in line for line in lines)  # the cost warning is shown
    assert lines[-1].endswith(f"https://{ENDPOINT}.eastus.inference.ml.azure.com/score")


def test_list_deployed_and_grant_after_deploy(capsys: pytest.CaptureFixture[str]) -> None:
    client = _MLClient()
    deploy.deploy(
        client,
        deploy.build_endpoint(ENDPOINT, auth_mode="aad_token"),
        deploy.build_deployment(ENDPOINT, MODEL_ID, instance_count=2),
        progress=False,
        poll_interval=0.01,
    )
    (row,) = deploy.list_deployed(client)
    assert row["endpoint"] == ENDPOINT
    assert row["auth_mode"] == "aad_token"
    assert row["traffic"] == {"default": 100}
    assert row["deployments"] == [
        {
            "name": "default",
            "model": MODEL_ID,
            "instance_type": "Standard_NC24ads_A100_v4",
            "instance_count": 2,
            "state": "Succeeded",
        }
    ]
    command = deploy.grant_score_access(client, ENDPOINT, "someone@example.org")
    assert command in capsys.readouterr().out
    assert command.endswith(
        f'--scope "{deploy.endpoint_resource_id(SUBSCRIPTION, "rg", "ws", ENDPOINT)}"'
    )


def test_deploy_turns_quota_failure_into_deployment_error(arm_error_server: str) -> None:
    client = _MLClient(deployment_error=_real_quota_error(arm_error_server))
    with pytest.raises(DeploymentError, match="Not enough quota") as caught:
        deploy.deploy(
            client,
            deploy.build_endpoint(ENDPOINT),
            deploy.build_deployment(ENDPOINT, MODEL_ID),
            progress=False,
            poll_interval=0.01,
        )
    assert caught.value.__cause__ is None  # no SDK traceback chained under it
    assert not any(call[2] for call in client.online_endpoints.calls)  # no traffic routed


def test_deploy_checks_the_pair() -> None:
    with pytest.raises(ConfigError, match="belongs to endpoint"):
        deploy.deploy(
            object(),
            deploy.build_endpoint(ENDPOINT),
            deploy.build_deployment("another-endpoint", MODEL_ID),
            progress=False,
        )


def test_teardown_refuses_without_confirmation() -> None:
    # object() has no online_endpoints: reaching Azure would raise AttributeError.
    with pytest.raises(DeploymentError, match="not confirmed"):
        deploy.teardown(object(), ENDPOINT, ask=lambda prompt: "yes", progress=False)

    def no_stdin(prompt: str) -> str:
        raise EOFError

    with pytest.raises(DeploymentError, match="confirm=False"):
        deploy.teardown(object(), ENDPOINT, ask=no_stdin, progress=False)


def test_teardown_deletes_when_confirmed() -> None:
    client = _MLClient()
    deploy.teardown(client, ENDPOINT, ask=lambda prompt: ENDPOINT, progress=False)
    deploy.teardown(client, "other-endpoint", confirm=False, progress=False)
    assert client.online_endpoints.calls == [("delete", ENDPOINT), ("delete", "other-endpoint")]


# --- permissions -----------------------------------------------------------------


def test_score_access_command() -> None:
    scope = deploy.endpoint_resource_id(SUBSCRIPTION, "rg", "ws", ENDPOINT)
    assert scope == (
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg/providers/"
        f"Microsoft.MachineLearningServices/workspaces/ws/onlineEndpoints/{ENDPOINT}"
    )
    command = deploy.score_access_command("someone@example.org", scope)
    assert command == (
        'az role assignment create --assignee "someone@example.org" '
        f'--role "AzureML Data Scientist" --scope "{scope}"'
    )
    role = deploy.scoring_role_definition(SUBSCRIPTION)
    assert role["Actions"] == [deploy.SCORE_ACTION, deploy.TOKEN_ACTION]
    assert role["AssignableScopes"] == [f"/subscriptions/{SUBSCRIPTION}"]
    with pytest.raises(ConfigError):
        deploy.score_access_command("someone", "ws")


def test_import_does_not_load_azure_ai_ml() -> None:
    code = "import sys, cxr_widgets.deploy; print('azure.ai.ml' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_find_workspace_config(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    nested = tmp_path / "project" / "notebooks"
    nested.mkdir(parents=True)
    assert deploy.find_workspace_config(nested) is None
    (tmp_path / "project" / "config.json").write_text('{"name": "not a workspace"}')
    assert deploy.find_workspace_config(nested) is None
    workspace = {"subscription_id": SUBSCRIPTION, "resource_group": "rg", "workspace_name": "ws"}
    (tmp_path / "project" / ".azureml").mkdir()
    (tmp_path / "project" / ".azureml" / "config.json").write_text(json.dumps(workspace))
    assert deploy.find_workspace_config(nested) == tmp_path / "project" / ".azureml" / "config.json"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="download it"):
        deploy.workspace_client()


def test_find_model_without_sign_in_says_so() -> None:
    from azure.core.exceptions import ClientAuthenticationError

    class NotSignedIn:
        def get_token(self, *scopes: str, **kwargs: Any) -> Any:
            raise ClientAuthenticationError("DefaultAzureCredential failed to retrieve a token")

    with pytest.raises(DeploymentError) as caught:
        deploy.find_model(credential=NotSignedIn())
    message = str(caught.value)
    assert message.startswith("looking up CxrReportGen (version latest) in the 'azureml' registry")
    assert "az login" in message
    assert caught.value.__cause__ is None
