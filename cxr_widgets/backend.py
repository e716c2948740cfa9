"""The interface every model backend offers: the Azure client and the demo.

The widget, the batch runner and the notebooks only use this interface, so
they work the same on the demo backend, the local endpoint and Azure.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any, overload

from .contract import PreparedRequest, prepare_request
from .report import Report
from .study import Study


class ReportGenerator(ABC):
    """Turns studies into reports. Subclasses implement :meth:`send`."""

    #: Shown to the user: which endpoint answers (never a secret).
    label: str = "unknown"
    #: True when findings are canned examples, not a model's reading.
    is_demo: bool = False

    def __init__(self, image_options: dict[str, Any] | None = None) -> None:
        self.image_options: dict[str, Any] = dict(image_options or {})

    @property
    def identity(self) -> str:
        """A stable, secret-free name of the endpoint (part of result-store keys)."""
        return self.label

    def prepare(self, studies: Study | Iterable[Study]) -> PreparedRequest:
        """Encode 1 to 10 studies with this backend's image options."""
        return prepare_request(studies, **self.image_options)

    @abstractmethod
    def send(self, request: PreparedRequest) -> list[Report]:
        """Send one prepared request; one report per study, in order."""

    async def asend(self, request: PreparedRequest) -> list[Report]:
        """:meth:`send` without blocking the event loop."""
        return await asyncio.to_thread(self.send, request)

    @overload
    def generate(self, studies: Study) -> Report: ...
    @overload
    def generate(self, studies: Iterable[Study]) -> list[Report]: ...
    def generate(self, studies: Study | Iterable[Study]) -> Report | list[Report]:
        """Reports for one study (a Report) or up to 10 studies (a list)."""
        reports = self.send(self.prepare(studies))
        return reports[0] if isinstance(studies, Study) else reports

    async def agenerate(self, studies: Study | Iterable[Study]) -> Report | list[Report]:
        """:meth:`generate` for event loops (the widget, async notebooks)."""
        request = await asyncio.to_thread(self.prepare, studies)
        reports = await self.asend(request)
        return reports[0] if isinstance(studies, Study) else reports

    def finish_reports(
        self, request: PreparedRequest, reports: list[Report], request_id: str | None = None
    ) -> list[Report]:
        """Attach what the request knows (image size, study id, source) to parsed reports."""
        for encoded, report in zip(request.studies, reports, strict=True):
            frontal = encoded.frontal
            report.image_size = frontal.original_size
            report.frontal_image = frontal.image
            report.study_id = encoded.study.study_id
            report.source = self.label
            report.demo = report.demo or self.is_demo
            report.request_id = request_id
        return reports

    def close(self) -> None:
        """Release connections (no-op by default)."""
        return None

    def __enter__(self) -> ReportGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
