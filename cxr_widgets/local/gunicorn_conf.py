"""gunicorn settings of the local endpoint (``gunicorn -c python:cxr_widgets.local.gunicorn_conf``).

Slow clients must not starve the server: gunicorn's threaded worker reads a
request's headers and body in one of its threads with no timeout, so twenty
clients that send half a request hold every thread. Each read from a client
here waits at most ``CXR_LOCAL_READ_TIMEOUT`` seconds (default
:data:`DEFAULT_READ_TIMEOUT`); a client that sends nothing for that long is
disconnected. The scoring script also bounds the time a whole body may take.
"""

from __future__ import annotations

import os
from typing import Any

#: Seconds a read from a client may wait for data (headers and body).
DEFAULT_READ_TIMEOUT = 10.0
ENV_READ_TIMEOUT = "CXR_LOCAL_READ_TIMEOUT"


def read_timeout() -> float:
    try:
        value = float(os.environ.get(ENV_READ_TIMEOUT, "") or DEFAULT_READ_TIMEOUT)
    except ValueError:
        return DEFAULT_READ_TIMEOUT
    return value if value > 0 else DEFAULT_READ_TIMEOUT


def post_worker_init(worker: Any) -> None:
    """Bound every socket read of the worker (called by gunicorn in the worker process)."""
    from gunicorn.http.unreader import SocketUnreader

    timeout = read_timeout()
    chunk = SocketUnreader.chunk
    if getattr(chunk, "cxr_bounded", False):
        return

    def bounded_chunk(self: Any, *args: Any, **kwargs: Any) -> bytes:
        self.sock.settimeout(timeout)  # the worker resets blocking mode between requests
        return chunk(self, *args, **kwargs)

    bounded_chunk.cxr_bounded = True  # type: ignore[attr-defined]
    SocketUnreader.chunk = bounded_chunk  # type: ignore[method-assign]
