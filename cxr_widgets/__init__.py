"""cxr-widgets: grounded chest X-ray report generation in JupyterLab.

For research only, not for clinical use. ``import cxr_widgets`` stays fast:
modules that need Pillow, azure-core, azure-ai-ml or ipywidgets load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_getattr
from .contract import build_request, parse_response
from .errors import (
    BadRequestError,
    ConfigError,
    CxrWidgetsError,
    DeadlineExceededError,
    DeploymentError,
    EndpointAuthError,
    EndpointBusyError,
    EndpointConnectionError,
    EndpointError,
    EndpointNotFoundError,
    EndpointServerError,
    EndpointTimeoutError,
    ImageError,
    ManifestError,
    ModelError,
    RequestError,
    RequestTooLargeError,
    ResponseFormatError,
    ReviewError,
    StudyError,
)
from .report import Box, Finding, Provenance, Report
from .study import Study

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "prepare_image": "images",
    "PreparedImage": "images",
    "load_pixels": "images",
    "PixelData": "images",
    "render_findings": "render",
    "plot_findings": "render",
    "EndpointConfig": "client",
    "ReportGenClient": "client",
    "DemoBackend": "demo",
    "run_batch": "batch",
    "ResultStore": "store",
    "LocalEndpoint": "local.server",
    "sample_study": "samples",
    "ReportGenWidget": "widget",
    "StudyBrowser": "widget",
    "ReviewStore": "review",
}

__all__ = [
    "BadRequestError",
    "Box",
    "ConfigError",
    "CxrWidgetsError",
    "DeadlineExceededError",
    "DemoBackend",
    "DeploymentError",
    "EndpointAuthError",
    "EndpointBusyError",
    "EndpointConfig",
    "EndpointConnectionError",
    "EndpointError",
    "EndpointNotFoundError",
    "EndpointServerError",
    "EndpointTimeoutError",
    "Finding",
    "ImageError",
    "LocalEndpoint",
    "ManifestError",
    "ModelError",
    "PixelData",
    "PreparedImage",
    "Provenance",
    "Report",
    "ReportGenClient",
    "ReportGenWidget",
    "RequestError",
    "RequestTooLargeError",
    "ResponseFormatError",
    "ResultStore",
    "ReviewError",
    "ReviewStore",
    "Study",
    "StudyBrowser",
    "StudyError",
    "build_request",
    "load_pixels",
    "parse_response",
    "plot_findings",
    "prepare_image",
    "render_findings",
    "run_batch",
    "sample_study",
]


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


def __dir__() -> list[str]:
    return sorted(__all__)


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    """The Jupyter server extension (file-browser viewer routes; see ``server_extension``)."""
    return [{"module": "cxr_widgets.server_extension"}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where the prebuilt JupyterLab extension is, for ``jupyter labextension develop``."""
    return [{"src": "labextension/static_build", "dest": "cxr-widgets-labextension"}]


if TYPE_CHECKING:
    from .batch import run_batch
    from .client import EndpointConfig, ReportGenClient
    from .demo import DemoBackend
    from .images import PixelData, PreparedImage, load_pixels, prepare_image
    from .local.server import LocalEndpoint
    from .render import plot_findings, render_findings
    from .review import ReviewStore
    from .samples import sample_study
    from .store import ResultStore
    from .widget import ReportGenWidget, StudyBrowser
