"""Background jobs for the panel: the kernel and the page stay responsive.

A job (generate, test connection, sign in, export) runs in a worker thread;
``status`` (a :class:`~cxr_widgets.widget.parts.RunStatus`) gets its label and
start time once, and the page counts the elapsed seconds. Cancel stops waiting and
discards the result (an HTTP request already sent cannot be recalled).
Results are applied on the kernel's event loop when one is running, so widget
state changes happen where the kernel handles messages.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from .parts import RunStatus


class Job:
    """One background job; ``done`` is set when it has finished, failed or been cancelled."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.started = time.monotonic()
        self.cancelled = False
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        #: The worker thread (join it to know the work itself has ended, even when cancelled).
        self.thread: threading.Thread | None = None

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


class Runner:
    """Runs one job at a time, with ``status`` (a RunStatus part) and a Cancel button."""

    def __init__(self, on_busy: Callable[[bool], None] | None = None) -> None:
        self.status = RunStatus()
        self.cancel_button = widgets.Button(
            description="Cancel",
            icon="stop",
            tooltip="Stop waiting; the result, if it still arrives, is discarded",
            layout=widgets.Layout(width="90px", display="none"),
        ).add_class("cxr-cancel")
        self.cancel_button.on_click(lambda _: self.cancel())
        self.job: Job | None = None
        self._on_busy = on_busy

    @property
    def busy(self) -> bool:
        return self.job is not None and not self.job.done.is_set()

    def start(
        self,
        label: str,
        work: Callable[[], Any],
        on_result: Callable[[Any, Job], None],
        on_error: Callable[[BaseException, Job], None],
    ) -> Job:
        """Run ``work()`` in a thread; then ``on_result(value, job)`` or ``on_error(exc, job)``."""
        if self.busy:
            raise RuntimeError(f"{self.job.label} is still running: wait for it or Cancel it.")  # type: ignore[union-attr]
        job = Job(label)
        self.job = job
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        self.status.start(label)
        self._set_busy(True)

        def finish(callback: Callable[[], None]) -> None:
            try:
                if not job.cancelled:
                    callback()
            finally:
                job.done.set()
                if self.job is job and not job.cancelled:
                    self.status.stop()
                    self._set_busy(False)

        def run() -> None:
            try:
                job.result = work()
            except BaseException as exc:  # reported in the panel
                job.error = exc
            if job.error is not None:
                error = job.error
                callback: Callable[[], None] = lambda: on_error(error, job)  # noqa: E731
            else:
                callback = lambda: on_result(job.result, job)  # noqa: E731
            if loop is not None and loop.is_running():
                loop.call_soon_threadsafe(finish, callback)
            else:
                finish(callback)

        job.thread = threading.Thread(target=run, name=f"cxr-{label}", daemon=True)
        job.thread.start()
        return job

    def cancel(self) -> None:
        """Stop waiting for the current job; its result will be discarded."""
        job = self.job
        if job is None or job.done.is_set():
            return
        job.cancelled = True
        job.done.set()
        self.status.stop(
            f"Cancelled {job.label[:1].lower()}{job.label[1:]} after {job.elapsed:.1f} s. "
            "A request already sent may still run at the endpoint; its result will be discarded."
        )
        self._set_busy(False)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the current job is done (for scripts and tests); False on timeout."""
        job = self.job
        return True if job is None else job.done.wait(timeout)

    def _set_busy(self, busy: bool) -> None:
        self.cancel_button.layout.display = "" if busy else "none"
        if self._on_busy is not None:
            self._on_busy(busy)
