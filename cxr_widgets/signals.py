"""SIGTERM (and SIGHUP) as Ctrl-C, so `kill PID` and a closed terminal stop cleanly.

One helper for every long-running command (``cxr-widgets serve``, ``run``):
inside :func:`stop_signals_as_interrupt` those signals raise
:class:`KeyboardInterrupt` in the main thread, so the code's own Ctrl-C path
(stop the server, keep what is stored) runs. Outside the main thread it does
nothing, as Python only delivers signals there.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: Signals that mean "stop" for a foreground command.
STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@contextmanager
def stop_signals_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM/SIGHUP raise KeyboardInterrupt; handlers restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _interrupt) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
