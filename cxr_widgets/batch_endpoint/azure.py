"""CXRReportGen on an Azure ML batch endpoint: deploy, upload, submit, follow, collect, delete.

The settings are those of Microsoft's batch notebook for CXRReportGen
(``cxr-deploy-batch-endpoint.ipynb`` in Azure/azureml-examples and
microsoft/healthcareai-examples): a GPU cluster ``cxr-batch-cluster`` of
``Standard_NC24ads_A100_v4`` scaling from 0 to 1 node, a ``ModelBatchDeployment``
``cxr-dpl`` of the registry model with ``max_concurrency_per_instance=1``,
``mini_batch_size=1``, ``instance_count=1``, output action ``append_row`` to
``predictions.csv``, ``BatchRetrySettings(max_retries=3, timeout=300)`` and
logging level ``info``. The notebook sends one CSV file; we send a folder of
shards (``uri_folder``), one file per mini-batch.

azure-ai-ml is imported inside the functions; importing this module is cheap.
A cluster costs money only while nodes run (min_instances=0 scales it to
zero), but delete what you no longer need with :func:`teardown_batch`.
"""

from __future__ import annotations

import secrets
import string
import time
from pathlib import Path
from typing import Any

from ..deploy import (
    DEFAULT_INSTANCE_TYPE,
    MODEL_NAME,
    Progress,
    _check_name,
    _model_reference,
    _plain,
    _reporter,
    _step,
    deployment_error,
)
from ..errors import ConfigError, DeploymentError
from ..extras import needs
from .shards import ShardSet

DEFAULT_CLUSTER_NAME = "cxr-batch-cluster"
DEFAULT_ENDPOINT_PREFIX = "cxr-batch"
DEFAULT_DEPLOYMENT_NAME = "cxr-dpl"
DEFAULT_MIN_INSTANCES = 0
DEFAULT_MAX_INSTANCES = 1
DEFAULT_INSTANCE_COUNT = 1
DEFAULT_MAX_CONCURRENCY_PER_INSTANCE = 1
DEFAULT_MINI_BATCH_SIZE = 1
DEFAULT_MAX_RETRIES = 3
#: Seconds a mini-batch may take; a larger mini-batch needs more (the notebook's advice).
DEFAULT_MINI_BATCH_TIMEOUT = 300
DEFAULT_LOGGING_LEVEL = "info"
OUTPUT_ACTION = "append_row"
OUTPUT_FILE_NAME = "predictions.csv"
#: The job output that holds predictions.csv (``named-outputs/score/`` when downloaded).
OUTPUT_NAME = "score"

COMPUTE_SCHEMA = "https://azuremlschemas.azureedge.net/latest/amlCompute.schema.json"
BATCH_ENDPOINT_SCHEMA = "https://azuremlschemas.azureedge.net/latest/batchEndpoint.schema.json"
BATCH_DEPLOYMENT_SCHEMA = (
    "https://azuremlschemas.azureedge.net/latest/modelBatchDeployment.schema.json"
)

#: Job states after which nothing more happens.
FINAL_STATES = ("Completed", "Failed", "Canceled", "NotResponding")


def unique_endpoint_name(prefix: str = DEFAULT_ENDPOINT_PREFIX) -> str:
    """``cxr-batch-x7k2q``: endpoint names are unique within a region, so add a suffix."""
    alphabet = string.ascii_lowercase + string.digits
    return f"{prefix}-{''.join(secrets.choice(alphabet) for _ in range(5))}"


