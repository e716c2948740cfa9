"""The endpoint form: demo, an Azure ML workspace endpoint, or a scoring URI with a key.

Secrets: a key typed into the password field is moved into a plain Python
attribute and the field is cleared at once, so no synced trait (and no saved
notebook) ever holds it. A key can also come from an environment variable.
Device-code sign-in shows its code and address here, in the panel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import traitlets

from ..backend import ReportGenerator
from ..config import DEFAULT_KEY_ENV
from ..errors import ConfigError, CxrWidgetsError, user_message
from .parts import DeviceCode, Message
from .runner import Runner

MODES = (
    ("Demo (offline)", "demo"),
    ("Azure ML workspace", "workspace"),
    ("Scoring URI + key", "uri"),
)
CREDENTIALS = (
    ("Default chain (az login, managed identity, …)", "default"),
    ("Device code (sign in on another device)", "device_code"),
    ("Interactive browser", "browser"),
)
DEMO_TEXT = (
    "The demo backend answers offline with canned example findings. They are not a "
    "reading of the image: use it to learn the panel, never to interpret a study."
)


class KeyField(widgets.Password):
    """A password field whose value is never echoed back to the page by the kernel."""

    value = traitlets.Unicode("").tag(sync=True, echo_update=False)


def _field(description: str, widget: widgets.Widget) -> widgets.Widget:
    """``widget`` (or the first control of a row) with ``description`` as its own label,
    so screen readers name the control (a separate Label would not be tied to it)."""
    control = widget.children[0] if isinstance(widget, widgets.HBox) else widget
    control.description = description
    control.style.description_width = "130px"
    # Wraps (the field below its label) when the notebook is narrower than both; 4 px
    # are the widget's own margins.
    control.layout = widgets.Layout(
        width="490px", max_width="calc(100% - 4px)", flex_flow="row wrap"
    )
    return widget


class EndpointPanel:
    """Builds a backend from the form; ``apply(client)`` makes it the active one."""

    def __init__(
        self,
        *,
        apply: Callable[[ReportGenerator], None],
        test: Callable[[], None],
        runner: Runner,
        demo_latency: float,
    ) -> None:
        self._apply = apply
        self._runner = runner
        self.demo_latency = demo_latency
        #: A key typed into the form: a plain attribute, never a synced trait.
        self._key: str | None = None

        self.mode = widgets.ToggleButtons(options=MODES, value="demo").add_class("cxr-mode")
        self.mode.style.button_width = "auto"
        wide = widgets.Layout(width="360px")
        # workspace
        self.endpoint_name = widgets.Text(placeholder="my-cxrreportgen-endpoint", layout=wide)
        self.ws_deployment = widgets.Text(placeholder="optional: pin a deployment", layout=wide)
        self.credential = widgets.Dropdown(options=CREDENTIALS, value="default", layout=wide)
        self.config_path = widgets.Text(
            placeholder="optional: folder or file of the workspace config.json", layout=wide
        )
        self.device_code = DeviceCode()
        # scoring URI
        self.scoring_uri = widgets.Text(
            placeholder="https://<endpoint>.<region>.inference.ml.azure.com/score", layout=wide
        )
        self.uri_deployment = widgets.Text(placeholder="optional: pin a deployment", layout=wide)
        self.key_env = widgets.Text(value=DEFAULT_KEY_ENV, layout=widgets.Layout(width="220px"))
        self.password = KeyField(
            placeholder="or paste the key here, then Enter",
            continuous_update=False,
            layout=widgets.Layout(width="360px"),
        ).add_class("cxr-key")
        self.password.observe(self._take_key, "value")
        self.forget_button = widgets.Button(
            description="Forget key", layout=widgets.Layout(width="auto", display="none")
        )
        self.forget_button.on_click(lambda _: self.forget_key())
        self.key_status = Message()
        self.key_env.observe(lambda _: self._show_key_status(), "value")

        self.demo_box = widgets.HTML(f"<div class='cxr-note'>{DEMO_TEXT}</div>")
        self.workspace_box = widgets.VBox(
            [
                widgets.HTML(
                    "<div class='cxr-note'>Signs in with azure-identity, then looks the "
                    "endpoint up once with azure-ai-ml (scoring URI, auth mode, key or "
                    "token); calls then go straight to the scoring URI.</div>"
                ),
                _field("Endpoint name", self.endpoint_name),
                _field("Deployment", self.ws_deployment),
                _field("Sign in with", self.credential),
                _field("Workspace config", self.config_path),
                self.device_code,
            ]
        )
        self.uri_box = widgets.VBox(
            [
                _field("Scoring URI", self.scoring_uri),
                _field("Deployment", self.uri_deployment),
                _field("Key variable", self.key_env),
                _field("Key", widgets.HBox([self.password, self.forget_button])),
                self.key_status,
            ]
        )
        self.use_button = widgets.Button(
            description="Use this endpoint", icon="plug", button_style="primary"
        ).add_class("cxr-connect")
        self.use_button.on_click(lambda _: self.use())
        self.test_button = widgets.Button(
            description="Test connection",
            icon="heartbeat",
            tooltip="Send the sample study to the active endpoint and report what happens",
        ).add_class("cxr-test")
        self.test_button.on_click(lambda _: test())
        self.result = Message().add_class("cxr-endpoint-result")
        self.form = widgets.VBox([self.demo_box])
        self.mode.observe(lambda _: self._show_mode(), "value")
        self.box = widgets.VBox(
            [
                self.mode,
                self.form,
                widgets.HBox(
                    [self.use_button, self.test_button],
                    layout=widgets.Layout(flex_flow="row wrap"),
                ),
                self.result,
            ],
        ).add_class("cxr-endpoint-box")
        self._show_key_status()

    # --- the key --------------------------------------------------------------
    def _take_key(self, change: dict[str, Any]) -> None:
        value = change["new"]
        if not value:
            return
        # Move the key out of the synced trait before anything else happens.
        self.password.value = ""
        self._key = value.strip() or None
        self._show_key_status()

    def forget_key(self) -> None:
        """Drop a typed key (a key already given to the active client stays with it)."""
        self._key = None
        self._show_key_status()

    def _show_key_status(self) -> None:
        import os

        env = self.key_env.value.strip()
        if self._key:
            text = f"key: typed ({len(self._key)} characters, kept in the kernel only)"
        elif env and os.environ.get(env):
            text = f"key: from the environment variable ${env}"
        else:
            where = f" or set ${env}" if env else ""
            text = f"no key yet: paste one above{where} (a local endpoint may need none)"
        self.forget_button.layout.display = "" if self._key else "none"
        self.key_status.show(text)

    # --- building -----------------------------------------------------------------
    def _show_mode(self) -> None:
        self.form.children = [
            {"demo": self.demo_box, "workspace": self.workspace_box, "uri": self.uri_box}[
                self.mode.value
            ]
        ]
        self.result.show("")

    def show_result(self, text: str, ok: bool) -> None:
        self.result.show(text, "ok" if ok else "error")

    def use(self) -> None:
        """Build the backend the form describes and make it active (sign-in runs in the background)."""
        mode = self.mode.value
        try:
            if mode == "workspace":
                self._use_workspace()
                return
            client = self.build_client()
        except (CxrWidgetsError, RuntimeError) as exc:  # RuntimeError: the panel is busy
            self.show_result(str(exc), ok=False)
            return
        self._apply(client)
        self.show_result(f"Now using {client.label}.", ok=True)

    def build_client(self) -> ReportGenerator:
        """The backend for the demo or scoring-URI form (no network call)."""
        from ..backends import backend_from_choice

        if self.mode.value not in ("demo", "uri"):
            raise ConfigError("the workspace form signs in first: use use()")
        return backend_from_choice(
            self.mode.value,
            scoring_uri=self.scoring_uri.value,
            deployment=self.uri_deployment.value,
            key=self._key,
            key_env=self.key_env.value,
            demo_latency=self.demo_latency,
        )

    def _credential(self) -> Any:
        from azure import identity

        choice = self.credential.value
        if choice == "device_code":
            return identity.DeviceCodeCredential(prompt_callback=self._device_code_prompt)
        if choice == "browser":
            return identity.InteractiveBrowserCredential()
        return identity.DefaultAzureCredential()

    def _device_code_prompt(self, verification_uri: str, user_code: str, expires_on: Any) -> None:
        """azure-identity calls this with the code to enter: show it in the panel."""
        with self.device_code.hold_sync():
            self.device_code.uri = verification_uri
            self.device_code.code = user_code
            self.device_code.expires = (
                f"{expires_on:%H:%M}" if hasattr(expires_on, "strftime") else ""
            )

    def _use_workspace(self) -> None:
        from ..backends import backend_from_choice

        name = self.endpoint_name.value.strip()
        if not name:
            raise ConfigError("Endpoint name is empty: give the online endpoint's name.")
        deployment = self.ws_deployment.value.strip() or None
        config_path = self.config_path.value.strip() or None

        def work() -> ReportGenerator:
            return backend_from_choice(
                "workspace",
                endpoint_name=name,
                deployment=deployment,
                workspace_config=config_path,
                credential=self._credential(),
            )

        def done(client: ReportGenerator, _job: Any) -> None:
            self.device_code.clear()
            self._apply(client)
            self.show_result(f"Now using {client.label}.", ok=True)

        def failed(exc: BaseException, _job: Any) -> None:
            self.device_code.clear()
            self.show_result(user_message(exc), ok=False)

        self.result.show("")
        self._runner.start(f"Signing in and looking up {name}", work, done, failed)
