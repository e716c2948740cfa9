"""Batch endpoints: shards, the scoring script run as a batch job, ingest, and the Azure entities."""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

import numpy as np
import pytest
import yaml

from cxr_widgets import DemoBackend, Study, run_batch
from cxr_widgets.batch_endpoint import (
    ShardSet,
    build_batch_deployment,
    build_batch_endpoint,
    build_cluster,
    dry_run_batch,
    ingest,
    read_predictions,
    read_shard,
    simulate_job,
    write_shards,
)
from cxr_widgets.batch_endpoint import azure as batch_azure
from cxr_widgets.batch_endpoint.shards import INPUT_FOLDER, SHARD_MANIFEST
from cxr_widgets.errors import ConfigError, DeploymentError, RequestError
from cxr_widgets.store import ResultStore

MODEL_ID = "azureml://registries/azureml/models/CxrReportGen/versions/12"


def _studies(n: int, *, seed: int = 0, lateral_every: int = 3) -> list[Study]:
    rng = np.random.default_rng(seed)
    studies = []
    for i in range(n):
        frontal = rng.integers(0, 255, size=(64, 80), dtype=np.uint8)
        lateral = rng.integers(0, 255, size=(48, 48), dtype=np.uint8) if i % lateral_every else None
        studies.append(
            Study(
                frontal_image=frontal,
                lateral_image=lateral,
                indication=f'Cough, day {i}; «quoted» "text"',
                study_id=f"study-{i:03d}",
            )
        )
    return studies


def _findings(report) -> list:
    return [(f.text, [b.as_list() for b in f.boxes]) for f in report.findings]


@pytest.fixture
def shards(tmp_path: Path) -> ShardSet:
    return write_shards(_studies(23), tmp_path / "run", studies_per_shard=4)


# --- shards ---------------------------------------------------------------------------------


def test_shards_hold_every_study_once_in_input_order_with_sortable_names(shards: ShardSet):
    names = [s.name for s in shards.shards]
    assert names == sorted(names)
    assert all(len(n) == len("batch_input_00001.csv") for n in names)
    ids = [sid for s in shards.shards for sid in s.study_ids]
    assert sorted(ids) == sorted(f"study-{i:03d}" for i in range(23))
    assert len(ids) == len(set(ids))
    assert all(1 <= s.rows <= 4 for s in shards.shards)
    # only shard files in the folder the job reads; the manifest sits beside it
    assert sorted(p.name for p in (shards.folder / INPUT_FOLDER).iterdir()) == names
    assert (shards.folder / SHARD_MANIFEST).is_file()


def test_a_shard_file_is_the_official_layout_with_the_study_id_as_index(shards: ShardSet):
    first = shards.shards[0]
    with open(shards.paths([first.name])[0], encoding="utf-8", newline="") as handle:
        header = next(csv.reader(handle))
    assert header[0] == ""  # pandas' index column, as the official notebook writes it
    assert tuple(header[1:]) == first.columns
    ids, columns, rows = read_shard(shards.paths([first.name])[0])
    assert tuple(ids) == first.study_ids
    assert all(len(row) == len(columns) for row in rows)


def test_shard_rows_are_the_images_run_batch_would_send(tmp_path: Path):
    studies = _studies(3)
    options = {"shortest_side": None}
    shard_set = write_shards(studies, tmp_path / "s", image_options=options)
    from cxr_widgets.contract import encode_study

    sent = {s.study_id: encode_study(s, **options).row for s in studies}
    for shard in shard_set.shards:
        ids, _columns, rows = read_shard(shard_set.paths([shard.name])[0])
        for study_id, row in zip(ids, rows, strict=True):
            assert row == sent[study_id]


def test_shards_stay_within_the_request_budget(tmp_path: Path):
    studies = _studies(12, lateral_every=1000)
    one = write_shards(studies[:1], tmp_path / "one").shards[0].nbytes
    budget = int(one * 3.5)  # room for three studies, not four
    shard_set = write_shards(studies, tmp_path / "b", max_shard_bytes=budget)
    assert all(s.rows <= 3 for s in shard_set.shards)
    assert sum(s.rows for s in shard_set.shards) == 12


def test_the_manifest_round_trips(shards: ShardSet):
    loaded = ShardSet.load(shards.folder)
    assert loaded.shards == shards.shards
    assert loaded.identity == shards.identity