@needs("deploy")
def build_cluster(
    name: str = DEFAULT_CLUSTER_NAME,
    *,
    size: str = DEFAULT_INSTANCE_TYPE,
    min_instances: int = DEFAULT_MIN_INSTANCES,
    max_instances: int = DEFAULT_MAX_INSTANCES,
) -> Any:
    """The GPU compute cluster (an ``AmlCompute``) that runs the batch jobs."""
    from azure.ai.ml.entities import AmlCompute

    if not 0 <= min_instances <= max_instances or max_instances < 1:
        raise ConfigError(
            f"need 0 <= min_instances <= max_instances and max_instances >= 1, got "
            f"{min_instances} and {max_instances}"
        )
    return AmlCompute(
        name=_check_name("cluster", name),
        description=f"GPU cluster for {MODEL_NAME} batch inference",
        size=size,
        min_instances=min_instances,
        max_instances=max_instances,
    )


@needs("deploy")
def build_batch_endpoint(name: str | None = None, *, description: str | None = None) -> Any:
    """The batch endpoint (a ``BatchEndpoint``); ``name`` defaults to a unique one."""
    from azure.ai.ml.entities import BatchEndpoint

    return BatchEndpoint(
        name=_check_name("endpoint", name or unique_endpoint_name()),
        description=description or f"A batch endpoint for {MODEL_NAME} grounded reports.",
        tags={"type": MODEL_NAME},
    )


@needs("deploy")
def build_batch_deployment(
    endpoint_name: str,
    model: Any,
    *,
    name: str = DEFAULT_DEPLOYMENT_NAME,
    compute: str = DEFAULT_CLUSTER_NAME,
    instance_count: int = DEFAULT_INSTANCE_COUNT,
    max_concurrency_per_instance: int = DEFAULT_MAX_CONCURRENCY_PER_INSTANCE,
    mini_batch_size: int = DEFAULT_MINI_BATCH_SIZE,
    max_retries: int = DEFAULT_MAX_RETRIES,
    timeout: int = DEFAULT_MINI_BATCH_TIMEOUT,
) -> Any:
    """The ``ModelBatchDeployment`` with the official notebook's settings.

    ``model``: the registry model (from :func:`cxr_widgets.deploy.find_model`)
    or its asset id. Each mini-batch is ``mini_batch_size`` shard files of up
    to 10 studies; raise ``timeout`` with it.
    """
    from azure.ai.ml.constants import BatchDeploymentOutputAction
    from azure.ai.ml.entities import (
        BatchRetrySettings,
        ModelBatchDeployment,
        ModelBatchDeploymentSettings,
    )

    for label, value in (
        ("instance_count", instance_count),
        ("max_concurrency_per_instance", max_concurrency_per_instance),
        ("mini_batch_size", mini_batch_size),
        ("timeout", timeout),
    ):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{label} must be a positive integer, got {value!r}")
    return ModelBatchDeployment(
        name=_check_name("deployment", name),
        description=f"A deployment of {MODEL_NAME}",
        endpoint_name=endpoint_name,
        model=model if isinstance(model, str) else _model_reference(model),
        compute=compute,
        settings=ModelBatchDeploymentSettings(
            max_concurrency_per_instance=max_concurrency_per_instance,
            mini_batch_size=mini_batch_size,
            instance_count=instance_count,
            output_action=BatchDeploymentOutputAction.APPEND_ROW,
            output_file_name=OUTPUT_FILE_NAME,
            retry_settings=BatchRetrySettings(max_retries=max_retries, timeout=timeout),
            logging_level=DEFAULT_LOGGING_LEVEL,
        ),
    )


@needs("deploy")
def dry_run_batch(cluster: Any, endpoint: Any, deployment: Any) -> str:
    """The cluster, endpoint and deployment as YAML (three documents); nothing is sent."""
    import yaml

    documents = []
    for entity, schema in (
        (cluster, COMPUTE_SCHEMA),
        (endpoint, BATCH_ENDPOINT_SCHEMA),
        (deployment, BATCH_DEPLOYMENT_SCHEMA),
    ):
        data = _plain(entity._to_dict())
        for key in [k for k, v in data.items() if v in ({}, [])]:
            data.pop(key)
        resources, settings = data.get("resources"), data.get("settings")
        if isinstance(resources, dict) and isinstance(settings, dict):
            # The SDK writes the count twice but refuses to load both (YAML puts it in resources).
            settings.pop("instance_count", None)
            if resources.get("properties") == {}:
                resources.pop("properties")
        documents.append({"$schema": schema, **data})
    header = (
        "# Dry run: nothing was sent to Azure.\n"
        "# Documents: the compute cluster, the batch endpoint, its deployment. With the az CLI:\n"
        "#   az ml compute create -f cluster.yml\n"
        "#   az ml batch-endpoint create -f endpoint.yml\n"
        "#   az ml batch-deployment create -f deployment.yml --set-default\n"
    )
    return header + yaml.safe_dump_all(documents, sort_keys=False, default_flow_style=False)


