"""Azure ML batch endpoints for archive-scale runs: shards, deploy, submit, follow, ingest.

Offline (a dry run): :func:`write_shards` prepares studies exactly as
:func:`~cxr_widgets.run_batch` does and writes CSV shards; :func:`simulate_job`
runs the package's batch scoring script over them the way a deployment does;
:func:`ingest` loads ``predictions.csv`` into the same results store
``run_batch`` writes. On Azure: :func:`build_cluster`,
:func:`build_batch_endpoint`, :func:`build_batch_deployment`,
:func:`dry_run_batch`, :func:`deploy_batch`, :func:`upload_shards`,
:func:`submit`, :func:`follow`, :func:`collect`, :func:`teardown_batch`.
"""

from __future__ import annotations

from .azure import (
    build_batch_deployment,
    build_batch_endpoint,
    build_cluster,
    collect,
    deploy_batch,
    dry_run_batch,
    follow,
    submit,
    teardown_batch,
    unique_endpoint_name,
    upload_shards,
)
from .outputs import IngestResult, PredictionRow, ingest, read_predictions
from .shards import Shard, ShardSet, read_shard, write_shards
from .simulate import SimulatedJob, simulate_job

__all__ = [
    "IngestResult",
    "PredictionRow",
    "Shard",
    "ShardSet",
    "SimulatedJob",
    "build_batch_deployment",
    "build_batch_endpoint",
    "build_cluster",
    "collect",
    "deploy_batch",
    "dry_run_batch",
    "follow",
    "ingest",
    "read_predictions",
    "read_shard",
    "simulate_job",
    "submit",
    "teardown_batch",
    "unique_endpoint_name",
    "upload_shards",
    "write_shards",
]
