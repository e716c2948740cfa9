"""EndpointConfig: validation, secrets, Entra ID and workspace resolution.

Workspace resolution uses a real ``azure.ai.ml.MLClient`` whose azure-core
transport sends the ARM (management.azure.com) calls to a local HTTP server
answering with JSON shaped like the real ARM responses.
"""

from __future__ import annotations

import copy
import json
import logging
import pickle
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from azure.core.credentials import AccessTokenInfo, AzureKeyCredential
from azure.core.pipeline.transport import RequestsTransport

from cxr_widgets.auth import ENTRA_SCOPE, Secret
from cxr_widgets.client import EndpointConfig, ReportGenClient
from cxr_widgets.errors import (
    ConfigError,
    EndpointAuthError,
    EndpointError,
    EndpointNotFoundError,
)

KEY = "k3y-Very-Secret-0123456789abcdef"
AZURE_URI = "https://myep.eastus.inference.ml.azure.com/score"


def dumps_everything(config: EndpointConfig) -> str:
    """Every view of a config a notebook or log could show."""
    return "\n".join(
        [
            repr(config),
            str(config),
            f"{config}",
            config.describe(),
            config.label,
            config.identity,
            json.dumps(config.to_dict()),
            repr(vars(config)),
            str(vars(config)),
        ]
    )


# --- configuration ------------------------------------------------------------------


def test_key_given_directly_is_used_but_never_shown() -> None:
    config = EndpointConfig(AZURE_URI, "blue", key=KEY)
    assert config.auth_mode == "key" and config.has_key
    assert config.key_source == "argument"
    assert KEY not in dumps_everything(config)
    assert config.label == "https://myep.eastus.inference.ml.azure.com (deployment blue)"
    assert config.identity == "https://myep.eastus.inference.ml.azure.com/score#blue"
    assert config._key == Secret(KEY)  # held privately, revealed only to the auth policy


def test_key_from_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXR_ENDPOINT_KEY", f"  {KEY}\n")
    config = EndpointConfig(AZURE_URI)
    assert config.auth_mode == "key"
    assert config.key_source == "$CXR_ENDPOINT_KEY"
    assert config._key.reveal() == KEY
    assert KEY not in dumps_everything(config)
    monkeypatch.setenv("OTHER_KEY", "other")
    assert EndpointConfig(AZURE_URI, key_env="OTHER_KEY")._key.reveal() == "other"


def test_no_key_anywhere_means_no_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CXR_ENDPOINT_KEY", raising=False)
    config = EndpointConfig("http://127.0.0.1:5001/score")
    assert config.auth_mode == "none" and not config.has_key
    assert "no authentication" in config.describe()


def test_key_credential_object_is_a_key() -> None:
    config = EndpointConfig(AZURE_URI, credential=AzureKeyCredential(KEY))
    assert config.auth_mode == "key" and config.credential is None
    assert KEY not in dumps_everything(config)


def test_key_and_credential_together_are_refused() -> None:
    with pytest.raises(ConfigError, match="either key= or credential="):
        EndpointConfig(AZURE_URI, key=KEY, credential=StaticTokenCredential("t"))


def test_a_credential_without_get_token_is_refused() -> None:
    with pytest.raises(ConfigError, match="get_token"):
        EndpointConfig(AZURE_URI, credential="not-a-credential")


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("", "scoring URI"),
        ("myep.eastus.inference.ml.azure.com/score", "not an http"),
        ("ftp://myep.example.org/score", "not an http"),
        ("https:///score", "not an http"),
        ("https://user:pw@myep.example.org/score", "must not carry a user"),
        ("https://myep.example.org/score?key=abc", "query string"),
        ("https://myep.example.org:99999/score", "invalid port"),
    ],
)
def test_bad_scoring_uris_get_clear_errors(uri: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        EndpointConfig(uri, key_env=None)


def test_plain_http_with_a_key_is_refused_except_on_loopback() -> None:
    with pytest.raises(ConfigError, match="clear text"):
        EndpointConfig("http://myep.example.org/score", key=KEY)
    with pytest.raises(ConfigError, match="clear text"):
        EndpointConfig("http://10.1.2.3/score", credential=StaticTokenCredential("t"))
    for host in ("127.0.0.1", "localhost", "[::1]", "127.9.9.9"):
        assert EndpointConfig(f"http://{host}:8080/score", key=KEY).has_key


def test_plain_http_without_a_key_warns_outside_loopback() -> None:
    with pytest.warns(UserWarning, match="unencrypted"):
        EndpointConfig("http://gpu-box.lab/score", key_env=None)


def test_scoring_path_defaults_to_score() -> None:
    config = EndpointConfig("https://myep.eastus.inference.ml.azure.com", key_env=None)
    assert config.scoring_uri == AZURE_URI
    assert EndpointConfig("http://127.0.0.1:1/other", key_env=None).label.endswith("/other")


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("read_timeout", 0),
        ("connect_timeout", -1),
        ("deadline", "soon"),
        ("max_retries", -1),
        ("max_request_bytes", 0),
    ],
)
def test_bad_limits_are_refused(option: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=option):
        EndpointConfig(AZURE_URI, key=KEY, **{option: value})


