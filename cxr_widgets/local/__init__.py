"""The local CXRReportGen-compatible endpoint: scoring script, faults, server control.

- :mod:`.score`: the entry script run inside ``azureml-inference-server-http``.
- :mod:`.demo_findings`: canned demo findings and the scoring logic DemoBackend shares.
- :mod:`.faults`: latency, bandwidth, pending cap and failure injection.
- :mod:`.server`: :class:`LocalEndpoint` (context manager) and :func:`serve`.

Nothing here imports the server or Flask until a server is started.
"""

from __future__ import annotations

from typing import Any

#: Environment variables read by the scoring script (see :mod:`.score`).
ENV_KEY = "CXR_LOCAL_KEY"
ENV_MAX_REQUEST_BYTES = "CXR_LOCAL_MAX_REQUEST_BYTES"
ENV_RESPONSE_SHAPE = "CXR_LOCAL_RESPONSE_SHAPE"
ENV_REQUEST_LOG = "CXR_LOCAL_REQUEST_LOG"
#: Header on every answer of the local endpoint: its findings are canned demo findings.
DEMO_HEADER = "x-cxr-widgets-demo"

__all__ = ["FaultConfig", "LocalEndpoint", "serve"]


def __getattr__(name: str) -> Any:
    if name == "FaultConfig":
        from .faults import FaultConfig

        return FaultConfig
    if name in ("LocalEndpoint", "serve"):
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
