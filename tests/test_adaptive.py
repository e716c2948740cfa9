"""AdaptiveLimit: how many requests stay in flight (slow start, then AIMD on 429s)."""

from __future__ import annotations

from cxr_widgets.adaptive import AdaptiveLimit


def test_adaptive_limit_slow_start_then_aimd() -> None:
    limit = AdaptiveLimit(maximum=8, start=2)
    for _ in range(3):
        limit.on_success()
    assert limit.limit == 5  # slow start: +1 per success until the first busy signal
    assert limit.on_busy(sequence=4, next_sequence=7)
    assert limit.limit == 3
    assert not limit.on_busy(sequence=6, next_sequence=8)  # sent before the decrease
    assert limit.limit == 3
    for _ in range(2):
        limit.on_success()
    assert limit.limit == 3  # additive: +1 only after `limit` successes
    limit.on_success()
    assert limit.limit == 4
    assert limit.on_busy(sequence=7, next_sequence=9)
    assert limit.limit == 2
    assert limit.on_busy(sequence=9, next_sequence=10) and limit.limit == 1
    assert limit.on_busy(sequence=10, next_sequence=11) and limit.limit == 1  # never below 1
    for _ in range(100):
        limit.on_success()
    assert limit.limit == 8 and limit.peak == 8  # never above the maximum


def test_adaptive_limit_ramps_up_while_starved_in_slow_start_only() -> None:
    limit = AdaptiveLimit(maximum=6, start=2, ramp_interval=1.0)
    assert not limit.on_starved(10.0)  # the clock starts
    assert not limit.on_starved(10.5) and limit.limit == 2
    assert limit.on_starved(11.0) and limit.limit == 3
    assert not limit.on_starved(11.9)
    assert limit.on_starved(12.0) and limit.limit == 4
    assert limit.on_busy(sequence=0, next_sequence=5) and limit.limit == 2
    assert not limit.on_starved(100.0) and limit.limit == 2  # after a 429: successes only


def test_adaptive_limit_probes_the_last_busy_level_slowly() -> None:
    limit = AdaptiveLimit(maximum=8, start=3, probe_factor=4)
    assert limit.on_busy(sequence=0, next_sequence=1) and limit.limit == 2  # busy at 3
    for _ in range(7):
        limit.on_success()
    assert limit.limit == 2  # 3 was busy: 4 x 2 successes before trying it again
    limit.on_success()
    assert limit.limit == 3
    limit.on_success()  # fine at 3 now: back to one step per `limit` successes
    limit.on_success()
    limit.on_success()
    assert limit.limit == 4


def test_adaptive_limit_respects_small_maximum() -> None:
    limit = AdaptiveLimit(maximum=1, start=2)
    limit.on_success()
    assert limit.limit == 1
