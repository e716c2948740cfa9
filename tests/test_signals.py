"""signals.stop_signals_as_interrupt: SIGTERM and SIGHUP end a block the way Ctrl-C does."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from cxr_widgets.signals import STOP_SIGNALS, stop_signals_as_interrupt


def test_sigterm_raises_keyboard_interrupt_inside_and_handlers_come_back() -> None:
    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig in STOP_SIGNALS:
        with pytest.raises(KeyboardInterrupt), stop_signals_as_interrupt():
            os.kill(os.getpid(), sig)
        assert {s: signal.getsignal(s) for s in STOP_SIGNALS} == before


def test_outside_the_main_thread_the_block_runs_unchanged() -> None:
    seen: list[object] = []

    def work() -> None:
        with stop_signals_as_interrupt():
            seen.append(signal.getsignal(signal.SIGTERM))

    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert seen == [before]
