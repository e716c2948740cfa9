"""No key and no patient data leaks: reprs, errors, logs, requests, exports, stores, widgets, notebooks.

A fresh random key (``sk-test-`` + 48 hex digits) is configured both through
``CXR_ENDPOINT_KEY`` and directly; the real local endpoint
(azureml-inference-server-http on 127.0.0.1) is started with it. Every place a
researcher could copy text from is searched for it: reprs, exception texts and
tracebacks on error paths (401, connection refused, 413), every log record at
DEBUG from every logger (azure-core's HTTP logging included), the widget's
synced state and exports, and every tutorial notebook executed and saved with
widget state. Patient data: a copy of the NEMA radiograph RG1 carrying made-up,
distinctive patient tags (and RG1's own tags) is sent, exported, stored and
logged; none of the tags, nor the indication, appears anywhere.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import pickle
import secrets
import socket
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cxr_widgets import EndpointConfig, ReportGenClient, Study
from cxr_widgets.errors import (
    CxrWidgetsError,
    EndpointAuthError,
    EndpointConnectionError,
    RequestTooLargeError,
)
from cxr_widgets.images import png_chunks

pytestmark = [pytest.mark.server, pytest.mark.timeout(300)]

KEY = "sk-test-" + secrets.token_hex(24)
OTHER_KEY = "sk-other-" + secrets.token_hex(24)
KEY_ENV = "CXR_ENDPOINT_KEY"

#: Made-up patient data written into a copy of RG1; none of it may leave the DICOM file.
FAKE_TAGS = {
    "PatientName": "ZZTESTPATIENT^SECRET",
    "PatientID": "ZZPID-7731-SECRET",
    "PatientBirthDate": "19010203",
    "OtherPatientIDs": "ZZOTHER-4410",
    "InstitutionName": "ZZ Secret Institution of Radiology",
    "ReferringPhysicianName": "ZZDOCTOR^SECRETIVE",
    "AccessionNumber": "ZZACC55821",
    "StationName": "ZZSTATION-X",
    "StudyDescription": "ZZ SECRET STUDY DESCRIPTION",
    "ImageComments": "ZZ confidential image comment",
}
#: RG1's own identifying tags (checked to be in the file below), long enough to search for.
RG1_TAGS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "OtherPatientIDs",
    "InstitutionName",
    "InstitutionalDepartmentName",
    "StationName",
    "AccessionNumber",
    "StudyID",
)
INDICATION = "ZZINDICATION: cough since the ZZ-7731 expedition"
TECHNIQUE = "ZZTECHNIQUE portable AP"


# --- helpers ------------------------------------------------------------------------------


def variants(value: str) -> set[str]:
    """A tag value as it could be written: raw, PN carets as spaces, with escaping."""
    found = {value, value.replace("^", " "), value.replace("^", ", ")}
    found |= {json.dumps(v)[1:-1] for v in list(found)}
    # Short numbers (e.g. RG1's OtherPatientIDs 26210) could occur by chance in timestamps.
    return {v for v in found if len(v) >= 5 and not (v.isdigit() and len(v) < 8)}


def assert_absent(haystack: str | bytes, needles: set[str] | list[str], where: str) -> None:
    text = haystack.decode("utf-8", "replace") if isinstance(haystack, bytes) else haystack
    for needle in needles:
        assert needle not in text, f"{needle!r} found in {where}"


def png_chunk_types(data: bytes) -> list[bytes]:
    return [kind for kind, _body in png_chunks(data)]


def error_texts(error: BaseException) -> str:
    """Everything a notebook shows for an uncaught error: message, repr, args, traceback."""
    return "\n".join(
        [str(error), repr(error), repr(error.args), *traceback.format_exception(error)]
    )


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every record from every logger at DEBUG, azure-core's HTTP logging included."""
    noisy = [logging.getLogger(n) for n in ("azure", "urllib3", "cxr_widgets", "requests")]
    levels = [lg.level for lg in noisy]
    for logger in noisy:
        logger.setLevel(logging.DEBUG)
    caplog.set_level(logging.DEBUG)
    try:
        yield caplog
    finally:
        for logger, level in zip(noisy, levels, strict=True):
            logger.setLevel(level)


def log_text(caplog: pytest.LogCaptureFixture) -> str:
    """The formatted records (exception tracebacks included) and their raw arguments."""
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    parts = []
    for record in caplog.records:
        parts.append(formatter.format(record))
        parts.append(repr(record.args))
    return "\n".join(parts)