def deploy_batch(
    ml_client: Any,
    cluster: Any,
    endpoint: Any,
    deployment: Any,
    *,
    progress: bool | Progress = True,
    poll_interval: float = 30.0,
) -> Any:
    """Create the cluster (unless it exists), the endpoint, the deployment; make it the default.

    Quota and permission failures become a :class:`DeploymentError` in plain words.
    """
    report = _reporter(progress)
    started = time.monotonic()
    existing = {c.name for c in ml_client.compute.list()}
    steps: list[tuple[str, Any]] = []
    if cluster.name not in existing:
        steps.append((f"cluster {cluster.name}", lambda: ml_client.begin_create_or_update(cluster)))
    else:
        report(f"cluster {cluster.name} exists; using it")
    steps.append(
        (f"batch endpoint {endpoint.name}", lambda: ml_client.begin_create_or_update(endpoint))
    )
    steps.append(
        (f"deployment {deployment.name}", lambda: ml_client.begin_create_or_update(deployment))
    )
    for what, start in steps:
        report(f"creating {what} ...")
        _step(start, f"creating {what}", report, poll_interval, started, instance_type=cluster.size)
    try:
        current = ml_client.batch_endpoints.get(endpoint.name)
    except Exception as exc:
        raise deployment_error(exc, "setting the default deployment") from None
    if current.defaults is None or isinstance(current.defaults, dict):
        # A local entity holds a dict (or nothing); one read from Azure holds a REST object.
        current.defaults = {**(current.defaults or {}), "deployment_name": deployment.name}
    else:
        current.defaults.deployment_name = deployment.name
    _step(
        lambda: ml_client.batch_endpoints.begin_create_or_update(current),
        "setting the default deployment",
        report,
        poll_interval,
        started,
    )
    report(f"ready: batch endpoint {endpoint.name}, deployment {deployment.name}")
    return current


@needs("deploy")
def upload_shards(
    ml_client: Any, shard_set: ShardSet, name: str, *, version: str | None = None
) -> Any:
    """Upload the shards' input folder as a ``uri_folder`` data asset; returns the asset."""
    from azure.ai.ml.constants import AssetTypes
    from azure.ai.ml.entities import Data

    asset = Data(
        name=name,
        version=version,
        path=str(shard_set.input_folder),
        type=AssetTypes.URI_FOLDER,
        description=f"{shard_set.studies} studies in {len(shard_set.shards)} shards for {MODEL_NAME}",
    )
    try:
        return ml_client.data.create_or_update(asset)
    except Exception as exc:
        raise deployment_error(exc, f"uploading {shard_set.input_folder}") from None


@needs("deploy")
def job_input(path: str) -> Any:
    """An ``Input`` of type ``uri_folder`` for a data asset id or datastore path (azureml://...)."""
    from azure.ai.ml import Input
    from azure.ai.ml.constants import AssetTypes

    return Input(type=AssetTypes.URI_FOLDER, path=path)


def submit(
    ml_client: Any, endpoint_name: str, data: Any, *, deployment_name: str | None = None
) -> Any:
    """Start a job on the endpoint over ``data`` (a data asset or an ``azureml://`` path)."""
    path = data if isinstance(data, str) else getattr(data, "id", None) or data.path
    try:
        return ml_client.batch_endpoints.invoke(
            endpoint_name=endpoint_name, deployment_name=deployment_name, input=job_input(path)
        )
    except Exception as exc:
        raise deployment_error(exc, f"submitting a job to {endpoint_name}") from None


