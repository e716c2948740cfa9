"""The panel's small parts as typed state, drawn by ``static/panel.js``.

The panel keeps no HTML built from its state: each part below holds plain
values (text, numbers, flags) and the front end renders them with
``textContent``. One ES module draws every part; ``part`` says which.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import anywidget
import traitlets

from ..local.demo_findings import DEMO_CHOICE
from ..report import RESEARCH_NOTICE

STATIC = Path(__file__).parent / "static"

#: Offline there is no model; each answer then says what it is (recorded or canned).
DEMO_BADGE = "DEMO backend · offline, no model (each answer says what it is)"


class Part(anywidget.AnyWidget):
    """A piece of the panel drawn by ``panel.js`` (``part`` picks the drawing)."""

    _esm = STATIC / "panel.js"
    _css = STATIC / "panel.css"
    part = traitlets.Unicode("").tag(sync=True)


class Header(Part):
    """Title, the DEMO badge, the active endpoint and the research-only notice."""

    part = traitlets.Unicode("header").tag(sync=True)
    endpoint = traitlets.Unicode("").tag(sync=True)
    demo = traitlets.Bool(False).tag(sync=True)
    demo_badge = traitlets.Unicode(DEMO_BADGE).tag(sync=True)
    #: How the demo chooses its answers, as the badge's tooltip.
    demo_choice = traitlets.Unicode(DEMO_CHOICE).tag(sync=True)
    research = traitlets.Unicode(RESEARCH_NOTICE).tag(sync=True)


class RunStatus(Part):
    """Beside Generate: what is running (the browser counts the seconds), errors, size.

    ``busy_since`` is the job's start as Unix time in milliseconds (0 when
    idle); the page shows the elapsed time from it with no kernel message.
    ``request_budget`` 0 means the backend sets no budget.
    """

    part = traitlets.Unicode("run").tag(sync=True)
    busy_label = traitlets.Unicode("").tag(sync=True)
    busy_since = traitlets.Float(0.0).tag(sync=True)
    notice = traitlets.Unicode("").tag(sync=True)
    error_title = traitlets.Unicode("").tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    request_bytes = traitlets.Int(0).tag(sync=True)
    request_budget = traitlets.Int(0).tag(sync=True)

    def start(self, label: str) -> None:
        with self.hold_sync():
            self.notice = ""
            self.busy_label = label
            self.busy_since = time.time() * 1000

    def stop(self, notice: str = "") -> None:
        with self.hold_sync():
            self.busy_label = ""
            self.busy_since = 0.0
            self.notice = notice

    def show_error(self, title: str, message: str) -> None:
        with self.hold_sync():
            self.error_title = title
            self.error = message

    def clear(self) -> None:
        """Forget the notice and the error (what they spoke of is no longer shown)."""
        with self.hold_sync():
            self.notice = ""
            self.error_title = ""
            self.error = ""

    @property
    def busy(self) -> bool:
        return self.busy_since > 0


class SlotInfo(Part):
    """One image slot's summary (what will be sent) or why its last source failed."""

    part = traitlets.Unicode("slot").tag(sync=True)
    slot = traitlets.Unicode("").tag(sync=True)
    label = traitlets.Unicode("").tag(sync=True)
    summary = traitlets.Unicode("").tag(sync=True)
    hint = traitlets.Unicode("PNG, JPEG or DICOM").tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)


class Thumb(Part):
    """A slot's thumbnail (JPEG bytes, sent as a binary buffer) with its text alternative."""

    part = traitlets.Unicode("thumb").tag(sync=True)
    image = traitlets.Bytes(b"").tag(sync=True)
    alt = traitlets.Unicode("").tag(sync=True)


class Message(Part):
    """One status line: ``kind`` is note, ok or error; empty text shows nothing."""

    part = traitlets.Unicode("message").tag(sync=True)
    text = traitlets.Unicode("").tag(sync=True)
    kind = traitlets.Enum(("note", "ok", "error"), default_value="note").tag(sync=True)

    def show(self, text: str, kind: str = "note") -> None:
        with self.hold_sync():
            self.kind = kind
            self.text = text


class DeviceCode(Part):
    """The device-code sign-in prompt: the address to open and the code to enter."""

    part = traitlets.Unicode("device_code").tag(sync=True)
    uri = traitlets.Unicode("").tag(sync=True)
    code = traitlets.Unicode("").tag(sync=True)
    expires = traitlets.Unicode("").tag(sync=True)

    def clear(self) -> None:
        with self.hold_sync():
            self.uri = self.code = self.expires = ""


class ExportList(Part):
    """The files the last export of the shown report wrote (or sent to the browser),
    or why it failed."""

    part = traitlets.Unicode("exports").tag(sync=True)
    written = traitlets.List(traitlets.Dict()).tag(sync=True)
    downloaded = traitlets.Bool(False).tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)

    def show(self, paths: dict[str, Any], downloaded: bool = False) -> None:
        with self.hold_sync():
            self.error = ""
            self.downloaded = downloaded
            self.written = [{"kind": kind, "path": str(path)} for kind, path in paths.items()]

    def download(self, name: str, media_type: str, data: bytes) -> None:
        """Hand ``data`` to the browser, which saves it as ``name`` (the user's own file)."""
        self.send(
            {"type": "download", "id": uuid.uuid4().hex, "name": name, "mime": media_type}, [data]
        )

    def clear(self) -> None:
        with self.hold_sync():
            self.written = []
            self.error = ""