@pytest.mark.parametrize(
    "studies, words",
    [
        ([Study(frontal_image=np.zeros((8, 8), np.uint8))], "no study_id"),
        (
            [
                Study(frontal_image=np.zeros((8, 8), np.uint8), study_id="a"),
                Study(frontal_image=np.ones((8, 8), np.uint8), study_id="a"),
            ],
            "must be unique",
        ),
    ],
)
def test_studies_without_unique_ids_are_refused(tmp_path: Path, studies, words):
    with pytest.raises(RequestError, match=words):
        write_shards(studies, tmp_path / "x")


def test_a_folder_with_shards_is_not_overwritten_silently(shards: ShardSet):
    with pytest.raises(ConfigError, match="already holds shards"):
        write_shards(_studies(2), shards.folder)
    again = write_shards(_studies(2), shards.folder, overwrite=True)
    assert len(list((shards.folder / INPUT_FOLDER).iterdir())) == len(again.shards)


def test_a_study_whose_image_fails_is_listed_not_shipped(tmp_path: Path):
    bad = Study(frontal_image=b"not an image at all", study_id="broken")
    shard_set = write_shards([*_studies(2), bad], tmp_path / "f")
    assert [f.study_id for f in shard_set.failures] == ["broken"]
    assert shard_set.studies == 2


# --- a simulated job and ingest ---------------------------------------------------------


def test_simulated_job_then_ingest_gives_what_run_batch_gives(tmp_path: Path, shards: ShardSet):
    job = simulate_job(shards, tmp_path / "out")
    assert job.failed == {}
    assert job.mini_batches == len(shards.shards)  # mini_batch_size 1: one file each
    rows = read_predictions(job.output)
    assert len(rows) == 23
    result = ingest(job.output, shards, tmp_path / "batch.sqlite", demo=True)
    assert result.complete and result.stored == 23, result.summary()

    online = run_batch(_studies(23), DemoBackend(), progress=False)
    expected = {r.study_id: _findings(r) for r in online.reports}
    with ResultStore(tmp_path / "batch.sqlite") as store:
        got = {r.study_id: _findings(r) for r in store.load_reports()}
        assert got == expected
        assert all(r.demo for r in store.load_reports())
        assert store.ok_keys() == {k for s in shards.shards for k in s.keys}


def test_ingest_matches_by_file_and_row_even_when_output_is_shuffled(tmp_path, shards):
    job = simulate_job(shards, tmp_path / "out")
    lines = job.output.read_text(encoding="utf-8").splitlines(keepends=True)
    random.Random(1).shuffle(lines)
    job.output.write_text("".join(lines), encoding="utf-8")
    result = ingest(job.output, shards, tmp_path / "s.sqlite")
    assert result.complete and result.stored == 23
    online = {
        r.study_id: _findings(r)
        for r in run_batch(_studies(23), DemoBackend(), progress=False).reports
    }
    with ResultStore(tmp_path / "s.sqlite") as store:
        assert {r.study_id: _findings(r) for r in store.load_reports()} == online


def test_a_truncated_output_names_the_missing_studies_and_shards(tmp_path, shards):
    job = simulate_job(shards, tmp_path / "out")
    lines = job.output.read_text(encoding="utf-8").splitlines(keepends=True)
    job.output.write_text("".join(lines[:-5]), encoding="utf-8")
    result = ingest(job.output, shards, tmp_path / "t.sqlite")
    assert not result.complete
    missing = [sid for ids in result.missing.values() for sid in ids]
    assert len(missing) == 5 and result.stored == 18
    assert result.incomplete_shards == sorted(result.missing)
    assert "submit these shards again" in result.summary()


def test_duplicated_rows_are_ignored_and_conflicting_ones_refused(tmp_path, shards):
    job = simulate_job(shards, tmp_path / "out")
    lines = job.output.read_text(encoding="utf-8").splitlines(keepends=True)
    first = next(csv.reader([lines[0]]))
    conflicting = [first[0], '[["A different answer.", null]]', first[2]]  # same file and row
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(conflicting)
    job.output.write_text("".join(lines) + lines[2] + buffer.getvalue(), encoding="utf-8")
    result = ingest(job.output, shards, tmp_path / "d.sqlite")
    assert result.duplicates == 1
    conflicted = shards.shards[0].study_ids[int(first[0])]
    assert list(result.conflicts) == [conflicted]
    assert result.stored == 22
    assert shards.shards[0].name in result.incomplete_shards


