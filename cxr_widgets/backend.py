"""The interface every model backend offers: the Azure client, the local endpoint and the demo.

The widget, the batch runner and the notebooks only use this interface, so
they work the same on the demo backend, the local endpoint and Azure. The
backend owns the request budget (:attr:`ReportGenerator.request_budget`),
enforced by every backend the same way, and builds each :class:`Report` once,
complete with its provenance.
"""

from __future__ import annotations

import asyncio
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any, overload

from .contract import DEFAULT_REQUEST_BUDGET, PreparedRequest, prepare_request, request_size
from .errors import ConfigError, RequestTooLargeError
from .report import Provenance, Report, utc_now
from .study import Study

SIZE_ADVICE = "lower the image size (image option shortest_side) or send fewer studies per request"


def check_budget(budget: Any) -> int | None:
    """A request budget: a positive number of bytes, or None for no budget."""
    if budget is not None and (
        isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0
    ):
        raise ConfigError(
            f"the request budget must be a positive number of bytes or None, got {budget!r}"
        )
    return budget


class ReportGenerator(ABC):
    """Turns studies into reports. Subclasses implement :meth:`send`."""

    #: Shown to the user: which endpoint answers (never a secret).
    label: str = "unknown"
    #: True when findings are canned examples, not a model's reading.
    is_demo: bool = False
    #: The kind of backend, recorded in every report's provenance.
    kind: str = "unknown"

    def __init__(
        self,
        image_options: dict[str, Any] | None = None,
        *,
        request_budget: int | None = DEFAULT_REQUEST_BUDGET,
    ) -> None:
        self.image_options: dict[str, Any] = dict(image_options or {})
        self._request_budget = check_budget(request_budget)

    @property
    def request_budget(self) -> int | None:
        """Bytes one request body may have (1.5 MB by default, the size an older Azure ML
        limit answered 413 above); None: no budget. Every backend refuses a larger
        request before sending it; the batch packer and the widget read it here."""
        return self._request_budget

    @property
    def max_attempts(self) -> int:
        """HTTP attempts one request may cost at most, retries included (1: no retries)."""
        return 1

    @property
    def identity(self) -> str:
        """A stable, secret-free name of the endpoint (part of result-store keys)."""
        return self.label

    def prepare(self, studies: Study | Iterable[Study]) -> PreparedRequest:
        """Encode 1 to 10 studies with this backend's image options."""
        return prepare_request(studies, **self.image_options)

    def check_size(self, request: PreparedRequest | bytes) -> int:
        """The request's exact size in bytes; :class:`RequestTooLargeError` over the budget."""
        if isinstance(request, (bytes, bytearray)):
            size = len(request)
        else:
            size = request_size(request.studies)
        budget = self.request_budget
        if budget is not None and size > budget:
            raise RequestTooLargeError(
                f"the request is {size:,} bytes, over the budget of {budget:,} bytes of "
                f"{self.label}: {SIZE_ADVICE}. It was not sent."
            )
        return size

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

    # --- building reports -------------------------------------------------------

    def provenance_fields(self) -> dict[str, Any]:
        """What this backend knows about where its answers come from (overridden by clients)."""
        return {"backend": self.kind, "endpoint": self.identity}

    def finish_reports(
        self,
        request: PreparedRequest,
        parsed: list[Report],
        request_id: str | None = None,
        *,
        demo: bool = False,
        body: bytes | None = None,
        **provenance: Any,
    ) -> list[Report]:
        """The final reports: each parsed report's findings with everything the
        request knows (image size, study id, source, warnings, provenance), built
        once. ``body``: the request body as sent, when the caller has it (not encoded
        again). ``provenance`` overrides :meth:`provenance_fields` (e.g. the deployment
        that answered)."""
        from . import __version__

        if body is None:
            body = request.body
        digest = hashlib.sha256(body).hexdigest()
        created = utc_now()
        fields = {**self.provenance_fields(), **provenance}
        reports = []
        for encoded, parsed_report in zip(request.studies, parsed, strict=True):
            origin = Provenance(
                image_options=self.image_options,
                package_version=__version__,
                request_digest=digest,
                study_digest=encoded.digest,
                created=created,
                **fields,
            )
            reports.append(
                Report(
                    findings=parsed_report.findings,
                    image_size=encoded.frontal.original_size,
                    warnings=[*parsed_report.warnings, *encoded.warnings],
                    demo=demo or parsed_report.demo or self.is_demo,
                    source=self.label,
                    study_id=encoded.study.study_id,
                    request_id=request_id,
                    created=created,
                    provenance=origin,
                )
            )
        return reports

    def close(self) -> None:
        """Release connections (no-op by default)."""
        return None

    def __enter__(self) -> ReportGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
