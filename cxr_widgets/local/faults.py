"""Fault injection for the local endpoint: latency, bandwidth, pending cap, failures.

A :class:`FaultConfig` travels from :class:`~cxr_widgets.local.server.LocalEndpoint`
(or ``cxr-widgets serve``) to the scoring script as environment variables
(``CXR_FAULT_*``, see :data:`ENV`). :class:`FaultState` is the live state in
the server process: one gunicorn worker with threads, so an in-process counter
sees every concurrent request.
"""

from __future__ import annotations

import argparse
import os
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

from ..errors import ConfigError

#: Field name -> environment variable read by the scoring script.
ENV: dict[str, str] = {
    "latency": "CXR_FAULT_LATENCY",
    "latency_per_study": "CXR_FAULT_LATENCY_PER_STUDY",
    "bandwidth": "CXR_FAULT_BANDWIDTH",
    "instances": "CXR_FAULT_INSTANCES",
    "pending_per_instance": "CXR_FAULT_PENDING_PER_INSTANCE",
    "retry_after": "CXR_FAULT_RETRY_AFTER",
    "rate_429": "CXR_FAULT_RATE_429",
    "rate_503": "CXR_FAULT_RATE_503",
    "rate_drop": "CXR_FAULT_RATE_DROP",
    "seed": "CXR_FAULT_SEED",
    "instances_file": "CXR_FAULT_INSTANCES_FILE",
}

Fault = Literal["drop", "429", "503"]
#: Seconds between reads of ``instances_file``.
INSTANCES_REREAD = 0.2


@dataclass(frozen=True)
class FaultConfig:
    """What the local endpoint does wrong, on purpose.

    - ``latency``: seconds added to every scored request; ``latency_per_study``:
      seconds added per study in it (the model's time).
    - ``bandwidth``: bytes/s shared by all requests (request bodies wait their turn).
    - ``instances``: simulated model instances; at most this many requests are
      scored at once, and beyond ``pending_per_instance * instances`` pending
      requests the endpoint answers 429 with ``Retry-After: retry_after``, as
      Azure ML does past 2 pending requests per instance. None: no cap.
    - ``instances_file``: a file holding a whole number of instances, read again
      every :data:`INSTANCES_REREAD` seconds; while it holds one, it replaces
      ``instances`` (an endpoint that autoscales mid-run: write 16 over 4).
    - ``rate_429``, ``rate_503``, ``rate_drop``: fractions of requests answered
      429 (with ``Retry-After``), 503, or dropped (connection closed, no answer),
      drawn from a RNG seeded with ``seed``.
    """

    latency: float = 0.0
    latency_per_study: float = 0.0
    bandwidth: float | None = None
    instances: int | None = None
    pending_per_instance: int = 2
    retry_after: float = 1.0
    rate_429: float = 0.0
    rate_503: float = 0.0
    rate_drop: float = 0.0
    seed: int | None = 0
    instances_file: str | None = None

    def __post_init__(self) -> None:
        for name in ("latency", "latency_per_study", "retry_after"):
            if getattr(self, name) < 0:
                raise ConfigError(f"fault {name} must be >= 0 seconds, got {getattr(self, name)}")
        if self.bandwidth is not None and self.bandwidth <= 0:
            raise ConfigError(f"fault bandwidth must be > 0 bytes/s, got {self.bandwidth}")
        if self.instances is not None and self.instances < 1:
            raise ConfigError(f"fault instances must be >= 1, got {self.instances}")
        if self.pending_per_instance < 1:
            raise ConfigError(f"pending_per_instance must be >= 1, got {self.pending_per_instance}")
        rates = (self.rate_429, self.rate_503, self.rate_drop)
        if any(not 0.0 <= r <= 1.0 for r in rates) or sum(rates) > 1.0 + 1e-9:
            raise ConfigError(
                f"fault rates must each be in 0..1 and sum to at most 1, got 429={self.rate_429}, "
                f"503={self.rate_503}, drop={self.rate_drop}"
            )

    @property
    def max_pending(self) -> int | None:
        """Requests admitted at once (scored or waiting for an instance); None: no cap."""
        return None if self.instances is None else self.instances * self.pending_per_instance

    # --- environment ----------------------------------------------------
    def to_env(self) -> dict[str, str]:
        """The ``CXR_FAULT_*`` variables for the server process (``none`` for no value)."""
        env = {}
        for f in fields(self):
            value = getattr(self, f.name)
            env[ENV[f.name]] = "none" if value is None else str(value)
        return env

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> FaultConfig:
        """Read ``CXR_FAULT_*``; missing variables keep their defaults."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            text = environ.get(ENV[f.name], "").strip()
            if not text:
                continue
            if text.lower() == "none" and f.name in ("bandwidth", "instances", "seed"):
                values[f.name] = None
                continue
            if f.name == "instances_file":
                values[f.name] = None if text.lower() == "none" else text
                continue
            integer = f.name in ("instances", "pending_per_instance", "seed")
            try:
                values[f.name] = int(text) if integer else float(text)
            except ValueError:
                raise ConfigError(
                    f"{ENV[f.name]}={text!r} is not a {'whole ' if integer else ''}number"
                ) from None
        return cls(**values)

    # --- command line ---------------------------------------------------
    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser | Any) -> None:
        """Add ``--latency``, ``--bandwidth``, ``--instances``, ``--rate-429``... options."""
        add = parser.add_argument
        add("--latency", type=float, default=0.0, metavar="S", help="seconds added per request")
        add(
            "--latency-per-study",
            type=float,
            default=0.0,
            metavar="S",
            help="seconds added per study in a request",
        )
        add(
            "--bandwidth",
            type=float,
            default=None,
            metavar="BYTES_PER_S",
            help="request bytes per second, shared by all requests (e.g. 5e6)",
        )
        add(
            "--instances",
            type=int,
            default=None,
            metavar="N",
            help="simulated model instances: N requests scored at once, 429 beyond "
            "N x --pending-per-instance pending requests (default: no cap)",
        )
        add("--pending-per-instance", type=int, default=2, metavar="N", help="pending cap factor")
        add("--retry-after", type=float, default=1.0, metavar="S", help="Retry-After on 429")
        add("--rate-429", type=float, default=0.0, metavar="F", help="fraction answered 429")
        add("--rate-503", type=float, default=0.0, metavar="F", help="fraction answered 503")
        add("--rate-drop", type=float, default=0.0, metavar="F", help="fraction dropped")
        add("--seed", type=int, default=0, help="seed of the fault RNG")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> FaultConfig:
        """The config from options added by :meth:`add_arguments`."""
        names = [f.name for f in fields(cls)]
        return cls(**{n: getattr(args, n) for n in names if getattr(args, n, None) is not None})


class Bandwidth:
    """A shared link of ``rate`` bytes/s: each body waits for the ones before it."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._lock = threading.Lock()
        self._free_at = time.monotonic()

    def delay(self, nbytes: int) -> float:
        """Seconds the caller must wait until ``nbytes`` have passed the link."""
        with self._lock:
            now = time.monotonic()
            start = max(now, self._free_at)
            self._free_at = start + nbytes / self.rate
            return self._free_at - now


