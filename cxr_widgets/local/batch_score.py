"""Batch scoring script: the local endpoint's scoring, run the way a batch deployment runs one.

An Azure ML batch deployment calls ``init()`` once per worker, then
``run(mini_batch)`` with a list of input file paths (``mini_batch_size`` of
them); each element of the list ``run`` returns becomes one row of
``predictions.csv`` (output action ``append_row``). This script reads the
CSV shards written by :func:`cxr_widgets.batch_endpoint.write_shards`, checks
and answers each file as one request with the same code as the local endpoint
(:func:`.demo_findings.score_payload`: canned demo findings), and returns one
row per study: ``[row number in the file, findings JSON, file name]``.
"""

from __future__ import annotations

import os
from typing import Any

from ..batch_endpoint.shards import read_shard
from ..contract import request_payload
from .demo_findings import score_payload

_ready = False


def init() -> None:
    """Called once per worker process before any mini-batch."""
    global _ready
    _ready = True


def run(mini_batch: list[str]) -> list[list[Any]]:
    """Score each file of the mini-batch; a bad file raises, failing that mini-batch only."""
    if not _ready:
        raise RuntimeError("init() was not called before run()")
    rows: list[list[Any]] = []
    for path in mini_batch:
        _ids, columns, values = read_shard(path)
        answers = score_payload(request_payload(columns, values))
        for number, record in enumerate(answers):
            rows.append([number, record["output"], os.path.basename(path)])
    return rows


def output_text(rows: list[list[Any]]) -> str:
    """What one mini-batch's rows add to ``predictions.csv``."""
    import csv
    import io

    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


__all__ = ["init", "output_text", "run"]
