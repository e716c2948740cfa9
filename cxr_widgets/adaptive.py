"""How many requests to keep in flight: AIMD on the endpoint's 429 answers."""

from __future__ import annotations

import time

__all__ = ["AdaptiveLimit"]


class AdaptiveLimit:
    """Additive-increase / multiplicative-decrease limit on requests in flight.

    Slow start: from ``start`` it grows by one per success, and also by one
    per ``ramp_interval`` seconds while requests wait for a slot (a model
    answers in seconds, so successes alone would ramp up slowly), until the
    first busy signal. Then it halves (never below 1) on a busy signal and
    grows by one after ``limit`` successes in a row, or after ``probe_factor
    x limit`` when that would reach the level of the last busy signal (a
    fixed pending cap is then met a few times per hundred requests, not
    every few requests). A busy signal from a
    request sent before the last decrease does not decrease it again (that
    request was sent at the old limit).
    """

    def __init__(
        self, maximum: int, start: int = 2, ramp_interval: float = 1.0, probe_factor: int = 4
    ) -> None:
        self.maximum = max(1, maximum)
        self.probe_factor = max(1, probe_factor)
        self._ceiling: int | None = None  # the limit at the last busy signal
        self.limit = max(1, min(start, self.maximum))
        self.peak = self.limit
        self.ramp_interval = ramp_interval
        self._threshold = self.maximum  # slow start until the first busy signal
        self._successes = 0
        self._epoch = 0  # requests numbered before this one were sent at an older limit
        self._raised_at: float | None = None
        self.decreases = 0

    @property
    def slow_start(self) -> bool:
        return self.decreases == 0 and self.limit < self.maximum

    def on_success(self) -> None:
        if self.limit < self._threshold:
            self._grow()
        else:
            if self._ceiling is not None and self.limit >= self._ceiling:
                self._ceiling = None  # fine at the old busy level: it is history
            needed = self.limit
            if self._ceiling is not None and self.limit + 1 >= self._ceiling:
                needed *= self.probe_factor
            self._successes += 1
            if self._successes >= needed:
                self._successes = 0
                self._grow()

    def on_starved(self, now: float) -> bool:
        """Requests wait while ``limit`` are in flight; in slow start, grow once per interval."""
        if not self.slow_start:
            return False
        if self._raised_at is None:
            self._raised_at = now
            return False
        if now - self._raised_at < self.ramp_interval:
            return False
        self._grow(now)
        return True

    def _grow(self, now: float | None = None) -> None:
        self.limit = min(self.maximum, self.limit + 1)
        self.peak = max(self.peak, self.limit)
        self._raised_at = time.monotonic() if now is None else now

    def on_busy(self, sequence: int, next_sequence: int) -> bool:
        """A busy signal for the request numbered ``sequence``; True when it lowered the limit."""
        if sequence < self._epoch:
            return False
        self._ceiling = self.limit
        self.limit = max(1, (self.limit + 1) // 2)
        self._threshold = self.limit
        self._successes = 0
        self._epoch = next_sequence
        self.decreases += 1
        return True