def test_pickle_never_carries_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    config = EndpointConfig(AZURE_URI, key=KEY)
    data = pickle.dumps(config)
    assert KEY.encode() not in data
    restored = pickle.loads(data)
    assert not restored.has_key
    with pytest.raises(ConfigError, match="unpickled"):
        ReportGenClient(restored)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(config._key)

    monkeypatch.setenv("CXR_ENDPOINT_KEY", KEY)
    from_env = pickle.loads(pickle.dumps(EndpointConfig(AZURE_URI)))
    assert from_env.has_key and from_env._key.reveal() == KEY  # read again from the environment


def test_copies_keep_the_key_in_process() -> None:
    config = EndpointConfig(AZURE_URI, "blue", key=KEY, read_timeout=30)
    for clone in (copy.copy(config), copy.deepcopy(config)):
        assert clone._key.reveal() == KEY
        assert clone.read_timeout == 30 and clone.deployment == "blue"


def test_client_repr_shows_no_key() -> None:
    client = ReportGenClient(EndpointConfig(AZURE_URI, key=KEY))
    assert KEY not in repr(client) and KEY not in repr(vars(client))
    assert client.label == "https://myep.eastus.inference.ml.azure.com"
    client.close()


# --- Entra ID credentials -----------------------------------------------------------


@dataclass
class StaticTokenCredential:
    """A TokenCredential (azure.core protocol) that issues ``token`` and records scopes."""

    token: str
    lifetime: float = 3600.0
    scopes: list[tuple[str, ...]] = field(default_factory=list)

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        self.scopes.append(scopes)
        return AccessTokenInfo(self.token, int(time.time() + self.lifetime))

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        self.scopes.append(scopes)
        return AccessToken(self.token, int(time.time() + self.lifetime))

    def close(self) -> None:
        return None

    def __enter__(self) -> StaticTokenCredential:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def test_entra_config_describes_the_scope_without_tokens() -> None:
    credential = StaticTokenCredential("entra-token-value")
    config = EndpointConfig(AZURE_URI, credential=credential)
    assert config.auth_mode == "aad_token"
    assert config.scope == ENTRA_SCOPE == "https://ml.azure.com/.default"
    assert "Microsoft Entra ID" in config.describe()
    assert "entra-token-value" not in dumps_everything(config)
    assert credential.scopes == []  # no token is fetched before the first request


# --- workspace resolution through a real MLClient -------------------------------------

ARM = "https://management.azure.com"
SUB = "00000000-0000-0000-0000-000000000000"
EP_PATH = (
    f"/subscriptions/{SUB}/resourceGroups/rg/providers/"
    "Microsoft.MachineLearningServices/workspaces/ws/onlineEndpoints"
)