# --- fixtures: endpoints and the patient-tagged radiograph ---------------------------------


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from cxr_widgets.local.server import LocalEndpoint

    log = tmp_path_factory.mktemp("endpoint") / "requests.jsonl"
    with LocalEndpoint(key=KEY, log_path=log) as running:
        yield running


@pytest.fixture(scope="module")
def other_endpoint() -> Iterator[Any]:
    """Started with a different key: our key gets a 401 here."""
    from cxr_widgets.local.server import LocalEndpoint

    with LocalEndpoint(key=OTHER_KEY) as running:
        yield running


@pytest.fixture(scope="module")
def rg1_tag_values(rg1_path: Path) -> set[str]:
    import pydicom

    ds = pydicom.dcmread(rg1_path, stop_before_pixels=True)
    values = {str(ds.get(name, "") or "") for name in RG1_TAGS}
    assert {"CompressedSamples^RG1", "9RG1", "19400305"} <= values  # what RG1 carries
    return set().union(*(variants(v) for v in values)) | {"9RG1"}


@pytest.fixture(scope="module")
def tagged_rg1(rg1_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RG1 with distinctive made-up patient tags; pixels and header otherwise unchanged."""
    import pydicom

    ds = pydicom.dcmread(rg1_path)
    for name, value in FAKE_TAGS.items():
        setattr(ds, name, value)
    path = tmp_path_factory.mktemp("patient") / "ZZ-tagged-rg1.dcm"
    ds.save_as(path)
    again = pydicom.dcmread(path, stop_before_pixels=True)
    assert str(again.PatientName) == FAKE_TAGS["PatientName"]
    return path


@pytest.fixture(scope="module")
def patient_needles(rg1_tag_values: set[str]) -> set[str]:
    fake = set().union(*(variants(v) for v in FAKE_TAGS.values()))
    return fake | rg1_tag_values


def tagged_study(path: Path) -> Study:
    return Study(frontal_image=path, indication=INDICATION, technique=TECHNIQUE, study_id="s-1")


# --- the key: reprs, errors, logs -----------------------------------------------------------


@pytest.fixture(params=["env", "argument"])
def keyed_config(request: pytest.FixtureRequest, endpoint: Any, monkeypatch: pytest.MonkeyPatch):
    """An EndpointConfig holding KEY, from CXR_ENDPOINT_KEY or passed directly."""
    monkeypatch.setenv(KEY_ENV, KEY)
    if request.param == "env":
        config = EndpointConfig(endpoint.scoring_uri)
        assert config.key_source == f"${KEY_ENV}"
    else:
        config = EndpointConfig(endpoint.scoring_uri, key=KEY, deployment="blue")
        assert config.key_source == "argument"
    assert config.has_key
    return config


def test_key_not_in_reprs_or_settings(keyed_config: EndpointConfig, rg1_path: Path) -> None:
    client = ReportGenClient(keyed_config)
    try:
        report = client.generate(Study(frontal_image=rg1_path))
        texts = [
            repr(keyed_config),
            str(keyed_config),
            f"{keyed_config}",
            keyed_config.describe(),
            json.dumps(keyed_config.to_dict()),
            repr(vars(keyed_config)),
            repr(client),
            str(client),
            repr(vars(client)),
            repr(report),
            str(report),
            report.to_json(),
            report.to_csv(),
            report._repr_html_(),
        ]
        for text in texts:
            assert KEY not in text
        with pytest.raises(TypeError):
            pickle.dumps(keyed_config._key)
        assert KEY.encode() not in pickle.dumps(keyed_config)
    finally:
        client.close()


def test_key_not_in_errors_or_logs(
    keyed_config: EndpointConfig, other_endpoint: Any, rg1_path: Path, all_logs: Any
) -> None:
    study = Study(frontal_image=rg1_path)
    errors: list[BaseException] = []
    with ReportGenClient(keyed_config) as client:  # a successful call, logged
        assert client.generate(study).findings

    # 401: the other endpoint was started with a different key.
    wrong = EndpointConfig(other_endpoint.scoring_uri, key=KEY, max_retries=0)
    with ReportGenClient(wrong) as client, pytest.raises(EndpointAuthError) as info:
        client.generate(study)
    errors.append(info.value)
    # Connection refused.
    with refused_port() as port:
        refused = EndpointConfig(
            f"http://127.0.0.1:{port}/score", key=KEY, max_retries=1, backoff_factor=0.01
        )
        with ReportGenClient(refused) as client, pytest.raises(EndpointConnectionError) as info:
            client.generate(study)
    errors.append(info.value)
    # 413: the client's budget is off, the endpoint refuses 1.8 MB.
    big = EndpointConfig(keyed_config.scoring_uri, key=KEY, max_request_bytes=None)
    options = {"full_resolution": True}
    with (
        ReportGenClient(big, image_options=options) as client,
        pytest.raises(RequestTooLargeError) as info,
    ):
        client.generate(study)
    errors.append(info.value)

    for error in errors:
        assert isinstance(error, CxrWidgetsError)
        assert KEY not in error_texts(error), type(error).__name__
    logged = log_text(all_logs)
    assert KEY not in logged
    # The capture is not blind: azure-core logged each request, Authorization redacted.
    assert "Request URL" in logged and "'Authorization': 'REDACTED'" in logged
    assert str(other_endpoint.port) in logged


def test_key_not_in_the_endpoint_logs(endpoint: Any) -> None:
    """The local endpoint's request log and server output (after the calls above)."""
    assert endpoint.received(), "the endpoint logged no request"
    assert_absent(json.dumps(endpoint.received()), [KEY], "the endpoint's request log")
    assert_absent(endpoint.stderr_tail(lines=100_000), [KEY], "the endpoint's server output")


# --- patient data -----------------------------------------------------------------------------


def test_prepared_images_carry_no_metadata(tagged_rg1: Path, patient_needles: set[str]) -> None:
    from cxr_widgets import prepare_image

    for options in ({}, {"full_resolution": True}):
        prepared = prepare_image(tagged_rg1, **options)
        assert set(png_chunk_types(prepared.png)) == {b"IHDR", b"IDAT", b"IEND"}
        assert prepared.image.info == {} or set(prepared.image.info) <= {"dpi"}
        assert_absent(
            repr(prepared) + prepared.describe() + " ".join(prepared.notes),
            patient_needles,
            "PreparedImage descriptions",
        )


def test_patient_tags_and_texts_not_in_request_exports_store_or_logs(
    tagged_rg1: Path,
    rg1_path: Path,
    patient_needles: set[str],
    endpoint: Any,
    all_logs: Any,
    tmp_path: Path,
) -> None:
    from cxr_widgets import build_request, run_batch
    from cxr_widgets.render import annotated_png
    from cxr_widgets.store import ResultStore

    studies = [tagged_study(tagged_rg1), tagged_study(rg1_path).replace(study_id="s-2")]
    # The request body: texts are the study's own; images are bare PNGs.
    payload = build_request(studies[0])
    body = json.dumps(payload)
    columns = payload["input_data"]["columns"]
    row = dict(zip(columns, payload["input_data"]["data"][0], strict=True))
    png = base64.b64decode(row.pop("frontal_image"))
    assert set(png_chunk_types(png)) == {b"IHDR", b"IDAT", b"IEND"}
    assert row == {"indication": INDICATION, "technique": TECHNIQUE, "comparison": "None"}
    assert_absent(json.dumps(row), patient_needles, "the request's text fields")
    assert_absent(body, {v for v in patient_needles if len(v) >= 8}, "the request body")

    # Generate, export and store through the real endpoint.
    config = EndpointConfig(endpoint.scoring_uri, key=KEY)
    with ReportGenClient(config) as client:
        sent = client.prepare(studies[0])
        (report,) = client.send(sent)
        result = run_batch(studies, client, store=tmp_path / "results.sqlite", progress=False)
    assert all(r is not None for r in result.reports)
    finding_texts = {f.text for f in report.findings if len(f.text) >= 12}
    assert finding_texts

    exports: dict[str, str | bytes] = {
        "report JSON": report.to_json(),
        "report CSV": report.to_csv(),
        "report HTML": report._repr_html_(),
        "report repr": repr(report) + repr(studies) + str(studies[0]),
    }
    picture = annotated_png(sent.studies[0].frontal, report)
    assert set(png_chunk_types(picture)) <= {b"IHDR", b"IDAT", b"IEND", b"PLTE", b"tRNS"}
    exports["annotated PNG"] = picture
    store = ResultStore(tmp_path / "results.sqlite")
    try:
        store.export_jsonl(tmp_path / "results.jsonl")
        store.export_csv(tmp_path / "results.csv")
    finally:
        store.close()
    for path in sorted(tmp_path.iterdir()):
        exports[f"file {path.name}"] = path.read_bytes()
    for where, content in exports.items():
        assert_absent(content, patient_needles, where)
        assert_absent(content, [INDICATION, TECHNIQUE, KEY], where)

    # Logs: no tag, no indication or technique, no report text.
    logged = log_text(all_logs)
    assert "Request URL" in logged  # the capture saw the HTTP calls
    assert_absent(logged, patient_needles, "the logs")
    assert_absent(logged, [INDICATION, TECHNIQUE, *finding_texts], "the logs")
    server_side = json.dumps(endpoint.received()) + endpoint.stderr_tail(lines=100_000)
    assert_absent(server_side, [*patient_needles, INDICATION, TECHNIQUE], "the endpoint's logs")


def test_patient_tags_not_in_image_errors(tagged_rg1: Path, patient_needles: set[str]) -> None:
    """A corrupt copy of the tagged file: the ImageError names the file, never its tags."""
    from cxr_widgets import prepare_image
    from cxr_widgets.errors import ImageError

    data = bytearray(tagged_rg1.read_bytes())
    broken = data[: len(data) // 3]  # pixel data cut off
    odd = bytes(data).replace(b"MONOCHROME1", b"MONOCHROMEX")
    for bad in (bytes(broken), odd):
        with pytest.raises(ImageError) as info:
            prepare_image(bad, name="frontal_image")
        assert_absent(error_texts(info.value), patient_needles, "an ImageError")


# --- notebooks, executed with the key in the environment and saved with widget state ------

PROBE = """
# secrets probe (added by tests/test_secrets.py): which keys did this kernel hold?
import json as _json, os as _os
from pathlib import Path as _Path
from cxr_widgets.config import EndpointConfig as _Config
_found = set()
for _name, _value in list(globals().items()):
    if _name.startswith("_"):
        continue
    if isinstance(_value, str) and len(_value) >= 12 and any(
        _w in _name.lower() for _w in ("key", "token", "secret")
    ):
        _found.add(_value)
    for _candidate in (_value, getattr(_value, "config", None),
                       getattr(getattr(_value, "client", None), "config", None)):
        if isinstance(_candidate, _Config) and _candidate._key is not None:
            _found.add(_candidate._key.reveal())
_Path("secrets-probe-NAME.json").write_text(_json.dumps(
    {"env": _os.environ.get("CXR_ENDPOINT_KEY"), "found": sorted(_found)}))
"""


@pytest.fixture(scope="module")
def executed_notebooks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """Every tutorial run with KEY in the kernel's environment, saved with widget state."""
    import sys

    import nbformat
    from nbclient import NotebookClient

    root = Path(__file__).resolve().parent.parent / "notebooks"
    home = tmp_path_factory.mktemp("nbhome")
    work = tmp_path_factory.mktemp("notebooks")
    kernels = home / "share/jupyter/kernels/cxr-secrets"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "cxr-widgets secrets test",
                "language": "python",
            }
        )
    )
    probes: dict[str, Any] = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(KEY_ENV, KEY)
        for name, value in {
            "HOME": home,
            "JUPYTER_DATA_DIR": home / "share/jupyter",
            "JUPYTER_CONFIG_DIR": home / ".jupyter",
            "JUPYTER_RUNTIME_DIR": home / "runtime",
            "IPYTHONDIR": home / ".ipython",
            "MPLCONFIGDIR": home / ".matplotlib",
        }.items():
            mp.setenv(name, str(value))
        mp.setenv("JUPYTER_PLATFORM_DIRS", "1")
        for source in sorted(root.glob("*.ipynb")):
            nb = nbformat.read(source, as_version=4)
            nb.cells.append(nbformat.v4.new_code_cell(PROBE.replace("NAME", source.stem)))
            NotebookClient(
                nb,
                kernel_name="cxr-secrets",
                timeout=180,
                resources={"metadata": {"path": str(work)}},
                store_widget_state=True,
            ).execute()
            nbformat.write(nb, work / source.name)
            probes[source.name] = json.loads(
                (work / f"secrets-probe-{source.stem}.json").read_text()
            )
    return work, probes


