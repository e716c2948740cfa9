"""A file upload that works for large files: chunks over widget messages, paced by acks.

The stock ``ipywidgets.FileUpload`` puts the whole file in one websocket
message; above Tornado's 10 MiB limit the connection drops and Python never
hears of it (Tornado's ``websocket_max_message_size``, 10 MiB by default). Here the browser reads the file in chunks
(``chunk_size``, default 2 MiB) and sends each as a binary buffer of a custom
message; Python reassembles them and acknowledges each one, so at most one
chunk is in flight. Every failure ends in a message shown beside the control.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anywidget
import traitlets

STATIC = Path(__file__).parent / "static"

DEFAULT_CHUNK = 2 * 1024 * 1024
DEFAULT_MAX_BYTES = 200 * 1024 * 1024
ACCEPT = ".png,.jpg,.jpeg,.dcm,.dicom,image/png,image/jpeg,application/dicom"

#: Called with (file name, content) when a file has arrived; its exception
#: message (if any) is shown beside the control.
OnFile = Callable[[str, bytes], None]

_ids = itertools.count(1)


def format_mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


class ChunkedUpload(anywidget.AnyWidget):
    """One file input; the file travels in chunks. ``on_file(name, data)`` gets the result."""

    _esm = STATIC / "upload.js"
    _css = STATIC / "upload.css"

    slot = traitlets.Unicode("file").tag(sync=True)
    label = traitlets.Unicode("Choose file").tag(sync=True)
    accept = traitlets.Unicode(ACCEPT).tag(sync=True)
    chunk_size = traitlets.Int(DEFAULT_CHUNK).tag(sync=True)
    max_bytes = traitlets.Int(DEFAULT_MAX_BYTES).tag(sync=True)
    #: Shown beside the control: what happened last (never file content).
    status = traitlets.Unicode("").tag(sync=True)
    state = traitlets.Unicode("idle").tag(sync=True)  # idle, receiving, processing, done, error
    filename = traitlets.Unicode("").tag(sync=True)

    def __init__(self, on_file: OnFile | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.on_file = on_file
        self._transfer: dict[str, Any] | None = None
        #: The last complete file (name, bytes); kept out of synced traits.
        self.received: tuple[str, bytes] | None = None
        self.on_msg(self._on_frontend_msg)

    # --- the protocol ------------------------------------------------------
    def _on_frontend_msg(self, _widget: Any, content: dict[str, Any], buffers: list[Any]) -> None:
        """Front-end messages: start, chunk (one binary buffer), end, error (from JS)."""
        kind = content.get("type")
        try:
            if kind == "start":
                self._start(content)
            elif kind == "chunk":
                self._chunk(content, buffers)
            elif kind == "end":
                self._end(content)
            elif kind == "error":  # the browser could not read the file
                self._fail(str(content.get("message") or "the browser could not read the file"))
        except _UploadError as exc:
            self._fail(str(exc), content.get("id"))

    def _start(self, content: dict[str, Any]) -> None:
        name = str(content.get("name") or "file")
        size = int(content.get("size") or 0)
        self.filename = name
        if size <= 0:
            raise _UploadError(f"{name} is empty (0 bytes): choose the image file itself.")
        if size > self.max_bytes:
            raise _UploadError(
                f"{name} is {format_mb(size)}, over the upload limit of "
                f"{format_mb(self.max_bytes)}. Give the file's path on the Jupyter server "
                "instead, or raise the limit (ReportGenWidget(max_upload_mb=...))."
            )
        transfer_id = str(content.get("id") or next(_ids))
        self._transfer = {"id": transfer_id, "name": name, "size": size, "data": bytearray()}
        self.state = "receiving"
        self.status = f"receiving {name} ({format_mb(size)})"
        self.send({"type": "ack", "id": transfer_id, "offset": 0})

    def _current(self, content: dict[str, Any]) -> dict[str, Any]:
        transfer = self._transfer
        if transfer is None or str(content.get("id")) != transfer["id"]:
            raise _UploadError(
                "upload interrupted (a newer file was chosen or the kernel restarted)"
            )
        return transfer

    def _chunk(self, content: dict[str, Any], buffers: list[Any]) -> None:
        transfer = self._current(content)
        data: bytearray = transfer["data"]
        if int(content.get("offset", -1)) != len(data):
            raise _UploadError(
                f"{transfer['name']}: chunk at byte {content.get('offset')} arrived out of "
                f"order (expected {len(data)}); choose the file again."
            )
        if len(buffers) != 1:
            raise _UploadError(f"{transfer['name']}: a chunk arrived without its data")
        data += memoryview(buffers[0]).cast("B")
        if len(data) > transfer["size"]:
            raise _UploadError(f"{transfer['name']}: more data arrived than the file's size")
        self.send({"type": "ack", "id": transfer["id"], "offset": len(data)})

    def _end(self, content: dict[str, Any]) -> None:
        transfer = self._current(content)
        data = bytes(transfer["data"])
        self._transfer = None
        if len(data) != transfer["size"]:
            raise _UploadError(
                f"{transfer['name']}: received {len(data):,} of {transfer['size']:,} bytes; "
                "choose the file again."
            )
        self.received = (transfer["name"], data)
        self.state = "processing"
        self.status = f"{transfer['name']}: received {format_mb(len(data))}, preparing..."
        try:
            if self.on_file is not None:
                self.on_file(transfer["name"], data)
        except Exception as exc:  # shown beside the control; the slot explains details
            message = str(exc)
            if not message.startswith(transfer["name"]):
                message = f"{transfer['name']}: {message}"
            self._fail(message, transfer["id"])
            return
        self.state = "done"
        self.status = f"{transfer['name']} ({format_mb(len(data))})"
        self.send({"type": "done", "id": transfer["id"]})

    def _fail(self, message: str, transfer_id: Any = None) -> None:
        self._transfer = None
        self.state = "error"
        self.status = message
        self.send({"type": "error", "id": transfer_id, "message": message})

    def reset(self) -> None:
        """Forget the last file and any transfer in progress."""
        self._transfer = None
        self.received = None
        self.state = "idle"
        self.status = ""
        self.filename = ""


class _UploadError(Exception):
    """A transfer problem, shown to the user."""