class FakeArm:
    """Answers the ARM calls azure-ai-ml makes for online endpoints, like ARM does."""

    def __init__(self) -> None:
        self.endpoints: dict[str, dict[str, Any]] = {}
        self.tokens: list[tuple[str, float]] = []
        self.calls: list[tuple[str, str]] = []
        self.arm_auth: set[str] = set()
        handler = self._handler()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def add_endpoint(
        self, name: str, scoring_uri: str, auth_mode: str = "Key", traffic: Any = None
    ) -> None:
        self.endpoints[name] = {
            "id": f"{EP_PATH}/{name}",
            "name": name,
            "type": "Microsoft.MachineLearningServices/workspaces/onlineEndpoints",
            "location": "eastus",
            "kind": "Managed",
            "tags": {},
            "identity": {
                "type": "SystemAssigned",
                "principalId": "11111111-1111-1111-1111-111111111111",
                "tenantId": "22222222-2222-2222-2222-222222222222",
            },
            "properties": {
                "authMode": auth_mode,
                "scoringUri": scoring_uri,
                "swaggerUri": scoring_uri.rsplit("/", 1)[0] + "/swagger.json",
                "provisioningState": "Succeeded",
                "traffic": {"blue": 100} if traffic is None else traffic,
                "mirrorTraffic": {},
                "description": None,
                "properties": {},
            },
            "systemData": {
                "createdAt": "2026-11-01T10:00:00.000000+00:00",
                "createdBy": "researcher@example.org",
                "createdByType": "User",
                "lastModifiedAt": "2026-11-01T10:00:00.000000+00:00",
                "lastModifiedBy": "researcher@example.org",
                "lastModifiedByType": "User",
            },
        }

    def deployments(self, name: str) -> dict[str, Any]:
        names = list(self.endpoints[name]["properties"]["traffic"]) or ["blue"]
        return {
            "value": [
                {
                    "id": f"{EP_PATH}/{name}/deployments/{deployment}",
                    "name": deployment,
                    "type": "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/deployments",
                    "location": "eastus",
                    "kind": "Managed",
                    "tags": {},
                    "sku": {"name": "Default", "tier": "Standard", "capacity": 1},
                    "properties": {
                        "endpointComputeType": "Managed",
                        "instanceType": "Standard_NC24ads_A100_v4",
                        "model": "azureml://registries/azureml/models/CxrReportGen/versions/7",
                        "provisioningState": "Succeeded",
                        "scaleSettings": {"scaleType": "Default"},
                        "requestSettings": {
                            "requestTimeout": "PT1M30S",
                            "maxConcurrentRequestsPerInstance": 1,
                        },
                        "properties": {},
                    },
                }
                for deployment in names
            ]
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        arm = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def reply(self, body: Any, status: int = 200) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("x-ms-request-id", "arm-request-1")
                self.end_headers()
                self.wfile.write(data)

            def not_found(self, name: str) -> None:
                self.reply(
                    {
                        "error": {
                            "code": "ResourceNotFound",
                            "message": f"The Resource 'Microsoft.MachineLearningServices/"
                            f"workspaces/ws/onlineEndpoints/{name}' was not found.",
                        }
                    },
                    404,
                )

            def route(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                path = self.path.split("?")[0]
                arm.calls.append((method, path))
                arm.arm_auth.add(self.headers.get("Authorization", ""))
                if not path.startswith(EP_PATH + "/"):
                    return self.not_found(path)
                name, _, rest = path[len(EP_PATH) + 1 :].partition("/")
                if name not in arm.endpoints:
                    return self.not_found(name)
                if method == "GET" and rest == "":
                    return self.reply(arm.endpoints[name])
                if method == "GET" and rest == "deployments":
                    return self.reply(arm.deployments(name))
                if method == "POST" and rest == "listKeys":
                    return self.reply({"primaryKey": KEY, "secondaryKey": "secondary-" + KEY})
                if method == "POST" and rest == "token":
                    token, expires = arm.tokens.pop(0)
                    return self.reply(
                        {
                            "accessToken": token,
                            "expiryTimeUtc": int(expires),
                            "refreshAfterTimeUtc": int(expires - 60),
                            "tokenType": "Bearer",
                        }
                    )
                return self.not_found(path)

            def do_GET(self) -> None:
                self.route("GET")

            def do_POST(self) -> None:
                self.route("POST")

        return Handler

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class ArmToLocalTransport(RequestsTransport):
    """azure-core's RequestsTransport, sending management.azure.com calls to ``FakeArm``."""

    def __init__(self, arm_base: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.arm_base = arm_base

    def send(self, request: Any, **kwargs: Any) -> Any:
        if request.url.startswith(ARM):
            request.url = self.arm_base + request.url[len(ARM) :]
        return super().send(request, **kwargs)


@pytest.fixture(scope="module")
def fake_arm() -> Iterator[FakeArm]:
    arm = FakeArm()
    yield arm
    arm.close()


@pytest.fixture(scope="module")
def ml_client(fake_arm: FakeArm) -> Any:
    from azure.ai.ml import MLClient

    return MLClient(
        StaticTokenCredential("arm-token"),
        SUB,
        "rg",
        "ws",
        transport=ArmToLocalTransport(fake_arm.base),
        enable_telemetry=False,
    )


def test_from_workspace_key_endpoint(fake_arm: FakeArm, ml_client: Any) -> None:
    fake_arm.add_endpoint("cxr-key", AZURE_URI, "Key")
    fake_arm.calls.clear()
    config = EndpointConfig.from_workspace("cxr-key", ml_client=ml_client, read_timeout=90)
    assert config.scoring_uri == AZURE_URI
    assert config.auth_mode == "key" and config._key.reveal() == KEY
    assert config.read_timeout == 90
    assert config.key_source == "workspace ws, endpoint cxr-key"
    assert KEY not in dumps_everything(config)
    assert ("POST", f"{EP_PATH}/cxr-key/listKeys") in fake_arm.calls
    assert "Bearer arm-token" in fake_arm.arm_auth  # the MLClient's own credential reached ARM


def test_from_workspace_pins_an_existing_deployment(fake_arm: FakeArm, ml_client: Any) -> None:
    fake_arm.add_endpoint("cxr-two", AZURE_URI, "Key", traffic={"blue": 100, "green": 0})
    config = EndpointConfig.from_workspace("cxr-two", ml_client=ml_client, deployment="green")
    assert config.deployment == "green"
    with pytest.raises(ConfigError, match=r"no deployment 'red'.*blue, green"):
        EndpointConfig.from_workspace("cxr-two", ml_client=ml_client, deployment="red")


def test_from_workspace_without_traffic_says_so(fake_arm: FakeArm, ml_client: Any) -> None:
    fake_arm.add_endpoint("cxr-idle", AZURE_URI, "Key", traffic={"blue": 0})
    with pytest.raises(ConfigError, match="no traffic"):
        EndpointConfig.from_workspace("cxr-idle", ml_client=ml_client)


def test_from_workspace_unknown_endpoint(fake_arm: FakeArm, ml_client: Any) -> None:
    with pytest.raises(EndpointNotFoundError, match="no online endpoint named 'nope'") as info:
        EndpointConfig.from_workspace("nope", ml_client=ml_client)
    assert info.value.status == 404


def test_from_workspace_aad_endpoint_uses_the_credential(fake_arm: FakeArm, ml_client: Any) -> None:
    fake_arm.add_endpoint("cxr-aad", AZURE_URI, "AADToken")
    fake_arm.calls.clear()
    entra = StaticTokenCredential("entra")
    config = EndpointConfig.from_workspace("cxr-aad", ml_client=ml_client, credential=entra)
    assert config.auth_mode == "aad_token" and config.credential is entra
    assert not any(path.endswith(("/listKeys", "/token")) for _, path in fake_arm.calls)
    # Without credential=, the MLClient's own credential is used.
    assert EndpointConfig.from_workspace("cxr-aad", ml_client=ml_client).credential is not None


def test_from_workspace_aml_token_is_fetched_again_when_expired(
    fake_arm: FakeArm, ml_client: Any
) -> None:
    fake_arm.add_endpoint("cxr-aml", AZURE_URI, "AMLToken")
    now = time.time()
    fake_arm.tokens[:] = [("aml-token-1", now + 5), ("aml-token-2", now + 7200)]
    config = EndpointConfig.from_workspace("cxr-aml", ml_client=ml_client)
    assert config.auth_mode == "aml_token"
    assert "aml-token-1" not in dumps_everything(config)
    credential = config.credential
    assert credential.fetch_count == 0  # the first token came with the lookup
    # Five seconds from expiry the token is due: get_keys is called again.
    assert credential.get_token_info(ENTRA_SCOPE).token == "aml-token-2"
    assert credential.get_token_info(ENTRA_SCOPE).token == "aml-token-2"  # cached now
    assert credential.fetch_count == 1
    token_calls = [p for m, p in fake_arm.calls if p == f"{EP_PATH}/cxr-aml/token"]
    assert len(token_calls) == 2
    assert "aml-token" not in repr(credential)


def test_from_workspace_without_config_json(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "notebooks"
    empty.mkdir()
    with pytest.raises(ConfigError, match=r"no workspace config\.json"):
        EndpointConfig.from_workspace(
            "cxr", credential=StaticTokenCredential("t"), config_path=str(empty)
        )
    monkeypatch.chdir(empty)
    with pytest.raises(ConfigError, match=r"no workspace config\.json found here"):
        EndpointConfig.from_workspace("cxr", credential=StaticTokenCredential("t"))


def test_workspace_errors_hide_keys(
    fake_arm: FakeArm, ml_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    fake_arm.add_endpoint("cxr-log", AZURE_URI, "Key")
    with caplog.at_level(logging.DEBUG):
        config = EndpointConfig.from_workspace("cxr-log", ml_client=ml_client)
    assert config.has_key
    assert KEY not in caplog.text


# --- end to end: workspace lookup, then scoring on the local endpoint --------------------


@pytest.fixture(scope="module")
def local() -> Iterator[Any]:
    """The local endpoint, keyed with the primary key FakeArm hands out."""
    from cxr_widgets.local.server import LocalEndpoint

    with LocalEndpoint(key=KEY) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def rg1_study(rg1_path: Any) -> Any:
    from cxr_widgets.study import Study

    return Study(rg1_path, indication="Cough.")


@pytest.mark.server
def test_from_workspace_then_score(
    fake_arm: FakeArm, ml_client: Any, local: Any, rg1_study: Any
) -> None:
    fake_arm.add_endpoint("cxr-local", local.scoring_uri, "Key")
    config = EndpointConfig.from_workspace("cxr-local", ml_client=ml_client, deployment="blue")
    with ReportGenClient(config, image_options={"shortest_side": 518}) as client:
        report = client.generate(rg1_study)
    assert report.demo and report.findings
    assert report.source == f"{local.url} (deployment blue)"


@pytest.mark.server
def test_from_workspace_aml_token_scores_with_the_token(
    fake_arm: FakeArm, ml_client: Any, rg1_study: Any
) -> None:
    from cxr_widgets.local.server import LocalEndpoint

    now = time.time()
    fake_arm.add_endpoint("cxr-aml-local", "http://127.0.0.1:1/score", "AMLToken")
    fake_arm.tokens[:] = [("aml-token-A", now + 3600)]
    with LocalEndpoint(key="aml-token-A") as endpoint:
        fake_arm.endpoints["cxr-aml-local"]["properties"]["scoringUri"] = endpoint.scoring_uri
        config = EndpointConfig.from_workspace("cxr-aml-local", ml_client=ml_client)
        with ReportGenClient(config, image_options={"shortest_side": 518}) as client:
            assert client.generate(rg1_study).findings


@pytest.mark.server
def test_invoke_with_mlclient_the_documented_way(
    fake_arm: FakeArm, ml_client: Any, local: Any, rg1_study: Any
) -> None:
    from azure.ai.ml.constants._endpoint import EndpointInvokeFields

    from cxr_widgets.workspace import invoke_with_mlclient

    fake_arm.add_endpoint("cxr-invoke", local.scoring_uri, "Key")
    fake_arm.calls.clear()
    start = len(local.received())
    reports = invoke_with_mlclient(
        ml_client, "cxr-invoke", [rg1_study, rg1_study], deployment_name="blue", shortest_side=518
    )
    assert len(reports) == 2 and all(r.findings for r in reports)
    # invoke() returns only the body, so the endpoint's demo header cannot be seen this way
    assert reports[0].source == "ws/cxr-invoke (deployment blue)"
    assert reports[0].image_size is not None
    assert [e["status"] for e in local.received()[start:]] == [200]
    # invoke() looked the endpoint up again (deployments, endpoint, keys) before scoring
    paths = [path for _, path in fake_arm.calls]
    assert f"{EP_PATH}/cxr-invoke/listKeys" in paths and f"{EP_PATH}/cxr-invoke" in paths
    # ...and azure-ai-ml's shared default headers do not keep the key afterwards
    assert "Authorization" not in EndpointInvokeFields.DEFAULT_HEADER


@pytest.mark.server
def test_invoke_with_mlclient_wrong_key(fake_arm: FakeArm, ml_client: Any, rg1_study: Any) -> None:
    from cxr_widgets.local.server import LocalEndpoint
    from cxr_widgets.workspace import invoke_with_mlclient

    with LocalEndpoint(key="a-different-key") as endpoint:
        fake_arm.add_endpoint("cxr-invoke-401", endpoint.scoring_uri, "Key")
        with pytest.raises(EndpointError, match="cxr-invoke-401") as info:
            invoke_with_mlclient(ml_client, "cxr-invoke-401", rg1_study, shortest_side=518)
    assert KEY not in str(info.value)
    # azure-ai-ml's validate_response() fails on an {"error": "<text>"} body and loses the
    # status; when it does keep it, the error is the 401 one with its advice.
    if info.value.status is not None:
        assert isinstance(info.value, EndpointAuthError) and info.value.status == 401
    else:
        assert "does not report the HTTP status" in str(info.value)
