"""The cxr-widgets command line: help, manifests, runs on the NEMA radiograph, exit codes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from text_files import write

from cxr_widgets.cli import main
from cxr_widgets.manifest import read_manifest
from cxr_widgets.store import ResultStore, load_jsonl

CLI = [sys.executable, "-m", "cxr_widgets.cli"]


# --- help and usage errors ---------------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["serve"], ["run"], ["sample"]])
def test_help_for_each_command(command: list[str]) -> None:
    done = subprocess.run([*CLI, *command, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: cxr-widgets")
    if command == ["run"]:
        assert "--store" in done.stdout and "--scoring-uri" in done.stdout
        assert "manifest columns" in done.stdout
    if command == ["serve"]:
        assert "--port" in done.stdout and "127.0.0.1" in done.stdout


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "cxr-widgets"
    done = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("cxr-widgets ")


@pytest.mark.parametrize(
    ("manifest_text", "expected"),
    [
        (None, "does not exist"),
        ("", "is empty"),
        ("frontal,age\nimages/rg1.dcm,40\n", "unknown column 'age'"),
        (
            "frontal\nimages/missing.dcm\n",
            "row 2: the frontal image 'images/missing.dcm' does not exist",
        ),
    ],
)
def test_bad_manifest_exits_2_with_one_line(
    tmp_path: Path, images: Path, manifest_text: str | None, expected: str
) -> None:
    manifest = tmp_path / "m.csv"
    if manifest_text is not None:
        write(manifest, manifest_text)
    done = subprocess.run(
        [*CLI, "run", str(manifest), "--no-progress"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cxr-widgets run: error:"), done.stderr
    assert expected in lines[0] and "Traceback" not in done.stderr
    assert not (tmp_path / "m.results.sqlite").exists()  # nothing was started


def test_usage_errors_exit_2(
    tmp_path: Path, images: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write(tmp_path / "m.csv", "frontal\nimages/rg1.dcm\n")
    assert main(["run", str(manifest), "--out", str(tmp_path / "x.txt")]) == 2
    assert "use a file name ending in .jsonl or .csv" in capsys.readouterr().err
    assert main(["run", str(manifest), "--batch-size", "11"]) == 2
    assert "at most 10" in capsys.readouterr().err
    assert main(["run", str(manifest), "--demo", "--scoring-uri", "http://127.0.0.1:1/score"]) == 2
    assert "demo backend answers offline" in capsys.readouterr().err
    assert main(["run", str(manifest), "--key", "abc-secret-123"]) == 2
    err = capsys.readouterr().err
    assert "--key is not accepted" in err and "export CXR_ENDPOINT_KEY=" in err
    assert "abc-secret-123" not in err
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(manifest), "--max-in-flight", "0"])
    assert exit_info.value.code == 2
    assert "expected a number >= 1" in capsys.readouterr().err


# --- runs -------------------------------------------------------------------------------------


def test_sample_then_demo_run_writes_outputs(tmp_path: Path) -> None:
    folder = tmp_path / "cxr-sample"
    assert main(["sample", str(folder)]) == 0
    manifest = folder / "manifest.csv"
    studies = read_manifest(manifest)
    assert [s.study_id for s in studies] == ["rg1-frontal", "rg1-indication", "rg1-with-prior"]
    out_csv, out_jsonl = folder / "reports.csv", folder / "reports.jsonl"
    done = subprocess.run(
        [*CLI, "run", str(manifest), "--out", str(out_csv), "--out", str(out_jsonl)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "DEMO: canned findings" in done.stderr and "100%" in done.stderr  # progress bar
    summary = dict(
        line.split(None, 1) if " " in line else (line, "")
        for line in done.stdout.strip().splitlines()
    )
    assert "3" in summary["studies"] and summary["failed"].strip() == "0"
    reports = load_jsonl(out_jsonl)
    assert [r.study_id for r in reports] == ["rg1-frontal", "rg1-indication", "rg1-with-prior"]
    assert all(r.demo and r.findings for r in reports)
    rows = out_csv.read_text().splitlines()
    assert rows[0].startswith("study_id,finding,text") and len(rows) > 3
    with ResultStore(folder / "manifest.results.sqlite") as store:
        assert store.counts() == {"ok": 3, "error": 0, "total": 3}
    again = subprocess.run(
        [*CLI, "run", str(manifest), "--no-progress"], capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0
    assert "skipped (from store)  3" in again.stdout and "requests              0" in again.stdout


@pytest.fixture(scope="module")
def endpoint():
    from cxr_widgets.local.server import LocalEndpoint

    with LocalEndpoint() as running:
        yield running


def test_bad_manifest_sends_nothing(tmp_path: Path, images: Path, endpoint) -> None:
    before = len(endpoint.received())
    good_then_bad = write(
        tmp_path / "m.csv", "frontal,indication\nimages/rg1.dcm,Cough.\nimages/gone.dcm,Fever.\n"
    )
    done = subprocess.run(
        [*CLI, "run", str(good_then_bad), "--scoring-uri", endpoint.scoring_uri],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "row 3" in done.stderr
    assert len(endpoint.received()) == before  # not even the good first row was sent


def test_run_against_an_endpoint_and_exit_1_on_failures(tmp_path: Path, images: Path) -> None:
    from cxr_widgets.local.server import LocalEndpoint

    manifest = write(
        tmp_path / "m.csv",
        "frontal,indication,study_id\n"
        + "".join(f"images/rg1.dcm,Case {i}.,case{i}\n" for i in range(3)),
    )
    # RG1 prepares to ~0.3 MB: an endpoint taking 0.1 MB refuses each (413, not retried).
    with LocalEndpoint(max_request_bytes=100_000) as failing:
        done = subprocess.run(
            [*CLI, "run", str(manifest), "--scoring-uri", failing.scoring_uri, "--no-progress"],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "CXR_ENDPOINT_KEY": ""},
        )
    assert done.returncode == 1, done.stderr
    assert "failed studies:" in done.stdout and "RequestTooLargeError" in done.stdout
    assert "case0: RequestTooLargeError" in done.stdout
    assert "Run the same command again" in done.stdout
    with ResultStore(tmp_path / "m.results.sqlite") as store:
        assert store.counts() == {"ok": 0, "error": 3, "total": 3}


def test_serve_starts_answers_and_stops_on_sigterm(tmp_path: Path, images: Path) -> None:
    from cxr_widgets.local.server import free_port

    port = free_port()
    env = {**os.environ, "HOME": str(tmp_path), "MY_KEY": "k-123-secret"}
    server = subprocess.Popen(
        [*CLI, "serve", "--port", str(port), "--key-env", "MY_KEY", "--latency", "0.01"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        lines = []
        for line in server.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if "Press Ctrl-C to stop" in line:
                break
        assert any(f"http://127.0.0.1:{port}/score" in line for line in lines), lines
        manifest = write(tmp_path / "m.csv", "frontal\nimages/rg1.dcm\n")
        uri = f"http://127.0.0.1:{port}/score"
        done = subprocess.run(
            [*CLI, "run", str(manifest), "--scoring-uri", uri, "--key-env", "MY_KEY"],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert done.returncode == 0, done.stderr
        assert "k-123-secret" not in done.stdout + done.stderr
        server.terminate()
        server.wait(30)
        rest = server.stdout.read()  # type: ignore[union-attr]
        assert "k-123-secret" not in "".join(lines) + rest
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)
        server.stdout.close()  # type: ignore[union-attr]
    with pytest.raises(ConnectionRefusedError):  # the gunicorn child is gone too
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_serve_with_an_unset_key_variable(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--key-env", "SURELY_NOT_SET_ANYWHERE"]) == 2
    assert (
        "SURELY_NOT_SET_ANYWHERE: that environment variable is not set" in capsys.readouterr().err
    )


# --- outputs never overwrite inputs; checked before anything is sent --------------------------


def test_out_paths_are_checked_before_anything_is_sent(
    tmp_path: Path, images: Path, endpoint, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write(tmp_path / "m.csv", "frontal,study_id\nimages/rg1.dcm,a\n")
    original = manifest.read_bytes()
    users = write(tmp_path / "notes.csv", "my,own,spreadsheet\n1,2,3\n")
    before = len(endpoint.received())
    uri = ["--scoring-uri", endpoint.scoring_uri, "--key-env", "CXR_NO_KEY_HERE"]
    for out, expected in [
        (manifest, "is an input of this run"),
        (images / "rg1.dcm", "use a file name ending in .jsonl or .csv"),
        (users, "was not written by cxr-widgets"),
        (tmp_path / "m.results.sqlite", "use a file name ending"),
    ]:
        assert main(["run", str(manifest), *uri, "--out", str(out)]) == 2
        assert expected in capsys.readouterr().err
    assert main(["run", str(manifest), *uri, "--store", str(manifest)]) == 2
    assert "--store" in capsys.readouterr().err
    assert len(endpoint.received()) == before  # nothing was sent
    assert manifest.read_bytes() == original and users.read_text().startswith("my,own")
    assert not (tmp_path / "m.results.sqlite").exists()
    # A missing folder is created before the run; our own export may be replaced.
    out = tmp_path / "new" / "deeper" / "reports.csv"
    assert main(["run", str(manifest), "--no-progress", "--out", str(out)]) == 0
    assert out.read_text().startswith("study_id,finding")
    assert main(["run", str(manifest), "--no-progress", "--out", str(out)]) == 0
    assert main(["run", str(manifest), "--no-progress", "--out", str(users), "--force"]) == 0
    assert users.read_text().startswith("study_id,finding")


def test_sample_never_overwrites_a_users_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    mine = write(folder / "manifest.csv", "frontal,study_id\nmy-own.dcm,patient-1\n")
    assert main(["sample", str(folder)]) == 2
    assert "already exists and differs" in capsys.readouterr().err
    assert mine.read_text().endswith("patient-1\n") and not (folder / "images").exists()
    assert main(["sample", str(folder), "--force"]) == 0
    assert main(["sample", str(folder)]) == 0  # the same sample again: nothing to lose
    assert read_manifest(mine)[0].study_id == "rg1-frontal"


def test_summary_without_out_says_how_to_export(tmp_path: Path, images: Path) -> None:
    manifest = write(tmp_path / "m.csv", "frontal,study_id\nimages/rg1.dcm,a\n")
    done = subprocess.run(
        [*CLI, "run", str(manifest), "--no-progress"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert f"To export: cxr-widgets run {manifest} --out reports.csv" in done.stdout
    assert "\nstored                1 in " in done.stdout


def test_sigterm_stops_a_run_cleanly_and_it_resumes(tmp_path: Path, images: Path) -> None:
    from cxr_widgets.local.faults import FaultConfig
    from cxr_widgets.local.server import LocalEndpoint

    rows = "".join(f"images/rg1.dcm,Case {i}.,c{i}\n" for i in range(120))
    manifest = write(tmp_path / "m.csv", "frontal,indication,study_id\n" + rows)
    store = tmp_path / "m.results.sqlite"
    with LocalEndpoint(faults=FaultConfig(latency=0.3)) as slow:
        command = [*CLI, "run", str(manifest), "--scoring-uri", slow.scoring_uri, "--no-progress"]
        env = {**os.environ, "CXR_ENDPOINT_KEY": ""}
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        deadline = time.monotonic() + 120
        while not _stored(store):
            assert child.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=120)
        assert child.returncode == 130, err
        assert b"run again with the same store" in err and b"Traceback" not in err
        first = _stored(store)
        assert 0 < first < 120
        again = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0, again.stderr
    assert f"skipped (from store)  {first}" in again.stdout
    assert _stored(store) == 120


def _stored(store: Path) -> int:
    if not store.exists():
        return 0
    try:
        with ResultStore(store) as opened:
            return opened.counts()["ok"]
    except Exception:
        return 0


def test_summary_warns_about_burned_in_annotation(
    tmp_path: Path, images: Path, rg1_path: Path, capsys
) -> None:
    import pydicom

    ds = pydicom.dcmread(rg1_path)
    ds.BurnedInAnnotation = "YES"  # the pixels may show a name
    ds.save_as(images / "burned.dcm")
    manifest = write(
        tmp_path / "m.csv",
        "frontal,study_id,indication\nimages/rg1.dcm,a,x\nimages/burned.dcm,named,y\n",
    )
    assert main(["run", str(manifest), "--no-progress", "--no-store"]) == 0
    out = capsys.readouterr().out
    assert "warning: 1 study has burned-in annotation" in out and out.rstrip().endswith("named.")