@pytest.mark.slow
def test_no_key_in_executed_notebooks_or_their_files(
    executed_notebooks: tuple[Path, dict[str, Any]],
) -> None:
    work, probes = executed_notebooks
    assert len(probes) >= 4
    keys = {KEY}
    for name, probe in probes.items():
        assert probe["env"] == KEY, f"{name}: the kernel did not see {KEY_ENV}"
        keys |= set(probe["found"])
    # The probe is not blind: notebook 2 makes a throwaway key for its local endpoint.
    assert len(probes["02_invoke.ipynb"]["found"]) >= 1
    needles = keys | {json.dumps(k)[1:-1] for k in keys}
    saved_with_widgets = 0
    for path in sorted(work.rglob("*")):
        if not path.is_file() or path.name.startswith("secrets-probe-"):
            continue
        assert_absent(path.read_bytes(), needles, str(path.relative_to(work)))
        if path.suffix == ".ipynb":
            nb = json.loads(path.read_text())
            saved_with_widgets += "widgets" in nb.get("metadata", {})
    widget_notebook = work / "04_widget.ipynb"
    if widget_notebook.exists():  # the widget tutorial must have been saved WITH its state
        assert "widgets" in json.loads(widget_notebook.read_text())["metadata"]
        assert saved_with_widgets >= 1


