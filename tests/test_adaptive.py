"""ConcurrencyController: slow start, AIMD, probing, the cap (on a simulated endpoint).

The simulation is a small discrete-event model of an Azure ML online endpoint:
``instances`` serve one request at a time each, at most ``pending_per_instance
x instances`` are admitted (429 beyond, retried by the client after
``retry_after``), the rest wait in the endpoint's queue. The same behaviour
against the real local endpoint is in tests/test_scale.py.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque

import pytest

from cxr_widgets.adaptive import (
    DEFAULT_START,
    ENDPOINT_CONNECTION_LIMIT,
    ConcurrencyController,
    check_cap,
    default_max_in_flight,
)
from cxr_widgets.errors import ConfigError


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def simulate(
    *,
    duration: float,
    instances: int | list[tuple[float, int]],
    service: float = 1.0,
    pending_per_instance: int | None = 2,
    retry_after: float = 1.0,
    cap: int | None = None,
    capacity_hint: int | None = None,
) -> tuple[ConcurrencyController, float, list[tuple[float, int]]]:
    """Run the controller against the model; returns it, the fraction of the instances'
    capacity used, and (time, limit) samples."""
    clock = Clock()
    control = ConcurrencyController(cap, capacity_hint=capacity_hint, clock=clock)
    steps = instances if isinstance(instances, list) else [(0.0, instances)]
    events: list[tuple[float, int, str, float]] = []
    order = itertools.count()
    queue: deque[float] = deque()
    state = {"in_flight": 0, "pending": 0, "busy_servers": 0, "served": 0, "capacity": 0.0}
    samples: list[tuple[float, int]] = []

    def n_instances(t: float) -> int:
        return [n for start, n in steps if start <= t][-1]

    def arrive(sent: float) -> None:
        n = n_instances(clock.now)
        cap_pending = None if pending_per_instance is None else pending_per_instance * n
        if cap_pending is not None and state["pending"] >= cap_pending:
            control.on_busy()
            heapq.heappush(events, (clock.now + retry_after, next(order), "arrive", sent))
            return
        state["pending"] += 1
        queue.append(sent)
        start_service()

    def start_service() -> None:
        while queue and state["busy_servers"] < n_instances(clock.now):
            sent = queue.popleft()
            state["busy_servers"] += 1
            heapq.heappush(events, (clock.now + service, next(order), "done", sent))

    last = 0.0
    while clock.now < duration:
        while control.may_send(state["in_flight"]):
            state["in_flight"] += 1
            arrive(clock.now)
        when, _, kind, sent = heapq.heappop(events)
        state["capacity"] += (min(when, duration) - last) * n_instances(last) / service
        last = when
        clock.now = when
        if kind == "arrive":
            arrive(sent)
        else:
            state["busy_servers"] -= 1
            state["pending"] -= 1
            state["in_flight"] -= 1
            if when <= duration:
                state["served"] += 1
            control.on_answer(when - sent, studies=1)
            start_service()
        samples.append((clock.now, control.limit))
    return control, state["served"] / state["capacity"], samples


@pytest.mark.parametrize("instances", [1, 4, 16, 32])
def test_finds_the_endpoints_level_and_uses_it(instances: int) -> None:
    control, used, samples = simulate(duration=300, instances=instances)
    assert used >= 0.9, f"{used:.0%} of capacity at {instances} instances"
    assert control.peak >= instances  # every instance was given work
    assert control.busy >= 1  # it found the level by being told (429), not by guessing
    late = [limit for t, limit in samples if t > 100]
    assert max(late) <= 2 * instances + instances // 2 + 3  # it stays near the level


def test_slow_start_is_multiplicative() -> None:
    _, _, samples = simulate(duration=12, instances=64, service=1.0)
    by_second = {int(t): limit for t, limit in samples}
    # From 2, doubling per round trip of 1 s: 64 requests in flight within 6 rounds.
    assert by_second[6] >= 64 and by_second[1] <= 2 * DEFAULT_START + 1


@pytest.mark.parametrize("service", [2.0, 10.0])
def test_an_endpoint_that_autoscales_mid_run_is_used_within_a_minute(service: float) -> None:
    grow = 60 * service
    _, _, samples = simulate(duration=grow + 120, instances=[(0.0, 4), (grow, 16)], service=service)
    after = [(t, limit) for t, limit in samples if t >= grow]
    reached = next(t for t, limit in after if limit >= 16)
    assert reached - grow <= 60
    # Used: from then on it stays at the new level.
    assert min(limit for t, limit in after if t >= grow + 60) >= 16


def test_latency_without_429_stops_growth_where_throughput_stops() -> None:
    """An endpoint that queues everything (no pending cap) and never answers 429."""
    control, used, samples = simulate(duration=300, instances=8, pending_per_instance=None)
    assert control.busy == 0 and control.plateaus >= 1
    assert used >= 0.9
    late = [limit for t, limit in samples if t > 60]
    assert sorted(late)[len(late) // 2] <= 14  # it settles near the level (8 served) ...
    assert max(late) <= 64 < control.cap  # probes go briefly above it, far below the cap


def test_a_workspace_capacity_hint_is_the_start() -> None:
    control = ConcurrencyController(capacity_hint=24, clock=Clock())
    assert control.limit == 24
    assert ConcurrencyController(10, capacity_hint=24).limit == 10  # the user's cap wins


def test_429s_before_any_answer_lower_the_limit_once() -> None:
    """Before the first answer the round trip is unknown (longer than the run so far): the
    client's retries of the requests refused at the start are not news each time."""
    clock = Clock()
    control = ConcurrencyController(capacity_hint=8, clock=clock)
    for _ in range(10):
        clock.now += 0.5
        control.on_busy()
    assert control.decreases == 1 and control.limit == 6
    clock.now += 10.0
    control.on_answer(10.0)  # now the round trip is known: 10 s
    control.on_busy()
    assert control.decreases == 2
    clock.now += 5.0
    control.on_busy()
    assert control.decreases == 2  # within a round trip of the last decrease
    clock.now += 5.0
    control.on_busy()
    assert control.decreases == 3