def test_corrupted_answers_and_unknown_rows_are_named(tmp_path, shards):
    job = simulate_job(shards, tmp_path / "out")
    rows = list(csv.reader(job.output.read_text(encoding="utf-8").splitlines()))
    rows[0][1] = '[["finding", [[0.9, 0.9, 0.1, 0.1]]'  # cut JSON
    rows.append(["99", rows[2][1], rows[2][2]])  # a row number the file does not have
    rows.append(["0", rows[3][1], "batch_input_99999.csv"])  # a file that was not sent
    with open(job.output, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(rows)
    result = ingest(job.output, shards, tmp_path / "c.sqlite")
    assert len(result.invalid) == 1 and len(result.unmatched) == 2
    assert "batch_input_99999.csv" in result.unmatched[1]
    assert result.stored == 22


def test_resubmitting_one_failed_shard_completes_the_run(tmp_path, shards):
    bad_name = shards.shards[2].name
    path = shards.paths([bad_name])[0]
    good_text = path.read_text(encoding="utf-8")
    path.write_text(good_text.replace("iVBOR", "AAAA", 1), encoding="utf-8")  # a broken PNG

    job = simulate_job(shards, tmp_path / "out1")
    assert list(job.failed) == [bad_name]
    store_path = tmp_path / "r.sqlite"
    first = ingest(job.output, shards, store_path, failed_shards=job.failed)
    assert first.incomplete_shards == [bad_name]
    assert first.stored == 23 - shards.shards[2].rows

    path.write_text(good_text, encoding="utf-8")  # the file fixed, sent again alone
    again = simulate_job(shards, tmp_path / "out2", names=first.incomplete_shards)
    assert again.mini_batches == 1
    second = ingest(again.output, ShardSet.load(shards.folder), store_path)
    assert second.stored == shards.shards[2].rows and second.complete
    with ResultStore(store_path) as store:
        assert len(store.ok_keys()) == 23


def test_output_without_file_names_is_refused_for_several_shards(tmp_path, shards):
    job = simulate_job(shards, tmp_path / "out")
    rows = [r[:2] for r in csv.reader(job.output.read_text(encoding="utf-8").splitlines())]
    with open(job.output, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(rows)
    result = ingest(job.output, shards, tmp_path / "n.sqlite")
    assert result.stored == 0 and len(result.unmatched) == 23
    assert "no file name" in result.unmatched[0]


def test_a_missing_predictions_file_says_how_to_get_it(tmp_path, shards):
    with pytest.raises(ConfigError, match="download the job's 'score' output"):
        ingest(tmp_path / "nope.csv", shards, tmp_path / "x.sqlite")


# --- Azure entities with the official settings -----------------------------------------------


def test_the_deployment_has_the_official_notebooks_settings():
    deployment = build_batch_deployment("cxr-batch-abcde", MODEL_ID)
    settings = deployment.settings
    assert deployment.name == "cxr-dpl"
    assert deployment.compute == "cxr-batch-cluster"
    assert settings.max_concurrency_per_instance == 1
    assert settings.mini_batch_size == 1
    assert settings.instance_count == 1
    assert str(settings.output_action).lower().replace("_", "") == "appendrow"
    assert settings.output_file_name == "predictions.csv"
    assert settings.retry_settings.max_retries == 3
    assert settings.retry_settings.timeout == 300
    assert settings.logging_level == "info"
    assert deployment.model == MODEL_ID


def test_the_cluster_and_endpoint_have_the_official_settings():
    cluster = build_cluster()
    assert (cluster.name, cluster.size) == ("cxr-batch-cluster", "Standard_NC24ads_A100_v4")
    assert (cluster.min_instances, cluster.max_instances) == (0, 1)
    endpoint = build_batch_endpoint()
    assert endpoint.name.startswith("cxr-batch-") and len(endpoint.name) == len("cxr-batch-") + 5
    assert build_batch_endpoint().name != endpoint.name


def test_dry_run_yaml_loads_back_into_the_sdk_entities(tmp_path: Path):
    from azure.ai.ml import load_batch_endpoint, load_compute
    from azure.ai.ml.entities._load_functions import load_model_batch_deployment

    cluster = build_cluster()
    endpoint = build_batch_endpoint("cxr-batch-test1")
    deployment = build_batch_deployment(endpoint.name, MODEL_ID)
    text = dry_run_batch(cluster, endpoint, deployment)
    documents = list(yaml.safe_load_all(text))
    assert [d["$schema"].rsplit("/", 1)[1] for d in documents] == [
        "amlCompute.schema.json",
        "batchEndpoint.schema.json",
        "modelBatchDeployment.schema.json",
    ]
    for document, loader, name in zip(
        documents,
        (load_compute, load_batch_endpoint, load_model_batch_deployment),
        ("c.yml", "e.yml", "d.yml"),
        strict=True,
    ):
        path = tmp_path / name
        path.write_text(yaml.safe_dump(document), encoding="utf-8")
        loaded = loader(source=str(path))
        assert loaded.name == document["name"]
    loaded = load_model_batch_deployment(source=str(tmp_path / "d.yml"))
    assert loaded.settings.mini_batch_size == 1
    assert loaded.settings.retry_settings.timeout == 300


def test_bad_settings_are_refused_with_their_name():
    with pytest.raises(ConfigError, match="mini_batch_size"):
        build_batch_deployment("cxr-batch-x", MODEL_ID, mini_batch_size=0)
    with pytest.raises(ConfigError, match="max_instances"):
        build_cluster(max_instances=0)


def test_teardown_needs_the_name_repeated():
    with pytest.raises(ConfigError, match="confirm='cxr-batch-x'"):
        batch_azure.teardown_batch(object(), "cxr-batch-x", confirm="yes")


class _Jobs:
    """The part of ``MLClient.jobs`` that follow() uses, answering a scripted status sequence."""

    def __init__(self, states: list[str]) -> None:
        self.states = states

    def get(self, name: str):
        from azure.ai.ml.entities import PipelineJob

        job = PipelineJob(name=name)
        job._status = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return job


class _Client:
    def __init__(self, states: list[str]) -> None:
        self.jobs = _Jobs(states)


def test_follow_waits_for_the_end_and_names_the_logs_of_a_failed_job():
    done = batch_azure.follow(
        _Client(["Running", "Running", "Completed"]), "job1", poll_interval=0, progress=False
    )
    assert done.status == "Completed"
    with pytest.raises(DeploymentError, match=r"ended Failed.*logs/user"):
        batch_azure.follow(_Client(["Queued", "Failed"]), "job2", poll_interval=0, progress=False)


# --- the command line ----------------------------------------------------------------------


def _sample_manifest(tmp_path: Path) -> Path:
    from cxr_widgets.cli import main

    assert main(["sample", str(tmp_path / "sample")]) == 0
    return tmp_path / "sample" / "manifest.csv"


def test_cli_dry_run_writes_shards_without_a_workspace(tmp_path: Path, capsys):
    from cxr_widgets.cli import main

    manifest = _sample_manifest(tmp_path)
    assert (
        main(["batch-endpoint", "submit", str(manifest), "--dry-run", "--out", str(tmp_path / "s")])
        == 0
    )
    shard_set = ShardSet.load(tmp_path / "s")
    assert shard_set.studies == 3
    assert "nothing was sent" in capsys.readouterr().out


def test_cli_simulated_run_then_collect_into_another_store(tmp_path: Path, capsys):
    from cxr_widgets.cli import main

    manifest = _sample_manifest(tmp_path)
    out, store = tmp_path / "s", tmp_path / "r.sqlite"
    args = ["batch-endpoint", "submit", str(manifest), "--simulate", "--out", str(out)]
    assert main([*args, "--store", str(store)]) == 0
    predictions = out / "outputs" / "predictions.csv"
    assert (
        main(
            [
                "batch-endpoint",
                "collect",
                "--shards",
                str(out),
                "--store",
                str(tmp_path / "b.sqlite"),
                "--predictions",
                str(predictions),
            ]
        )
        == 0
    )
    with ResultStore(store) as a, ResultStore(tmp_path / "b.sqlite") as b:
        assert {r.study_id: _findings(r) for r in a.load_reports()} == {
            r.study_id: _findings(r) for r in b.load_reports()
        }
        assert len(a.ok_keys()) == 3


def test_cli_deploy_dry_run_prints_three_yaml_documents(capsys):
    from cxr_widgets.cli import main

    assert (
        main(["batch-endpoint", "deploy", "--dry-run", "--endpoint-name", "cxr-batch-cli01"]) == 0
    )
    documents = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    assert [d["name"] for d in documents] == ["cxr-batch-cluster", "cxr-batch-cli01", "cxr-dpl"]


def test_cli_submit_needs_an_endpoint_or_an_offline_mode(tmp_path: Path, capsys):
    from cxr_widgets.cli import main

    manifest = _sample_manifest(tmp_path)
    assert main(["batch-endpoint", "submit", str(manifest), "--out", str(tmp_path / "s")]) == 2
    assert "--endpoint-name" in capsys.readouterr().err


class _BatchPoller:
    def __init__(self, result=None, error: Exception | None = None) -> None:
        self._result, self._error = result, error

    def done(self) -> bool:
        return True

    def wait(self, timeout=None) -> None:
        return None

    def result(self):
        if self._error is not None:
            raise self._error
        return self._result


class _Named:
    def __init__(self, name: str) -> None:
        self.name = name


class _BatchEndpoints:
    def __init__(self, store: dict) -> None:
        self.store, self.calls = store, []

    def get(self, name: str):
        return self.store[name]

    def begin_create_or_update(self, endpoint):
        self.calls.append(("default", endpoint.defaults["deployment_name"]))
        return _BatchPoller(endpoint)

    def begin_delete(self, name: str):
        self.calls.append(("delete", name))
        return _BatchPoller()


class _BatchMLClient:
    """The calls deploy_batch makes, recorded; ``fail_on`` raises the given error for one entity."""

    def __init__(self, clusters=(), fail_on: str | None = None, error: Exception | None = None):
        self.created: list[str] = []
        self.endpoints: dict = {}
        self.batch_endpoints = _BatchEndpoints(self.endpoints)
        self.fail_on, self.error = fail_on, error
        outer = self

        class _Compute:
            def list(self):
                return [_Named(n) for n in clusters]

            def begin_delete(self, name):
                outer.created.append(f"delete {name}")
                return _BatchPoller()

        self.compute = _Compute()

    def begin_create_or_update(self, entity):
        kind = type(entity).__name__
        if kind == self.fail_on:
            return _BatchPoller(error=self.error)
        self.created.append(kind)
        if kind == "BatchEndpoint":
            self.endpoints[entity.name] = entity
        return _BatchPoller(entity)


def test_deploy_batch_creates_cluster_endpoint_deployment_and_sets_the_default():
    client = _BatchMLClient()
    endpoint = build_batch_endpoint("cxr-batch-dep01")
    lines: list[str] = []
    batch_azure.deploy_batch(
        client,
        build_cluster(),
        endpoint,
        build_batch_deployment(endpoint.name, MODEL_ID),
        progress=lines.append,
        poll_interval=0,
    )
    assert client.created == ["AmlCompute", "BatchEndpoint", "ModelBatchDeployment"]
    assert client.batch_endpoints.calls == [("default", "cxr-dpl")]
    assert lines[-1].startswith("ready")
    again = _BatchMLClient(clusters=["cxr-batch-cluster"])
    batch_azure.deploy_batch(
        again,
        build_cluster(),
        endpoint,
        build_batch_deployment(endpoint.name, MODEL_ID),
        progress=False,
        poll_interval=0,
    )
    assert again.created == ["BatchEndpoint", "ModelBatchDeployment"]  # the cluster exists


def test_a_quota_failure_of_the_cluster_is_explained_in_plain_words():
    from azure.core.exceptions import HttpResponseError

    error = HttpResponseError(
        message="Operation could not be completed as it results in exceeding approved "
        "Standard NCADSA100v4 Family Cores quota. Insufficient quota."
    )
    client = _BatchMLClient(fail_on="AmlCompute", error=error)
    endpoint = build_batch_endpoint("cxr-batch-dep02")
    with pytest.raises(DeploymentError, match=r"(?s)Not enough quota.*Request more quota"):
        batch_azure.deploy_batch(
            client,
            build_cluster(),
            endpoint,
            build_batch_deployment(endpoint.name, MODEL_ID),
            progress=False,
            poll_interval=0,
        )
    assert client.created == []  # nothing after the failed step


def test_teardown_deletes_the_endpoint_then_the_cluster():
    client = _BatchMLClient()
    batch_azure.teardown_batch(
        client,
        "cxr-batch-x",
        cluster_name="cxr-batch-cluster",
        confirm="cxr-batch-x",
        progress=False,
    )
    assert client.batch_endpoints.calls == [("delete", "cxr-batch-x")]
    assert client.created == ["delete cxr-batch-cluster"]