# --- a widget session ------------------------------------------------------------------------


def widget_states() -> str:
    """get_state() of every live widget, bytes buffers included (as latin-1 text)."""
    from ipywidgets.widgets.widget import _instances

    def default(value: Any) -> str:
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value).decode("latin-1")
        return repr(value)

    return "\n".join(json.dumps(w.get_state(), default=default) for w in list(_instances.values()))


def test_widget_session_keeps_the_key_and_tags_out_of_state_and_exports(
    endpoint: Any,
    other_endpoint: Any,
    tagged_rg1: Path,
    patient_needles: set[str],
    all_logs: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ipywidgets.embed import embed_minimal_html

    from cxr_widgets import ReportGenWidget

    monkeypatch.delenv(KEY_ENV, raising=False)
    w = ReportGenWidget(export_dir=tmp_path / "exports", demo_latency=0)
    form = w.endpoint
    form.mode.value = "uri"
    form.scoring_uri.value = endpoint.scoring_uri
    form.password.set_state({"value": KEY})  # typed in the browser, then Enter
    assert form.password.value == ""  # moved out of the synced trait at once
    assert KEY not in widget_states()
    form.use_button.click()
    assert getattr(w.client, "config", None) is not None and w.client.config.has_key
    w.load_study(tagged_study(tagged_rg1))
    report = w.generate()
    assert report.findings
    w.select_finding(1)
    paths = w.export()
    assert set(paths) == {"json", "csv", "png"}
    w.test_connection()
    assert w.wait(60)
    assert "OK" in form.result.text

    # Error path: the same key against an endpoint started with another one (401).
    form.scoring_uri.value = other_endpoint.scoring_uri
    form.password.set_state({"value": KEY})
    form.use_button.click()
    with pytest.raises(EndpointAuthError) as info:
        w.generate()
    assert "401" in w.runner.status.error
    w.test_connection()
    assert w.wait(60)
    assert "401" in form.result.text
    assert KEY not in error_texts(info.value)

    state = widget_states()
    # The search is not blind: what the user typed into synced fields is in the state.
    assert other_endpoint.scoring_uri in state and json.dumps(INDICATION) in state
    page = tmp_path / "widget-state.html"
    embed_minimal_html(page, views=[w], title="saved widget state")
    saved = page.read_text(encoding="utf-8")
    assert "application/vnd.jupyter.widget-state+json" in saved
    searched = {"widget states": state, "embedded widget state": saved}
    for path in sorted((tmp_path / "exports").iterdir()):
        searched[f"export {path.name}"] = path.read_bytes().decode("latin-1")
    assert len(searched) >= 5
    for where, text in searched.items():
        assert_absent(text, {KEY, json.dumps(KEY)[1:-1]}, where)
        assert_absent(text, patient_needles, where)
    for where in ("export " + p.name for p in paths.values()):
        assert_absent(searched[where], [INDICATION, TECHNIQUE], where)
    logged = log_text(all_logs)
    assert "Request URL" in logged
    assert_absent(logged, [KEY, *patient_needles, INDICATION, TECHNIQUE], "the logs")
    w.close()
