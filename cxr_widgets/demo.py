"""DemoBackend: offline answers from the local endpoint's own scoring code.

Every report it returns has ``demo=True``. Microsoft's sample study gets the
model's recorded answer; any other study gets canned findings that never
depend on what the image shows (see :mod:`.local.demo_findings`, and
:func:`~.local.demo_findings.demo_notice` for the label each one carries).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from .backend import ReportGenerator
from .contract import DEFAULT_REQUEST_BUDGET, PreparedRequest, parse_response
from .local.demo_findings import recorded_provenance, score_payload
from .report import Report


class DemoBackend(ReportGenerator):
    """Answers like an endpoint, in-process, with canned demo findings.

    ``latency`` (seconds per request) simulates a model's time, so that a
    widget's progress indicator is visible; the default 0 keeps tests fast.
    """

    label = "demo (offline)"
    is_demo = True
    kind = "demo"

    def __init__(
        self,
        image_options: dict[str, Any] | None = None,
        *,
        latency: float = 0.0,
        request_budget: int | None = DEFAULT_REQUEST_BUDGET,
    ) -> None:
        super().__init__(image_options, request_budget=request_budget)
        if latency < 0:
            raise ValueError(f"latency must be >= 0 seconds, got {latency}")
        self.latency = float(latency)
        #: Requests answered so far (for tests and notebooks).
        self.requests = 0

    def __repr__(self) -> str:
        return f"DemoBackend(latency={self.latency:g})"

    def send(self, request: PreparedRequest) -> list[Report]:
        """Check the size and the payload as the endpoint does and answer canned findings.

        A request over :attr:`request_budget` is refused as the real endpoint
        would refuse it, so what the demo accepts the endpoint accepts too.
        """
        self.check_size(request)
        if self.latency:
            time.sleep(self.latency)
        # The same path as the local endpoint: validate -> findings -> wire body -> parse.
        body = json.dumps(score_payload(request.payload))
        reports = parse_response(body, n_studies=len(request.studies))
        self.requests += 1
        return self.finish_reports(
            request, reports, request_id=f"demo-{uuid.uuid4()}", **recorded_provenance(reports)
        )
