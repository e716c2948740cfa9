"""How many requests to keep in flight: found from the endpoint's answers, not fixed.

:class:`ConcurrencyController` is asked by the batch runner "may I send
another?" (:meth:`~ConcurrencyController.may_send`) and told how each request
ended: answered in *t* seconds (:meth:`~ConcurrencyController.on_answer`), busy
(429, :meth:`~ConcurrencyController.on_busy`) or failed. It grows the limit as
TCP's slow start does (+1 per answer, so it doubles every round trip) until the
endpoint pushes back, then settles by AIMD as Azure ML's own endpoint batch
scorer (``batch_score_oss`` in Azure/azureml-assets) does: +1 per round of
answers, x0.75 on congestion. Congestion is a 429, or the limit growing while
throughput does not and latency does (an endpoint that queues instead of
refusing). After a few calm round trips (:data:`PROBE_ROUNDS`, 5 to 30 s with
no 429 and no queueing) it grows multiplicatively again (at most doubling per round trip, until the next sign of congestion), so an endpoint that autoscales mid-run (4 -> 16
instances) is used fully within a minute.

Retries are not here: the client (``retry.py``) retries a 429; the runner
reads the client's 429 count and tells the controller.
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .contract import DEFAULT_REQUEST_BUDGET
from .errors import ConfigError

__all__ = [
    "DEFAULT_START",
    "ENDPOINT_CONNECTION_LIMIT",
    "PROBE_INTERVAL",
    "ConcurrencyController",
    "check_cap",
    "default_max_in_flight",
]

#: Multiplicative decrease on congestion (Azure ML's endpoint batch scorer uses 0.75).
DECREASE = 0.75
#: Requests in flight at the start when the workspace does not tell the endpoint's size: what
#: 2 instances at max_concurrent_requests_per_instance 1 hold. The smallest endpoint (1
#: instance) refuses 2 of them at first; the client retries those and they are taken as the
#: first answers free its queue, while a larger one is busy from the first second (with
#: requests of ~10 s, starting at 2 left half of 4 instances idle for the first 10 s).
DEFAULT_START = 4
#: Probes: after PROBE_ROUNDS calm round trips, within PROBE_INTERVAL seconds (min, max). Slow
#: start then needs about two round trips for 4 -> 16 instances: within a minute for
#: requests of up to ~10 s.
PROBE_ROUNDS = 5
PROBE_INTERVAL = (5.0, 30.0)
#: Connections Azure ML allows per online endpoint (its documented quota): more never helps.
ENDPOINT_CONNECTION_LIMIT = 500
#: Congested without a 429: latency this much over an unloaded round's, and over a fifth
#: of the limit queued (1 - 1/1.25); then the limit goes to 1.1 x what is being served.
_PLATEAU_GROWTH = 1.25
_PLATEAU_GAIN = 1.10
_PLATEAU_LATENCY = 1.25
_HISTORY = 12  # rounds remembered
_NEAR_CEILING = 4  # next to the last 429's level, additive increase is this much slower


def check_cap(cap: object, what: str = "max_in_flight") -> int:
    """A user's cap on requests in flight: a positive whole number, else ConfigError."""
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        raise ConfigError(
            f"{what} must be a whole number of requests >= 1, got {cap!r}; leave it unset to let "
            "the run find the endpoint's level"
        )
    return cap