def _scoring_job(ml_client: Any, job_name: str) -> Any:
    children = list(ml_client.jobs.list(parent_job_name=job_name))
    return children[0] if children else None


def logs_hint(job: Any) -> str:
    """Where a failed job's logs are."""
    url = getattr(job, "studio_url", None)
    where = (
        f"open {url} (Outputs + logs > logs/user/)" if url else "open the job in Azure ML studio"
    )
    return (
        f"{where}; or download them with ml_client.jobs.download(name={job.name!r}, "
        "all=True) and read logs/user/ (error/ and stdout/ per node)"
    )


def follow(
    ml_client: Any,
    job_name: str,
    *,
    poll_interval: float = 30.0,
    progress: bool = True,
    timeout: float | None = None,
) -> Any:
    """Wait for a job, showing its status (tqdm: a bar in a terminal, a widget in a notebook).

    Returns the finished job; a failed or cancelled job raises
    :class:`DeploymentError` saying where its logs are.
    """
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=None, desc=f"job {job_name}", bar_format="{desc}: {postfix} [{elapsed}]")
    started = time.monotonic()
    try:
        while True:
            job = ml_client.jobs.get(job_name)
            if bar is not None:
                bar.set_postfix_str(job.status)
            if job.status in FINAL_STATES:
                break
            if timeout is not None and time.monotonic() - started > timeout:
                raise DeploymentError(
                    f"job {job_name} is still {job.status} after {timeout:g} s; it goes on in "
                    "Azure: follow it again later, or cancel it with "
                    f"ml_client.jobs.begin_cancel({job_name!r})"
                )
            time.sleep(poll_interval)
    finally:
        if bar is not None:
            bar.close()
    if job.status != "Completed":
        raise DeploymentError(f"job {job_name} ended {job.status}. Logs: {logs_hint(job)}.")
    return job


def collect(ml_client: Any, job_name: str, download_path: str | Path) -> Path:
    """Download the job's ``score`` output; returns the path of ``predictions.csv``."""
    scoring = _scoring_job(ml_client, job_name) or ml_client.jobs.get(job_name)
    try:
        ml_client.jobs.download(
            name=scoring.name, download_path=str(download_path), output_name=OUTPUT_NAME
        )
    except Exception as exc:
        raise deployment_error(exc, f"downloading the output of job {job_name}") from None
    path = Path(download_path) / "named-outputs" / OUTPUT_NAME / OUTPUT_FILE_NAME
    if not path.is_file():
        raise DeploymentError(
            f"the job's output has no {OUTPUT_FILE_NAME} at {path}; did the deployment use "
            f"output_file_name={OUTPUT_FILE_NAME!r}? Logs: {logs_hint(scoring)}."
        )
    return path


def teardown_batch(
    ml_client: Any,
    endpoint_name: str,
    *,
    cluster_name: str | None = None,
    confirm: str | None = None,
    progress: bool | Progress = True,
) -> None:
    """Delete the batch endpoint (with its deployments) and, if named, the cluster.

    ``confirm`` must repeat ``endpoint_name``: deleting cannot be undone.
    """
    if confirm != endpoint_name:
        raise ConfigError(
            f"to delete batch endpoint {endpoint_name!r}, pass confirm={endpoint_name!r}"
        )
    report = _reporter(progress)
    started = time.monotonic()
    _step(
        lambda: ml_client.batch_endpoints.begin_delete(name=endpoint_name),
        f"deleting {endpoint_name}",
        report,
        30.0,
        started,
    )
    if cluster_name:
        _step(
            lambda: ml_client.compute.begin_delete(cluster_name),
            f"deleting {cluster_name}",
            report,
            30.0,
            started,
        )
    report("deleted")
