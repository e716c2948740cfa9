"""``cxr-widgets batch-endpoint deploy|submit|status|collect``: archive-scale runs on Azure ML.

The same conventions as ``cxr-widgets run``: a CSV manifest in, the same
results store out, keys and tokens never on the command line (the workspace
is reached with ``DefaultAzureCredential``: ``az login``, a managed identity
or environment variables). ``--dry-run`` does everything that needs no Azure.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

EPILOG = """\
offline, no workspace needed:
  cxr-widgets batch-endpoint deploy --dry-run                 # the YAML it would create
  cxr-widgets batch-endpoint submit manifest.csv --dry-run --out shards/
  cxr-widgets batch-endpoint submit manifest.csv --simulate --out shards/ --store r.sqlite

on Azure (a workspace config.json here or above, az login):
  cxr-widgets batch-endpoint deploy --endpoint-name cxr-batch-abcde
  cxr-widgets batch-endpoint submit manifest.csv --out shards/ --endpoint-name cxr-batch-abcde
  cxr-widgets batch-endpoint status JOB --follow
  cxr-widgets batch-endpoint collect JOB --shards shards/ --store r.sqlite
"""


def add_parser(commands: Any, positive_int: Any) -> None:
    """Register ``batch-endpoint`` and its four commands on the main parser's subparsers."""
    parser = commands.add_parser(
        "batch-endpoint",
        help="archive-scale runs on an Azure ML batch endpoint",
        description="Deploy CXRReportGen to an Azure ML batch endpoint, submit a manifest as "
        "CSV shards, follow the job and collect its predictions into a results store.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    steps = parser.add_subparsers(dest="step", metavar="STEP", required=True)

    def workspace(p: argparse.ArgumentParser) -> None:
        p.add_argument("--workspace-config", metavar="PATH", help="the workspace's config.json")

    deploy = steps.add_parser("deploy", help="create the cluster, endpoint and deployment")
    deploy.add_argument("--endpoint-name", metavar="NAME", help="default: cxr-batch-XXXXX")
    deploy.add_argument("--cluster", metavar="NAME", help="default: cxr-batch-cluster")
    deploy.add_argument("--instance-type", metavar="SKU", help="default: Standard_NC24ads_A100_v4")
    deploy.add_argument("--max-instances", type=positive_int, default=1, metavar="N")
    deploy.add_argument("--dry-run", action="store_true", help="print the YAML; send nothing")
    workspace(deploy)

    submit = steps.add_parser("submit", help="write shards from a manifest and start a job")
    submit.add_argument("manifest", metavar="MANIFEST.csv")
    submit.add_argument("--out", metavar="DIR", required=True, help="folder for the shards")
    submit.add_argument("--endpoint-name", metavar="NAME")
    submit.add_argument("--deployment", metavar="NAME", help="default: the endpoint's default")
    submit.add_argument("--dry-run", action="store_true", help="write the shards; send nothing")
    submit.add_argument(
        "--simulate",
        action="store_true",
        help="run the package's batch scoring script over the shards here (canned demo "
        "findings) and collect into --store: the whole path, offline",
    )
    submit.add_argument("--store", metavar="PATH", help="results store for --simulate")
    submit.add_argument("--shortest-side", type=positive_int, metavar="PX")
    submit.add_argument("--overwrite", action="store_true", help="replace shards in --out")
    workspace(submit)

    status = steps.add_parser("status", help="the state of a job")
    status.add_argument("job", metavar="JOB")
    status.add_argument("--follow", action="store_true", help="wait until it ends")
    workspace(status)

    collect = steps.add_parser("collect", help="download a job's predictions into a store")
    collect.add_argument("job", metavar="JOB", nargs="?")
    collect.add_argument("--shards", metavar="DIR", required=True, help="the folder of submit")
    collect.add_argument("--store", metavar="PATH", required=True)
    collect.add_argument(
        "--predictions", metavar="CSV", help="a predictions.csv already downloaded (no Azure)"
    )
    workspace(collect)


def _ml_client(args: argparse.Namespace) -> Any:
    from .deploy import workspace_client

    return workspace_client(args.workspace_config)


def _print_ingest(result: Any) -> int:
    print(result.summary())
    return 0 if result.complete else 1


def run(args: argparse.Namespace) -> int:
    """Carry out ``cxr-widgets batch-endpoint STEP``; returns the exit code."""
    from . import batch_endpoint as be
    from .errors import ConfigError

    if args.step == "deploy":
        from .deploy import DEFAULT_INSTANCE_TYPE, find_model, model_asset_id

        cluster = be.build_cluster(
            args.cluster or be.azure.DEFAULT_CLUSTER_NAME,
            size=args.instance_type or DEFAULT_INSTANCE_TYPE,
            max_instances=args.max_instances,
        )
        endpoint = be.build_batch_endpoint(args.endpoint_name)
        if args.dry_run:
            deployment = be.build_batch_deployment(
                endpoint.name, model_asset_id(), compute=cluster.name
            )
            print(be.dry_run_batch(cluster, endpoint, deployment))
            return 0
        ml_client = _ml_client(args)
        deployment = be.build_batch_deployment(
            endpoint.name, find_model(ml_client), compute=cluster.name
        )
        be.deploy_batch(ml_client, cluster, endpoint, deployment)
        print(f"next: cxr-widgets batch-endpoint submit MANIFEST --endpoint-name {endpoint.name}")
        return 0

    if args.step == "submit":
        from .manifest import read_manifest

        options = {"shortest_side": args.shortest_side} if args.shortest_side else {}
        studies = read_manifest(args.manifest)
        if not (args.dry_run or args.simulate or args.endpoint_name):
            raise ConfigError("give --endpoint-name (or --dry-run / --simulate to stay offline)")
        if args.simulate and not args.store:
            raise ConfigError("--simulate needs --store PATH for the results")
        identity = (
            "simulated batch job (demo findings)"
            if args.simulate
            else f"azureml-batch-endpoint:{args.endpoint_name or 'dry-run'}"
        )
        shard_set = be.write_shards(
            studies, args.out, image_options=options, identity=identity, overwrite=args.overwrite
        )
        print(
            f"wrote {shard_set.studies} studies in {len(shard_set.shards)} shards to "
            f"{shard_set.input_folder}"
        )
        for failure in shard_set.failures:
            print(f"  left out {failure.study_id}: {failure.message}")
        if args.simulate:
            job = be.simulate_job(shard_set, Path(args.out) / "outputs")
            return _print_ingest(
                be.ingest(job.output, shard_set, args.store, failed_shards=job.failed, demo=True)
            )
        if args.dry_run:
            print("dry run: nothing was sent. Upload the folder above as a uri_folder input.")
            return 0
        ml_client = _ml_client(args)
        asset = be.upload_shards(ml_client, shard_set, name=f"{args.endpoint_name}-inputs")
        job = be.submit(ml_client, args.endpoint_name, asset, deployment_name=args.deployment)
        print(
            f"submitted job {job.name}; follow it: cxr-widgets batch-endpoint status {job.name} --follow"
        )
        return 0

    if args.step == "status":
        ml_client = _ml_client(args)
        job = be.follow(ml_client, args.job) if args.follow else ml_client.jobs.get(args.job)
        print(f"job {job.name}: {job.status}")
        return 0 if job.status in ("Completed", "Running", "Queued", "Starting", "Preparing") else 1

    shard_set = be.ShardSet.load(args.shards)
    if args.predictions:
        predictions = Path(args.predictions)
    elif args.job:
        predictions = be.collect(_ml_client(args), args.job, Path(args.shards) / "outputs")
    else:
        raise ConfigError("give the JOB name, or --predictions with a downloaded predictions.csv")
    return _print_ingest(be.ingest(predictions, shard_set, args.store))