class FaultState:
    """Live fault state of one server process (thread-safe)."""

    def __init__(self, config: FaultConfig) -> None:
        self.config = config
        self._rng = random.Random(config.seed)
        self._lock = threading.Lock()
        self._pending = 0
        self._scoring = 0
        self._free = threading.Condition(self._lock)
        self._instances = config.instances
        self._read_at = -1.0
        self._bandwidth = Bandwidth(config.bandwidth) if config.bandwidth else None

    def draw(self) -> Fault | None:
        """The injected fault for the next request, if any (seeded)."""
        c = self.config
        if not (c.rate_drop or c.rate_429 or c.rate_503):
            return None
        with self._lock:
            u = self._rng.random()
        if u < c.rate_drop:
            return "drop"
        if u < c.rate_drop + c.rate_429:
            return "429"
        if u < c.rate_drop + c.rate_429 + c.rate_503:
            return "503"
        return None

    def transfer(self, nbytes: int) -> None:
        """Sleep as long as ``nbytes`` take through the shared bandwidth cap."""
        if self._bandwidth is not None:
            time.sleep(self._bandwidth.delay(nbytes))

    def instances(self) -> int | None:
        """Instances now: ``instances``, or what ``instances_file`` says (call with the lock)."""
        path = self.config.instances_file
        now = time.monotonic()
        if path and now - self._read_at >= INSTANCES_REREAD:
            self._read_at = now
            try:
                with open(path, encoding="ascii") as file:
                    self._instances = max(1, int(file.read().strip()))
            except (OSError, ValueError):
                pass  # keep the last count
            self._free.notify_all()
        return self._instances

    def admit(self) -> int | None:
        """Count a pending request and return how many are pending with it; None (not
        counted) when the cap is reached."""
        with self._lock:
            instances = self.instances()
            cap = None if instances is None else instances * self.config.pending_per_instance
            if cap is not None and self._pending >= cap:
                return None
            self._pending += 1
            return self._pending

    def release(self) -> None:
        with self._lock:
            self._pending -= 1

    @property
    def pending(self) -> int:
        return self._pending

    def score(self, n_studies: int) -> int:
        """Hold an instance for the model's simulated time; return how many were
        scoring when this one started (itself included)."""
        seconds = self.config.latency + self.config.latency_per_study * n_studies
        with self._lock:
            while True:
                instances = self.instances()
                if instances is None or self._scoring < instances:
                    break
                self._free.wait(INSTANCES_REREAD)
            self._scoring += 1
            scoring = self._scoring
        try:
            time.sleep(seconds)
        finally:
            with self._lock:
                self._scoring -= 1
                self._free.notify()
        return scoring
