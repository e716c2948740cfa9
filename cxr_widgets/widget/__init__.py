"""The JupyterLab panel: ``ReportGenWidget()``. The only package code importing ipywidgets."""

from __future__ import annotations

from .browser import StudyBrowser
from .history import RunRecord
from .panel import ReportGenWidget
from .upload import ChunkedUpload
from .viewer import ReportViewer

__all__ = ["ChunkedUpload", "ReportGenWidget", "ReportViewer", "RunRecord", "StudyBrowser"]