def default_max_in_flight(request_bytes: int = DEFAULT_REQUEST_BUDGET) -> int:
    """What one machine can afford in flight, when the user sets no cap.

    Bounded by sockets (a quarter of the open-file limit: each request holds a
    connection, and files, the store and the server need the rest), by memory
    (each request in flight holds its prepared studies and body, about four
    times ``request_bytes``; a quarter of the available memory is spent on
    them) and by the :data:`ENDPOINT_CONNECTION_LIMIT` an Azure ML endpoint
    accepts. Never below 8.
    """
    bounds = [ENDPOINT_CONNECTION_LIMIT]
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY:
            bounds.append(soft // 4)
    except (ImportError, OSError, ValueError):
        pass
    available = _available_memory()
    if available:
        bounds.append(int(available / 4 / (4 * max(1, request_bytes))))
    return max(8, min(bounds))


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


@dataclass
class _Round:
    limit: int
    throughput: float  # studies/s
    latency: float  # mean seconds per answered request


class ConcurrencyController:
    """Requests in flight: slow start, then AIMD, with periodic upward probes.

    ``cap``: requests in flight at most (the user's ``max_in_flight``; None:
    :func:`default_max_in_flight`). ``capacity_hint``: what the endpoint can
    serve at once when the workspace tells it (instance count x
    ``max_concurrent_requests_per_instance``): the start. ``clock``: seconds
    (monotonic), replaceable in tests. ``probe_interval``: seconds between upward
    probes (default: :data:`PROBE_ROUNDS` round trips, within :data:`PROBE_INTERVAL`).
    """

    def __init__(
        self,
        cap: int | None = None,
        *,
        start: int | None = None,
        capacity_hint: int | None = None,
        probe_interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.user_cap = cap is not None
        self.cap = check_cap(cap) if cap is not None else default_max_in_flight()
        first = capacity_hint if capacity_hint and capacity_hint > 0 else start or DEFAULT_START
        self._window = float(max(1, min(self.cap, int(first))))
        self._threshold = math.inf  # slow start below it
        self.probe_interval = probe_interval
        self._clock = clock
        self.peak = self.limit
        self.decreases = 0  # times the limit was lowered
        self.plateaus = 0  # of which: throughput stopped growing (no 429)
        self.busy = 0  # busy signals told
        self._last_decrease = -math.inf
        self._started = clock()
        self._calm_since = self._started  # since the last probe or decrease
        self._ceiling: float | None = None  # the limit at the last 429
        self._min_latency: float | None = None
        self._smoothed: float | None = None
        self._history: deque[_Round] = deque(maxlen=_HISTORY)
        self._rate: float | None = None  # answers/s, smoothed over rounds
        self._base: float | None = None  # mean latency of the least loaded round
        self._round_start: float | None = None
        self._round_limit = self.limit
        self._round_answers = 0
        self._round_studies = 0
        self._round_seconds = 0.0
        self._limited: dict[str, float] = {"endpoint": 0.0, "preparation": 0.0, "cap": 0.0}

    # --- what the runner asks ------------------------------------------------------------

    @property
    def limit(self) -> int:
        """Requests allowed in flight now."""
        return max(1, min(self.cap, int(self._window)))

    @property
    def phase(self) -> str:
        return "slow start" if self._window < self._threshold else "steady"

    def may_send(self, in_flight: int) -> bool:
        """May one more request be sent while ``in_flight`` are?"""
        return in_flight < self.limit

    # --- what the runner tells -----------------------------------------------------------

    def on_answer(self, seconds: float, studies: int = 1) -> None:
        """A request was answered ``seconds`` after it was sent, carrying ``studies``."""
        now = self._clock()
        seconds = max(1e-6, seconds)
        self._min_latency = (
            seconds if self._min_latency is None else min(self._min_latency, seconds)
        )
        self._smoothed = seconds if self._smoothed is None else 0.8 * self._smoothed + 0.2 * seconds
        if self._round_start is None:  # a round: answers after this one, for a round trip
            self._round_start = now
            self._round_limit = self.limit
        else:
            self._round_answers += 1
            self._round_studies += studies
            self._round_seconds += seconds
        if self._window < self._threshold:
            # Slow start: +1 per answer doubles the limit every round trip (never more).
            if self._window < 2 * self._round_limit:
                self._window += 1.0
        elif self._ceiling is not None and self._window + 1 >= self._ceiling:
            # Next to the level of the last 429: approach it slowly (a fixed pending cap is
            # then met now and then, not every other round; a request the client is retrying
            # gets its turn).
            self._window += 1.0 / (_NEAR_CEILING * self._window)
        else:
            self._window += 1.0 / self._window  # additive: +1 per round
        if self._window >= self.cap:
            self._window = float(self.cap)
        self.peak = max(self.peak, self.limit)
        if (
            self._round_start is not None
            and self._round_answers >= self._round_limit
            and now - self._round_start >= (self._min_latency or 0.0)
        ):
            self._end_round(now)
        if self._window >= self._threshold and now - self._calm_since >= self._probe_every():
            self._probe(now)

    def on_busy(self) -> None:
        """The endpoint answered 429 (seen by the client, retried or not)."""
        self.busy += 1
        self._decrease(self._clock())

    def on_full(self, held: int) -> None:
        """The endpoint refused a request while it held ``held`` of the run's: no more than
        that fits now (an Azure ML endpoint's pending cap is a hard limit)."""
        if self._window > held:
            self._window = float(max(1, held))
            self._threshold = self._window

    def on_failure(self) -> None:
        """A request failed for another reason (not a sign of load): nothing changes."""

    def observe(self, in_flight: int, waiting: bool, seconds: float) -> None:
        """For ``seconds``, ``in_flight`` requests were out and work was (or was not)
        ``waiting`` to be sent: counts toward what limited the run."""
        if seconds <= 0:
            return
        if waiting and in_flight >= self.limit:
            self._limited["cap" if self.limit >= self.cap else "endpoint"] += seconds
        elif not waiting and in_flight < self.limit:
            self._limited["preparation"] += seconds

    @property
    def limited_by(self) -> str:
        """What held the run back most of the time: "endpoint", "preparation" or "cap"."""
        name = max(self._limited, key=lambda k: self._limited[k])
        if self._limited[name] <= 0:
            return "endpoint"
        return name

    def limited_by_text(self) -> str:
        """:attr:`limited_by` for people."""
        name = self.limited_by
        if name == "cap":
            who = "max_in_flight" if self.user_cap else "this machine's default cap"
            return f"the cap of {self.cap} requests in flight ({who})"
        if name == "preparation":
            return "image preparation (more prepare_workers or cores would help)"
        return f"the endpoint (it held about {self.limit} requests in flight)"

    # --- inside --------------------------------------------------------------------------

    def _decrease(self, now: float, *, plateau: bool = False, level: float = 0.0) -> None:
        # One decrease per round trip: answers to requests sent before it say nothing new.
        # Before the first answer the round trip is longer than the run so far: one only.
        round_trip = self._smoothed if self._smoothed is not None else now - self._started
        if now - self._last_decrease < max(0.05, round_trip):
            return
        if plateau:  # toward what the endpoint serves at once (x0.75 at most per step)
            self._window = max(1.0, self._window * DECREASE, min(self._window, math.ceil(level)))
        else:
            self._ceiling = self._window
            self._window = max(1.0, self._window * DECREASE)
        self._threshold = self._window
        self._last_decrease = now
        self._calm_since = now
        self.decreases += 1
        self.plateaus += plateau
        self._reset_round()

    def _reset_round(self) -> None:
        self._round_start = None
        self._round_answers = self._round_studies = 0
        self._round_seconds = 0.0

    def _end_round(self, now: float) -> None:
        """A round trip's answers: is the endpoint queueing (Little's law)?

        With ``rate`` answers/s and ``base`` the round-trip time of an unloaded
        round, ``rate x base`` requests are being served; the rest of the limit
        waits in the endpoint's queue, adding latency and no throughput.
        """
        assert self._round_start is not None
        elapsed = max(1e-6, now - self._round_start)
        current = _Round(
            self._round_limit,
            self._round_studies / elapsed,
            self._round_seconds / self._round_answers,
        )
        rate = self._round_answers / elapsed
        self._rate = rate if self._rate is None else 0.7 * self._rate + 0.3 * rate
        self._base = current.latency if self._base is None else min(self._base, current.latency)
        self._history.append(current)
        self._reset_round()
        served = self._rate * self._base
        queued = current.limit - served
        if current.latency > _PLATEAU_LATENCY * self._base and queued > max(
            1.0, (1 - 1 / _PLATEAU_GROWTH) * current.limit
        ):
            self._decrease(now, plateau=True, level=served * _PLATEAU_GAIN)

    def _probe_every(self) -> float:
        if self.probe_interval is not None:
            return self.probe_interval
        low, high = PROBE_INTERVAL
        return min(high, max(low, PROBE_ROUNDS * (self._smoothed or 0.0)))

    def _probe(self, now: float) -> None:
        """Grow multiplicatively again, measuring afresh (the endpoint may have grown)."""
        self._threshold = math.inf
        self._calm_since = now
        self._ceiling = None
        self._history.clear()
        self._reset_round()
