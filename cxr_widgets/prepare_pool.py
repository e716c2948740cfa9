"""Images prepared ahead of sending, in worker processes, each file content once per run.

Decoding a DICOM or PNG and encoding the prepared PNG hold the GIL, so threads
do not add cores: :class:`PreparePool` runs :func:`~cxr_widgets.images.prepare_image`
in ``workers`` processes. Where ``fork`` exists (Linux) the workers are forked
by :meth:`PreparePool.start`, which the batch runner calls before it starts any
thread of its own; a script without an ``if __name__ == "__main__":`` guard is
then safe (``spawn`` would run the script again in every worker). Elsewhere
they are spawned only when the main module is not a script file (a notebook,
the REPL, ``python -m``), else preparation stays in threads. Paths and bytes
go to the workers; PIL images, arrays and pydicom datasets are prepared in the
calling thread. Files are read and checked
in the worker exactly as :func:`prepare_image` reads them (regular files only,
header before body).

Identical content is prepared once: each image's content fingerprint (the
store's :func:`~cxr_widgets.store.content_fingerprint`: a SHA-256 of the file's
bytes with the image options) names its preparation, so a prior image shared by
many studies, or a file copied under two names, is prepared once while it is
among the last :data:`CACHE_IMAGES` distinct images (memory stays bounded;
the batch runner also recognises whole studies already answered from their
fingerprints without preparing them again).

Memory is bounded by the caller, which submits only as many studies as its
senders can use; the pool holds at most ``workers`` images being prepared plus
the cache.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from .contract import EncodedStudy
from .errors import RequestError
from .store import content_fingerprint
from .study import IMAGE_COLUMNS, Study

__all__ = ["CACHE_IMAGES", "PreparePool", "default_workers"]

#: Distinct prepared images kept for reuse (about 0.5 MB each at the default size).
CACHE_IMAGES = 64


def default_workers() -> int:
    """Worker processes when the user names none: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _context() -> Any:
    """The multiprocessing context workers start with, or None (stay in threads)."""
    import multiprocessing
    import sys

    if "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    main = sys.modules.get("__main__")
    if getattr(main, "__file__", None) and getattr(main, "__spec__", None) is None:
        return None  # a script run by path: spawn would run it again in each worker
    return multiprocessing.get_context("spawn")


def _prepare(source: Any, column: str, options: dict[str, Any]) -> Any:
    """Runs in a worker process."""
    from .images import prepare_image

    return prepare_image(source, name=column, **options)


class PreparePool:
    """Prepares studies' images in ``workers`` processes (``processes=False``: in the
    calling thread, e.g. on one core). Use as a context manager or call :meth:`close`."""

    def __init__(
        self,
        options: dict[str, Any] | None = None,
        *,
        workers: int | None = None,
        processes: bool | None = None,
        cache_images: int = CACHE_IMAGES,
    ) -> None:
        self.options = dict(options or {})
        self.workers = max(1, workers or default_workers())
        if processes is None:
            processes = self.workers > 1
        self.processes = bool(processes) and _context() is not None
        self.cache_images = max(0, cache_images)
        self._cache: OrderedDict[str, Future[Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._executor: ProcessPoolExecutor | None = None
        #: Images prepared, and images served from the cache (same content).
        self.prepared = 0
        self.reused = 0

    def start(self) -> PreparePool:
        """Start the worker processes now (call before starting threads of your own)."""
        if self.processes:
            self._pool().submit(int).result()  # all workers start with the first task
        return self

    def _pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ProcessPoolExecutor(self.workers, mp_context=_context())
            return self._executor

    def encode(
        self, study: Study, fingerprints: dict[str, str | None] | None = None
    ) -> EncodedStudy:
        """The study's prepared images and row (as :func:`contract.encode_study`).

        ``fingerprints``: column -> content fingerprint already computed by the
        caller (None where there is none); computed here otherwise.
        """
        if not isinstance(study, Study):
            raise RequestError(f"expected a Study, got {type(study).__name__}")
        futures: dict[str, Future[Any]] = {}
        for column in study.columns:
            if column in IMAGE_COLUMNS:
                source = getattr(study, column)
                if fingerprints is not None and column in fingerprints:
                    fingerprint = fingerprints[column]
                else:
                    fingerprint = content_fingerprint(source, self.options)
                futures[column] = self._submit(source, column, fingerprint)
        images: dict[str, Any] = {}
        row: list[str] = []
        for column in study.columns:
            if column in IMAGE_COLUMNS:
                prepared = futures[column].result()
                images[column] = prepared
                row.append(prepared.base64)
            else:
                row.append(getattr(study, column))
        return EncodedStudy(study=study, columns=study.columns, row=row, images=images)

    def _submit(self, source: Any, column: str, fingerprint: str | None) -> Future[Any]:
        if fingerprint is not None:
            with self._lock:
                cached = self._cache.get(fingerprint)
                if cached is not None and not (cached.done() and cached.exception()):
                    self._cache.move_to_end(fingerprint)
                    self.reused += 1
                    return cached
        future = self._start(source, column)
        if fingerprint is not None and self.cache_images:
            with self._lock:
                self._cache[fingerprint] = future
                while len(self._cache) > self.cache_images:
                    self._cache.popitem(last=False)
        return future

    def _start(self, source: Any, column: str) -> Future[Any]:
        with self._lock:
            self.prepared += 1
        if self.processes and isinstance(source, (str, os.PathLike, bytes, bytearray)):
            path_or_bytes = os.fspath(source) if isinstance(source, os.PathLike) else source
            return self._pool().submit(_prepare, path_or_bytes, column, self.options)
        future: Future[Any] = Future()
        try:
            future.set_result(_prepare(source, column, self.options))
        except Exception as exc:
            future.set_exception(exc)
        return future

    def close(self, wait: bool = True) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
            self._cache.clear()
        if executor is not None:
            executor.shutdown(wait=wait, cancel_futures=True)

    def __enter__(self) -> PreparePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