def test_an_endpoint_found_full_holds_the_limit_at_what_it_took() -> None:
    control = ConcurrencyController(capacity_hint=8, clock=Clock())
    control.on_full(5)
    assert control.limit == 5 and control.phase == "steady"
    control.on_full(7)  # never raised by it
    assert control.limit == 5


def test_the_cap_holds_and_says_it_limited_the_run() -> None:
    control, _, samples = simulate(duration=60, instances=32, cap=6)
    assert max(limit for _, limit in samples) == 6
    control.observe(in_flight=6, waiting=True, seconds=5.0)
    assert control.limited_by == "cap" and "max_in_flight" in control.limited_by_text()
    control.observe(in_flight=1, waiting=False, seconds=50.0)
    assert control.limited_by == "preparation"


@pytest.mark.parametrize("bad", [0, -1, 2.5, "8", True])
def test_a_cap_that_is_not_a_positive_whole_number_is_refused(bad: object) -> None:
    with pytest.raises(ConfigError, match="max_in_flight must be a whole number"):
        check_cap(bad)
    with pytest.raises(ConfigError):
        ConcurrencyController(bad)  # type: ignore[arg-type]


def test_the_default_cap_is_what_one_machine_affords() -> None:
    cap = default_max_in_flight()
    assert 8 <= cap <= ENDPOINT_CONNECTION_LIMIT
    assert default_max_in_flight(request_bytes=10**12) == 8  # memory bound, floor 8


def test_the_workspace_tells_what_the_deployment_holds() -> None:
    """deployment_capacity reads azure-ai-ml's own deployment entity."""
    pytest.importorskip("azure.ai.ml")
    from azure.ai.ml.entities import ManagedOnlineDeployment, OnlineRequestSettings

    from cxr_widgets.workspace import deployment_capacity

    deployment = ManagedOnlineDeployment(
        name="blue",
        endpoint_name="cxr",
        instance_count=16,
        request_settings=OnlineRequestSettings(max_concurrent_requests_per_instance=2),
    )

    class Deployments:
        def get(self, name: str, endpoint_name: str) -> ManagedOnlineDeployment:
            assert (name, endpoint_name) == ("blue", "cxr")
            return deployment

    class Workspace:
        online_deployments = Deployments()

    assert deployment_capacity(Workspace(), "cxr", "blue") == 32
    assert deployment_capacity(Workspace(), "cxr", None) is None
    assert deployment_capacity(object(), "cxr", "blue") is None  # not told: the run finds it
