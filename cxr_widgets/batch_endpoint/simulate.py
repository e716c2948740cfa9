"""Run a batch job's scoring offline: the package's batch scoring script over the shards.

This is what a batch deployment does with the input folder, on this machine:
list the files in order, cut them into mini-batches of ``mini_batch_size``,
call the scoring script's ``init()`` once and ``run()`` per mini-batch (with
``max_retries`` more tries when it raises), and append every returned row to
``predictions.csv``. A mini-batch that still fails is left out of the output,
as Azure ML does, and named in the result.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..folders import make_folder
from .shards import ShardSet

#: The official deployment's settings (see :mod:`.azure`): one file per mini-batch, 3 retries.
DEFAULT_MINI_BATCH_SIZE = 1
DEFAULT_MAX_RETRIES = 3


@dataclass
class SimulatedJob:
    """What the simulated job did: where the output is and which mini-batches failed."""

    output: Path
    mini_batches: int
    failed: dict[str, str] = field(default_factory=dict)  # shard name -> error


def simulate_job(
    shard_set: ShardSet,
    output_folder: str | os.PathLike[str],
    *,
    names: list[str] | None = None,
    mini_batch_size: int = DEFAULT_MINI_BATCH_SIZE,
    max_retries: int = DEFAULT_MAX_RETRIES,
    scoring: Any = None,
) -> SimulatedJob:
    """Score the shards (all, or ``names``) into ``output_folder/predictions.csv``.

    ``scoring`` is the scoring script module (default: the package's own,
    :mod:`cxr_widgets.local.batch_score`).
    """
    if scoring is None:
        from ..local import batch_score as scoring
    from ..local.batch_score import output_text
    from .azure import OUTPUT_FILE_NAME

    output_folder = Path(output_folder)
    make_folder(output_folder, purpose="the job's output", fix="choose another output folder.")
    output = output_folder / OUTPUT_FILE_NAME
    paths = [str(p) for p in shard_set.paths(names)]
    scoring.init()
    job = SimulatedJob(output=output, mini_batches=0)
    with open(output, "a", encoding="utf-8", newline="") as handle:
        for start in range(0, len(paths), mini_batch_size):
            batch = paths[start : start + mini_batch_size]
            job.mini_batches += 1
            for attempt in range(max_retries + 1):
                try:
                    rows = scoring.run(batch)
                    break
                except Exception as exc:  # the job records the failure and goes on
                    if attempt == max_retries:
                        for path in batch:
                            job.failed[Path(path).name] = f"{type(exc).__name__}: {exc}"
                        rows = []
            handle.write(output_text(rows))
    return job
