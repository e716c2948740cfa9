"""The bad-input table: every bad input tried, and the message the user gets.

Each case below really runs: bad files go through ``build_request`` (as the
widget, the client and run_batch do), manifests through ``read_manifest``,
responses through ``parse_response``, and HTTP failures through
``ReportGenClient`` against the package's LocalEndpoint (real
azureml-inference-server-http) or, for statuses it cannot produce
(403, 404, 408, 424), a loopback test peer that answers with the status and
headers Azure ML sends. :func:`render` turns the outcomes into Markdown with
volatile parts (temporary folders, ports, request ids) normalised; running the
script writes ``docs/bad-inputs.md``. ``tests/test_bad_input_table.py``
regenerates the table and checks that the page matches it byte for byte.

    .venv/bin/python scripts/make_bad_input_table.py [--output docs/bad-inputs.md]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import socket
import struct
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cxr_widgets.images import build_png

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "docs" / "bad-inputs.md"

#: Table order; every case names one of these.
CATEGORIES = (
    "Image files",
    "Studies",
    "Requests",
    "Manifests",
    "Batch runs and result stores",
    "Responses",
    "HTTP failures",
    "Hostile servers and credentials",
    "Evaluation",
    "Image viewer",
    "Study browser and reviews",
)

#: The key of the local endpoint; the client sends a different one for the 401 case.
ENDPOINT_KEY = "bad-input-table-endpoint-key"


@dataclass
class Case:
    """One bad input and what came of it."""

    category: str
    input: str
    error: BaseException | None = None
    note: str = ""  # what the viewer said instead, when nothing was raised

    @property
    def error_class(self) -> str:
        return type(self.error).__name__ if self.error is not None else "(no error)"

    @property
    def message(self) -> str:
        return str(self.error) if self.error is not None else self.note


def attempt(category: str, what: str, run: Callable[[], object]) -> Case:
    """Run ``run`` and keep whatever it raised (nothing raised is recorded too)."""
    try:
        run()
    except Exception as exc:  # the table shows exactly what a user would catch
        return Case(category, what, exc)
    return Case(category, what, None)


# --- files --------------------------------------------------------------------------------


def _png(width: int = 640, height: int = 600) -> bytes:
    import numpy as np
    from PIL import Image

    ramp = np.tile(np.linspace(0, 255, width).astype(np.uint8), (height, 1))
    buffer = io.BytesIO()
    Image.fromarray(ramp).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.open(io.BytesIO(_png())).save(buffer, format="JPEG")
    return buffer.getvalue()


def _png_bomb(side: int) -> bytes:
    """A valid PNG of zeros, under 1 MB, that would inflate to side x side pixels."""
    compressor = zlib.compressobj(9)
    row = bytes(1 + (side + 7) // 8)  # 1-bit grey: the smallest rows
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return build_png([(b"IHDR", header), (b"IDAT", idat), (b"IEND", b"")])


def _apng_with_blank_default() -> bytes:
    """An APNG whose default image (what the model gets) is black; the animation is not."""
    import numpy as np
    from PIL import Image

    frame = Image.open(io.BytesIO(_png()))
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((600, 640), dtype=np.uint8)).save(
        buffer, format="PNG", save_all=True, append_images=[frame], default_image=True
    )
    return buffer.getvalue()


def _pydicom_file(name: str) -> str:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    if path is None:
        raise FileNotFoundError(f"pydicom's test file {name} is missing")
    return str(path)


def _dicom(path: Path, *, frames: int = 1, pixel_data: bool = True) -> Path:
    """A small secondary-capture DICOM (made-up content) written with pydicom."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[path.name])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = 64, 64
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if pixel_data:
        ds.PixelData = np.zeros((frames, 64, 64), dtype="<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def file_cases(work: Path) -> list[Case]:
    from cxr_widgets import Study, build_request

    good = _png()
    text = work / "notes.png"
    text.write_text("This is a text file that was renamed to .png.\n")
    empty = work / "empty.png"
    empty.write_bytes(b"")
    truncated = work / "truncated.png"
    truncated.write_bytes(good[: len(good) // 2])
    corrupt = bytearray(_jpeg())
    corrupt[200:600] = bytes(400)  # wipe the Huffman/quantisation tables
    corrupt_jpeg = work / "corrupt.jpg"
    corrupt_jpeg.write_bytes(bytes(corrupt))
    bomb = work / "bomb.png"
    bomb.write_bytes(_png_bomb(30000))
    pdf = work / "scan.dcm"
    pdf.write_bytes(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n")
    no_pixels = _dicom(work / "no-pixels.dcm", pixel_data=False)
    multi = _dicom(work / "multiframe.dcm", frames=3)
    folder = work / "images"
    folder.mkdir(exist_ok=True)
    fifo = work / "pipe.png"
    os.mkfifo(fifo)  # nobody writes to it: reading it would block for ever
    padded = work / "padded.png"
    with padded.open("wb") as handle:  # sparse: 500 MB that take no disk space
        handle.write(_png(64, 64))
        handle.truncate(500_000_000)
    jpeg12 = work / "jpeg-12bit.dcm"
    jpeg12.write_bytes(Path(_pydicom_file("JPEG-lossy.dcm")).read_bytes())
    apng = work / "blank-default.png"
    apng.write_bytes(_apng_with_blank_default())
    strip = work / "strip.png"
    strip.write_bytes(_png(65535, 1))

    def send(frontal: object) -> Callable[[], object]:
        return lambda: build_request(Study(frontal_image=frontal))

    return [
        attempt("Image files", "text file renamed `.png`", send(text)),
        attempt("Image files", "empty file (0 bytes)", send(empty)),
        attempt("Image files", "PNG cut off half way", send(truncated)),
        attempt("Image files", "JPEG with its tables overwritten", send(corrupt_jpeg)),
        attempt("Image files", "decompression bomb (PNG header 30000x30000)", send(bomb)),
        attempt("Image files", "PDF renamed `.dcm`", send(pdf)),
        attempt("Image files", "DICOM without pixel data", send(no_pixels)),
        attempt("Image files", "multi-frame DICOM (3 frames)", send(multi)),
        attempt("Image files", "path that does not exist", send(work / "missing.png")),
        attempt("Image files", "a directory", send(folder)),
        attempt("Image files", "a named pipe (FIFO) as the image path", send(fifo)),
        attempt("Image files", "`/dev/zero` as the image path", send(Path("/dev/zero"))),
        attempt("Image files", "500 MB file whose header is a 64x64 PNG", send(padded)),
        attempt("Image files", "12-bit JPEG DICOM (pydicom's `JPEG-lossy.dcm`)", send(jpeg12)),
        attempt("Image files", "animated PNG whose default image is blank", send(apng)),
        attempt("Image files", "PNG of 65535 x 1 pixels", send(strip)),
        attempt(
            "Image files",
            "PNG of 640x600 with max_pixels=100000",
            lambda: build_request(Study(frontal_image=good), max_pixels=100_000),
        ),
    ]


# --- studies and requests ---------------------------------------------------------------


def study_cases(work: Path) -> list[Case]:
    from cxr_widgets import Study, build_request

    image = work / "frontal.png"
    image.write_bytes(_png())
    return [
        attempt("Studies", "no frontal image", lambda: Study(frontal_image=None)),
        attempt(
            "Studies",
            "only a lateral image",
            lambda: Study(frontal_image=None, lateral_image=image),
        ),
        attempt("Studies", "frontal image is a number", lambda: Study(frontal_image=42)),
        attempt("Studies", "frontal image is empty bytes", lambda: Study(frontal_image=b"")),
        attempt("Studies", "frontal image is an empty path", lambda: Study(frontal_image="")),
        attempt(
            "Studies",
            "indication is not text (a number)",
            lambda: Study(frontal_image=image, indication=5),  # type: ignore[arg-type]
        ),
        attempt(
            "Studies",
            "a path given where a Study is expected",
            lambda: build_request(str(image)),  # type: ignore[arg-type]
        ),
    ]


def request_cases(work: Path) -> list[Case]:
    from cxr_widgets import EndpointConfig, ReportGenClient, Study, build_request
    from cxr_widgets.samples import sample_path

    image = work / "frontal.png"
    image.write_bytes(_png())
    study = Study(frontal_image=image)
    with_text = Study(frontal_image=image, indication="Cough.")
    rg1 = Study(frontal_image=sample_path("RG1_UNCR.dcm"))
    # Never sent: the size is checked before any connection is made.
    client = ReportGenClient(
        EndpointConfig("http://127.0.0.1:9/score", key_env=None),
        image_options={"full_resolution": True},
    )
    cases = [
        attempt("Requests", "11 studies in one request", lambda: build_request([study] * 11)),
        attempt("Requests", "no studies", lambda: build_request([])),
        attempt(
            "Requests",
            "studies with different column sets in one request",
            lambda: build_request([study, with_text]),
        ),
        attempt(
            "Requests",
            "over the 1.5 MB size budget (RG1 at full resolution)",
            lambda: client.generate(rg1),
        ),
        attempt(
            "Requests",
            "image option below the model's input size (shortest_side=256)",
            lambda: build_request(study, shortest_side=256),
        ),
    ]
    client.close()
    return cases


# --- manifests ----------------------------------------------------------------------------


def manifest_cases(work: Path) -> list[Case]:
    from cxr_widgets.manifest import read_manifest

    folder = work / "manifests"
    folder.mkdir(exist_ok=True)
    (folder / "frontal.png").write_bytes(_png())

    def manifest(name: str, text: str | bytes) -> Path:
        path = folder / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        return path

    empty = manifest("empty.csv", "")
    header_only = manifest("header-only.csv", "frontal,indication\n")
    unknown = manifest("unknown-column.csv", "frontal,diagnosis\nfrontal.png,x\n")
    no_frontal_column = manifest("no-frontal-column.csv", "lateral,indication\nfrontal.png,x\n")
    missing_value = manifest("missing-frontal.csv", "frontal,indication\nfrontal.png,a\n,b\n")
    not_found = manifest("image-not-found.csv", "frontal\nfrontal.png\nmissing/scan.dcm\n")
    extra = manifest("extra-values.csv", "frontal,indication\nfrontal.png,cough, fever\n")
    latin1 = manifest(
        "latin-1.csv", "frontal,indication\nfrontal.png,toux fébrile\n".encode("latin-1")
    )
    os.mkfifo(folder / "pipe.png")
    fifo_image = manifest("fifo-image.csv", "frontal\npipe.png\n")
    device = manifest("device.csv", "frontal\n/dev/zero\n")
    fifo_manifest = folder / "fifo-manifest.csv"
    os.mkfifo(fifo_manifest)
    twice = manifest("twice.csv", "frontal,study_id,indication\nfrontal.png,a,x\nfrontal.png,a,y\n")
    return [
        attempt("Manifests", "file does not exist", lambda: read_manifest(folder / "none.csv")),
        attempt("Manifests", "a folder instead of a file", lambda: read_manifest(folder)),
        attempt("Manifests", "empty file", lambda: read_manifest(empty)),
        attempt("Manifests", "header but no studies", lambda: read_manifest(header_only)),
        attempt("Manifests", "unknown column", lambda: read_manifest(unknown)),
        attempt("Manifests", "no frontal column", lambda: read_manifest(no_frontal_column)),
        attempt("Manifests", "row without a frontal value", lambda: read_manifest(missing_value)),
        attempt("Manifests", "image file not found", lambda: read_manifest(not_found)),
        attempt("Manifests", "unquoted comma in a text", lambda: read_manifest(extra)),
        attempt("Manifests", "not UTF-8 (Latin-1)", lambda: read_manifest(latin1)),
        attempt("Manifests", "image path is a FIFO", lambda: read_manifest(fifo_image)),
        attempt("Manifests", "image path is a device (`/dev/zero`)", lambda: read_manifest(device)),
        attempt("Manifests", "the manifest is a FIFO", lambda: read_manifest(fifo_manifest)),
        attempt("Manifests", "a study id given twice", lambda: read_manifest(twice)),
    ]


# --- batch runs and result stores -----------------------------------------------------------


def batch_cases(work: Path) -> list[Case]:
    import sqlite3

    from cxr_widgets import DemoBackend, Study, run_batch
    from cxr_widgets.cli import check_outputs, write_sample
    from cxr_widgets.client import EndpointConfig, ReportGenClient
    from cxr_widgets.local.faults import FaultConfig
    from cxr_widgets.local.server import LocalEndpoint
    from cxr_widgets.report import Finding, Report
    from cxr_widgets.store import ResultStore

    folder = work / "stores"
    folder.mkdir()
    other = folder / "other-app.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE contacts (name TEXT, phone TEXT)")
    conn.close()
    damaged = folder / "damaged.sqlite"
    with ResultStore(damaged) as store:
        store.put_many_ok(
            [(f"k{i}", Report(findings=[Finding("x" * 500, [])] * 20), f"s{i}") for i in range(40)]
        )
    data = bytearray(damaged.read_bytes())
    data[4096:8192] = b"\xff" * 4096
    damaged.write_bytes(bytes(data))

    def read_damaged() -> None:
        with ResultStore(damaged) as opened:
            list(opened.results())

    def full_disk() -> None:
        with ResultStore(folder / "full.sqlite") as store:
            pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
            store._conn.execute(f"PRAGMA max_page_count={pages}")
            store.put_many_ok([("k", Report(findings=[Finding("x" * 9000, [])]), "s")])

    manifest = folder / "manifest.csv"
    manifest.write_text("frontal\nfrontal.png\n", encoding="utf-8")
    users = folder / "notes.csv"
    users.write_text("my,own,notes\n", encoding="utf-8")
    inputs = {manifest.resolve()}
    sample = work / "sample"
    sample.mkdir()
    (sample / "manifest.csv").write_text("frontal\nmy-own-scan.dcm\n", encoding="utf-8")

    def storm() -> None:
        studies = [Study(_png(64 + i, 64), study_id=f"s{i}") for i in range(12)]
        faults = FaultConfig(rate_429=1.0, retry_after=0.01)
        with LocalEndpoint(faults=faults) as busy:
            config = EndpointConfig(busy.scoring_uri, key_env=None, max_retries=1)
            with ReportGenClient(config) as client:
                run_batch(studies, client, progress=False, batch_size=1, max_in_flight=1)

    return [
        attempt(
            "Batch runs and result stores",
            "`--store` is another program's SQLite database",
            lambda: ResultStore(other),
        ),
        attempt(
            "Batch runs and result stores", "a damaged store (a page overwritten)", read_damaged
        ),
        attempt("Batch runs and result stores", "the disk fills during a write", full_disk),
        attempt(
            "Batch runs and result stores",
            "`--out` is the manifest",
            lambda: check_outputs([str(manifest)], inputs, None, False),
        ),
        attempt(
            "Batch runs and result stores",
            "`--out` is a file cxr-widgets did not write",
            lambda: check_outputs([str(users)], inputs, None, False),
        ),
        attempt(
            "Batch runs and result stores",
            "`cxr-widgets sample` into a folder with another manifest",
            lambda: write_sample(sample),
        ),
        attempt("Batch runs and result stores", "every request answered 429", storm),
        attempt(
            "Batch runs and result stores",
            "`max_in_flight=0` (a cap of no requests)",
            lambda: run_batch([Study(_png(64, 64))], DemoBackend(), max_in_flight=0),
        ),
        attempt(
            "Batch runs and result stores",
            "`max_in_flight=-4`",
            lambda: run_batch([Study(_png(64, 64))], DemoBackend(), max_in_flight=-4),
        ),
    ]


# --- responses ----------------------------------------------------------------------------


RESPONSES: tuple[tuple[str, object, int], ...] = (
    ("not JSON (an HTML error page)", b"<html><body>502 Bad Gateway</body></html>", 1),
    ("JSON without `output`", {"result": [["The heart size is normal.", None]]}, 1),
    ("`output` is not a list", {"output": {"text": "The heart size is normal."}}, 1),
    ("`output` is a string that is not JSON", [{"output": "The heart size is normal."}], 1),
    (
        "two reports for one study",
        [{"output": '[["Normal.", null]]'}, {"output": '[["Normal.", null]]'}],
        1,
    ),
    ("one report for two studies", [{"output": '[["Normal.", null]]'}], 2),
    ("NaN coordinate", '{"output": [["Effusion.", [[NaN, 0.5, 0.7, 0.9]]]]}', 1),
    ("coordinate out of range (1.5)", {"output": [["Effusion.", [[0.1, 0.5, 1.5, 0.9]]]]}, 1),
    ("x_min > x_max", {"output": [["Effusion.", [[0.8, 0.5, 0.2, 0.9]]]]}, 1),
    ("box with three numbers", {"output": [["Effusion.", [[0.1, 0.5, 0.9]]]]}, 1),
    ("coordinate is a string", {"output": [["Effusion.", [["0.1", 0.5, 0.7, 0.9]]]]}, 1),
    ("finding text is not a string", {"output": [[42, None]]}, 1),
    ("finding is not [text, boxes]", {"output": [["Effusion."]]}, 1),
    ("deeply nested JSON (100,000 levels)", "[" * 100_000 + "]" * 100_000, 1),
)


def response_cases() -> list[Case]:
    from cxr_widgets import parse_response

    return [
        attempt("Responses", what, lambda b=body, n=n: parse_response(b, n_studies=n))
        for what, body, n in RESPONSES
    ]


# --- HTTP ---------------------------------------------------------------------------------

#: What the loopback test peer answers, by path: status, headers, body, seconds to wait.
#: Bodies and headers follow Azure ML's (its troubleshooting page for online endpoints:
#: x-request-id on every answer, ms-azureml-model-error-* on 424).
PEER_ANSWERS: dict[str, tuple[int, dict[str, str], bytes, float]] = {
    "/forbidden/score": (
        403,
        {"Content-Type": "application/json"},
        b'{"message": "Identity does not have permission to score."}',
        0.0,
    ),
    "/no-deployment/score": (
        404,
        {"Content-Type": "application/json"},
        b'{"message": "No valid deployments to route to. Please check that the endpoint has '
        b"at least one deployment with positive weight values or use a deployment specific "
        b'header to route."}',
        0.0,
    ),
    "/timeout/score": (
        408,
        {"Content-Type": "text/plain"},
        b"Request timed out",
        0.0,
    ),
    "/model-error/score": (
        424,
        {
            "Content-Type": "application/json",
            "ms-azureml-model-error-statuscode": "500",
            "ms-azureml-model-error-reason": "model_error",
        },
        b'{"message": "An unexpected error occurred in scoring script."}',
        0.0,
    ),
    "/busy-long/score": (
        429,
        {"Content-Type": "application/json", "Retry-After": "30"},
        b'{"message": "Too many pending requests."}',
        0.0,
    ),
    "/html/score": (
        200,
        {"Content-Type": "text/html"},
        b"<html><body>Welcome to nginx!</body></html>",
        0.0,
    ),
    "/slow/score": (200, {"Content-Type": "application/json"}, b"[]", 3.0),
}


class _Peer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        return None  # clients that time out hang up on purpose


@contextlib.contextmanager
def test_peer(
    answers: dict[str, tuple[int, dict[str, str], bytes, float]] | None = None,
) -> Iterator[str]:
    """A loopback HTTP server answering ``answers`` (PEER_ANSWERS); yields its base URL."""
    answers = PEER_ANSWERS if answers is None else answers

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            return None

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, headers, body, delay = answers[self.path]
            if delay:
                time.sleep(delay)
            self.send_response(status)
            for name, value in {**headers, "x-request-id": str(uuid.uuid4())}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = _Peer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port that is bound but not listening: connecting is refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def http_cases(work: Path) -> list[Case]:
    from cxr_widgets import EndpointConfig, ReportGenClient, Study

    image = work / "frontal.png"
    image.write_bytes(_png())
    study = Study(frontal_image=image)
    fast = {"backoff_factor": 0.01, "backoff_max": 0.05, "key_env": None}

    def call(uri: str, **options: Any) -> Callable[[], object]:
        def run() -> object:
            with ReportGenClient(EndpointConfig(uri, **{**fast, **options})) as client:
                return client.generate(study)

        return run

    cases: list[Case] = []
    with test_peer() as peer:
        cases += [
            attempt(
                "HTTP failures",
                "403 Forbidden (no scoring permission)",
                call(f"{peer}/forbidden/score", key="a-key"),
            ),
            attempt(
                "HTTP failures",
                "404 Not Found (no deployment takes traffic)",
                call(f"{peer}/no-deployment/score", key="a-key"),
            ),
            attempt(
                "HTTP failures", "408 Request Timeout", call(f"{peer}/timeout/score", key="a-key")
            ),
            attempt(
                "HTTP failures",
                "424 model error (`ms-azureml-model-error-*` headers)",
                call(f"{peer}/model-error/score", key="a-key"),
            ),
            attempt(
                "HTTP failures",
                "429 with Retry-After: 30 beyond a 5 s deadline",
                call(f"{peer}/busy-long/score", key="a-key", deadline=5.0),
            ),
            attempt(
                "HTTP failures",
                "200 with an HTML page instead of JSON",
                call(f"{peer}/html/score", key="a-key"),
            ),
            attempt(
                "HTTP failures",
                "no answer within the read timeout (1 s)",
                call(f"{peer}/slow/score", key="a-key", read_timeout=1.0),
            ),
        ]
    with refused_port() as port:
        cases.append(
            attempt(
                "HTTP failures",
                "connection refused (nothing listens)",
                call(f"http://127.0.0.1:{port}/score", max_retries=2),
            )
        )
    cases += local_endpoint_cases(call, study)
    return cases


def local_endpoint_cases(call: Callable[..., Callable[[], object]], study: Any) -> list[Case]:
    """What the real local endpoint (azureml-inference-server-http) answers: 400, 401, 413,
    and injected 429, 503 and dropped connections (one endpoint per fault, ~0.5 s each)."""
    from cxr_widgets import EndpointConfig, ReportGenClient, Study
    from cxr_widgets.contract import PreparedRequest, prepare_request
    from cxr_widgets.local.faults import FaultConfig
    from cxr_widgets.local.server import LocalEndpoint
    from cxr_widgets.samples import sample_path

    def send_not_an_image(uri: str) -> Callable[[], object]:
        def run() -> object:
            prepared = prepare_request(study)
            payload = json.loads(json.dumps(prepared.payload))
            payload["input_data"]["data"][0][0] = "R0lGODlhAQABAAAAACw="  # a GIF, base64
            config = EndpointConfig(uri, key=ENDPOINT_KEY, key_env=None)
            with ReportGenClient(config) as client:
                return client.send(PreparedRequest(payload, prepared.studies))

        return run

    def too_large(uri: str) -> Callable[[], object]:
        def run() -> object:
            config = EndpointConfig(uri, key=ENDPOINT_KEY, key_env=None, max_request_bytes=None)
            options = {"full_resolution": True}
            with ReportGenClient(config, image_options=options) as client:
                return client.generate(Study(frontal_image=sample_path("RG1_UNCR.dcm")))

        return run

    cases: list[Case] = []
    with LocalEndpoint(key=ENDPOINT_KEY) as endpoint:
        uri = endpoint.scoring_uri
        cases += [
            attempt(
                "HTTP failures",
                "400 from the local endpoint (the image value is a GIF)",
                send_not_an_image(uri),
            ),
            attempt(
                "HTTP failures",
                "401 wrong key (local endpoint)",
                call(uri, key="not-the-endpoint-key"),
            ),
            attempt("HTTP failures", "401 no key sent (local endpoint)", call(uri)),
            attempt(
                "HTTP failures",
                "413 over the endpoint's 1.5 MB limit (client budget off, RG1 at full size)",
                too_large(uri),
            ),
        ]
    faults = {
        "429 on every attempt (local endpoint), 2 retries": FaultConfig(
            rate_429=1.0, retry_after=0
        ),
        "503 on every attempt (local endpoint), 2 retries": FaultConfig(rate_503=1.0),
        "connection dropped on every attempt (local endpoint), 2 retries": FaultConfig(
            rate_drop=1.0
        ),
    }
    for what, fault in faults.items():
        with LocalEndpoint(faults=fault) as endpoint:
            cases.append(attempt("HTTP failures", what, call(endpoint.scoring_uri, max_retries=2)))
    return cases


# --- hostile servers and credentials (a red-team run) -------------------------------------

#: A key a hostile server or proxy quotes back (never a real one).
ECHOED_KEY = "k3y-echoed-by-a-hostile-server-0123456789"


def _hostile_answers() -> dict[str, tuple[int, dict[str, str], bytes, float]]:
    import gzip

    from cxr_widgets.contract import MAX_RESPONSE_BYTES

    json_type = {"Content-Type": "application/json"}
    return {
        "/echo-424/score": (
            424,
            {
                **json_type,
                "ms-azureml-model-error-statuscode": "500",
                "ms-azureml-model-error-reason": f"bad header: Authorization: Bearer {ECHOED_KEY}",
            },
            b"{}",
            0.0,
        ),
        "/echo-400/score": (
            400,
            json_type,
            json.dumps({"error": "x" * 290 + f" Bearer {ECHOED_KEY}"}).encode(),
            0.0,
        ),
        "/wait-a-day/score": (429, {**json_type, "Retry-After": "100000"}, b"{}", 0.0),
        "/garbage-retry-after/score": (
            503,
            {**json_type, "Retry-After": "Invalid HTTP date"},
            b"{}",
            0.0,
        ),
        "/gzip-bomb/score": (
            200,
            {**json_type, "Content-Encoding": "gzip"},
            gzip.compress(b"[" + b" " * (4 * MAX_RESPONSE_BYTES) + b"]", compresslevel=9),
            0.0,
        ),
    }


@contextlib.contextmanager
def dripping_server(every: float = 0.3) -> Iterator[str]:
    """A loopback server that sends its answer's body one byte at a time."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    body = b'[{"output": "[[\\"The heart size is normal.\\", null]]"}]'

    def serve() -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            with sock, contextlib.suppress(OSError):
                data = b""
                while b"\r\n\r\n" not in data:
                    data += sock.recv(65536)
                sock.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode())
                for byte in body:
                    sock.sendall(bytes([byte]))
                    time.sleep(every)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/score"
    finally:
        listener.close()


def hostile_cases(work: Path) -> list[Case]:
    """Attacks of the red-team run: secrets echoed back, huge, slow and bogus answers,
    keys where they must not go, damaged images to the local endpoint."""
    from cxr_widgets import EndpointConfig, ReportGenClient, Study
    from cxr_widgets.contract import PreparedRequest, prepare_request
    from cxr_widgets.local.server import LocalEndpoint

    image = work / "frontal.png"
    image.write_bytes(_png())
    study = Study(frontal_image=image)
    fast = {"backoff_factor": 0.01, "backoff_max": 0.05, "key_env": None}

    def call(uri: str, **options: Any) -> Callable[[], object]:
        def run() -> object:
            with ReportGenClient(EndpointConfig(uri, **{**fast, **options})) as client:
                return client.generate(study)

        return run

    category = "Hostile servers and credentials"
    cases: list[Case] = []
    with test_peer(_hostile_answers()) as peer:
        cases += [
            attempt(
                category,
                "424 whose `ms-azureml-model-error-reason` quotes the key",
                call(f"{peer}/echo-424/score", key=ECHOED_KEY),
            ),
            attempt(
                category,
                "400 quoting the key past the 300 characters a message keeps",
                call(f"{peer}/echo-400/score", key=ECHOED_KEY),
            ),
            attempt(
                category,
                "429 with `Retry-After: 100000` (a day)",
                call(f"{peer}/wait-a-day/score", key="a-key"),
            ),
            attempt(
                category,
                "503 with a `Retry-After` that is not a number or date, 2 retries",
                call(f"{peer}/garbage-retry-after/score", key="a-key", max_retries=2),
            ),
            attempt(
                category,
                "200 with a gzip bomb (32 MB of JSON in 32 KB)",
                call(f"{peer}/gzip-bomb/score", key="a-key"),
            ),
        ]
    with dripping_server() as uri:
        cases.append(
            attempt(
                category,
                "an answer dripped one byte every 0.3 s, 1.5 s deadline",
                call(uri, key="a-key", deadline=1.5),
            )
        )
    cases += [
        attempt(
            category,
            "a host name that does not resolve (tried once)",
            call("https://no-such-endpoint.invalid/score", key="a-key"),
        ),
        attempt(
            category,
            "a key over plain http to a non-loopback host",
            lambda: EndpointConfig("http://scoring.example.org/score", key="a-key"),
        ),
        attempt(
            category,
            "a key with a non-ASCII character (a pasted zero-width space)",
            lambda: EndpointConfig(
                "https://ep.eastus.inference.ml.azure.com/score", key="abc\u200bdef"
            ),
        ),
    ]

    def send_cut_png(uri: str) -> Callable[[], object]:
        def run() -> object:
            import base64

            prepared = prepare_request(study)
            payload = json.loads(json.dumps(prepared.payload))
            payload["input_data"]["data"][0][0] = base64.b64encode(_png()[:8]).decode()
            with ReportGenClient(EndpointConfig(uri, key_env=None)) as client:
                return client.send(PreparedRequest(payload, prepared.studies))

        return run

    with LocalEndpoint() as endpoint:
        cases.append(
            attempt(
                category,
                "a base64 image cut after the PNG signature (local endpoint)",
                send_cut_png(endpoint.scoring_uri),
            )
        )
    return cases


def review_cases(work: Path) -> list[Case]:
    """Results stores opened for browsing and review, and review changes that do not fit."""
    import sqlite3

    from cxr_widgets.browse import StudySources
    from cxr_widgets.report import Box, Finding, Report
    from cxr_widgets.review import ReviewStore
    from cxr_widgets.store import ResultStore

    folder = work / "reviews"
    folder.mkdir()
    other = folder / "other.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE patients (id INTEGER)")
    conn.commit()
    conn.close()
    text = folder / "notes.sqlite"
    text.write_text("not a database " * 100)
    good = folder / "results.sqlite"
    with ResultStore(good) as store:
        report = Report([Finding("Small left effusion.", [Box(0.1, 0.5, 0.4, 0.9)])], study_id="S1")
        store.put_many_ok([("key-1", report, "S1")])
    newer = folder / "newer.sqlite"
    newer.write_bytes(good.read_bytes())
    ReviewStore(newer).close()
    conn = sqlite3.connect(newer)
    conn.execute("UPDATE review_meta SET value='9' WHERE name='schema'")
    conn.commit()
    conn.close()
    reviews = ReviewStore(good, reviewer="reader")
    anonymous = ReviewStore(good)
    sources = StudySources(None, ["S1"])
    cases = [
        attempt(
            "Study browser and reviews", "another program's SQLite file", lambda: ReviewStore(other)
        ),
        attempt(
            "Study browser and reviews", "a text file named `.sqlite`", lambda: ReviewStore(text)
        ),
        attempt(
            "Study browser and reviews",
            "store that does not exist",
            lambda: ReviewStore(folder / "none.sqlite"),
        ),
        attempt(
            "Study browser and reviews", "reviews of a newer layout", lambda: ReviewStore(newer)
        ),
        attempt(
            "Study browser and reviews",
            "verdict `maybe`",
            lambda: reviews.set_verdict("S1", 0, "maybe"),
        ),
        attempt(
            "Study browser and reviews",
            "finding that does not exist",
            lambda: reviews.set_verdict("S1", 5, "agree"),
        ),
        attempt(
            "Study browser and reviews",
            "study without a stored report",
            lambda: reviews.set_verdict("S9", 0, "agree"),
        ),
        attempt(
            "Study browser and reviews",
            "box outside 0..1",
            lambda: reviews.set_boxes("S1", 0, [[0.1, 0.2, 1.4, 0.5]]),
        ),
        attempt(
            "Study browser and reviews",
            "deleting the model's finding",
            lambda: reviews.delete_finding("S1", 0),
        ),
        attempt(
            "Study browser and reviews",
            "no reviewer name",
            lambda: anonymous.set_verdict("S1", 0, "agree"),
        ),
        attempt(
            "Study browser and reviews",
            "export format `xml`",
            lambda: reviews.export(folder / "x.xml", format="xml"),
        ),
        attempt(
            "Study browser and reviews",
            "relocate images to a file, not a folder",
            lambda: sources.relocate(text, ["S1"]),
        ),
    ]
    reviews.close()
    anonymous.close()
    return cases


def evaluation_cases(work: Path) -> list[Case]:
    """``cxr_widgets.evaluate``: what stops an evaluation before it starts, and chat-judge
    failures. (Problems of single studies -- bad boxes, duplicates, a judge that fails one
    study -- do not raise: the study is listed in ``Evaluation.problems`` and counted.)"""
    from cxr_widgets.evaluate import ChatJudge, evaluate
    from cxr_widgets.evaluate.chat import parse_answer
    from cxr_widgets.report import Finding, Report

    cat = "Evaluation"
    reports = [Report(findings=[Finding("The heart size is normal.")], study_id="s1")]
    refs = [{"study_id": "s1", "findings": [{"text": "The heart size is normal."}]}]
    (work / "refs.txt").write_text("s1: normal")
    (work / "broken.json").write_text('[{"study_id": "s1", "findings": [')
    (work / "columns.csv").write_text("id,sentence\ns1,The heart size is normal.\n")
    cache = work / "judge-cache.sqlite"
    cases = [
        attempt(cat, "generated reports given as a number", lambda: evaluate(42, refs)),
        attempt(
            cat,
            "results store path that does not exist",
            lambda: evaluate(work / "missing.sqlite", refs),
        ),
        attempt(cat, "reference file `.txt`", lambda: evaluate(reports, work / "refs.txt")),
        attempt(cat, "reference JSON cut off", lambda: evaluate(reports, work / "broken.json")),
        attempt(
            cat,
            "reference CSV without study_id/text columns",
            lambda: evaluate(reports, work / "columns.csv"),
        ),
        attempt(
            cat,
            "reference entry without study_id",
            lambda: evaluate(reports, [{"findings": []}]),
        ),
        attempt(cat, 'judge="gpt-4"', lambda: evaluate(reports, refs, judge="gpt-4")),
        attempt(
            cat,
            'judge="review" with a reference file (no verdicts)',
            lambda: evaluate(reports, refs, judge="review"),
        ),
        attempt(cat, "bootstrap=-5", lambda: evaluate(reports, refs, bootstrap=-5)),
        attempt(
            cat,
            "chat judge at http://example.org (plain http, not loopback)",
            lambda: ChatJudge("http://example.org/v1/chat/completions", cache=cache),
        ),
        attempt(
            cat,
            "chat judge answers prose instead of JSON",
            lambda: parse_answer("Yes, both say the heart is normal.", 1, 1),
        ),
        attempt(
            cat,
            "chat judge answers for a hypothesis that was not asked",
            lambda: parse_answer('{"results": [{"hypothesis": 2, "entailed": true}]}', 1, 1),
        ),
    ]
    with refused_port() as port:
        judge = ChatJudge(
            f"http://127.0.0.1:{port}/v1/chat/completions", key_env=None, cache=cache, timeout=5
        )
        cases.append(
            attempt(
                cat,
                "chat judge server not running (connection refused)",
                lambda: judge.entail(["a"], ["b"]),
            )
        )
    return cases


def viewer_cases(work: Path) -> list[Case]:
    """Odd images in the image viewer: no error, a picture and a note saying what it did."""
    import numpy as np
    import pydicom
    from PIL import Image

    from cxr_widgets.samples import sample_path
    from cxr_widgets.widget.viewer import ReportViewer

    rg1 = sample_path("RG1_UNCR.dcm")
    ds = pydicom.dcmread(rg1)
    del ds.WindowCenter, ds.WindowWidth
    ds.save_as(work / "nowindow.dcm")
    wide = (np.arange(600 * 500, dtype=np.uint32) % 4096).reshape(600, 500).astype(np.uint16)
    Image.fromarray(wide).save(work / "deep.png")
    sys.path.insert(0, str(ROOT / "tests/browser"))
    from big_dicom import write_big_dicom

    write_big_dicom(work / "huge.dcm", 4000, 5000)
    inputs = {
        "constant image (every pixel 7)": np.full((300, 400), 7, np.uint16),
        "1 x 4000 strip (1 row, 4000 columns)": np.arange(4000, dtype=np.uint16).reshape(1, 4000),
        "16-bit PNG (12 bits used)": work / "deep.png",
        "DICOM without a window (RG1, window removed)": work / "nowindow.dcm",
        "4000 x 5000 DICOM (RG1 resampled, 38 MB)": work / "huge.dcm",
        "RG1 (PixelSpacing 0\\0)": rg1,
    }
    cases = []
    for what, source in inputs.items():
        viewer = ReportViewer()
        case = attempt("Image viewer", what, lambda v=viewer, s=source: v.set_images(s))
        if case.error is None:
            case.note = "; ".join(viewer.images["frontal"]["notes"])
        cases.append(case)
    return cases


# --- the table ------------------------------------------------------------------------------


def collect(work: Path) -> list[Case]:
    """Run every case (in ``work``, a scratch folder) and return the outcomes."""
    return [
        *file_cases(work),
        *study_cases(work),
        *request_cases(work),
        *manifest_cases(work),
        *batch_cases(work),
        *response_cases(),
        *http_cases(work),
        *hostile_cases(work),
        *evaluation_cases(work),
        *viewer_cases(work),
        *review_cases(work),
    ]


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


def normalise(text: str, work: Path) -> str:
    """Replace what changes from run to run: folders, ports, request ids, addresses."""
    for folder in {str(work), str(work.resolve())}:
        text = text.replace(folder, "<dir>")
    if len(os.getcwd()) > 1:  # not "/"
        text = text.replace(os.getcwd(), "<cwd>")
    text = re.sub(r"(127\.0\.0\.1|localhost):\d+", r"\1:<port>", text)
    text = _UUID.sub("<id>", text)
    text = re.sub(r"0x[0-9a-f]{6,}", "<address>", text)
    text = re.sub(r"\(\d+ s in all\)", "(<n> s in all)", text)  # wall time of a timeout
    return text


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").strip()


def render(cases: list[Case], work: Path) -> str:
    """The Markdown page: one table per category (input, error class, message)."""
    lines = [
        "# Bad inputs and the messages they give",
        "",
        "Every bad input below was tried by `scripts/make_bad_input_table.py`, which",
        "wrote this page; `tests/test_bad_input_table.py` runs the cases again and",
        "fails if the page no longer matches. Images go through `build_request` (as in",
        "the widget, `ReportGenClient.generate` and `run_batch`), manifests through",
        "`read_manifest` (as in `cxr-widgets run`), responses through `parse_response`,",
        "and HTTP failures through `ReportGenClient` against the local endpoint",
        "(azureml-inference-server-http on 127.0.0.1) or, for 403, 404, 408, 424 and",
        "slow or non-JSON answers, a loopback test server that answers like Azure ML.",
        "The last table holds the attacks of a red-team run: servers or proxies that",
        "quote the key back, answers that are huge, dripped or bogus, and credentials",
        "sent where they must not go.",
        "Every error is a subclass of `cxr_widgets.CxrWidgetsError`. The image viewer's",
        "table lists odd images that raise nothing: the viewer shows a picture and its",
        "notes say what it did.",
        "",
        "Placeholders: `<dir>` a temporary folder, `<cwd>` the working directory,",
        "`<port>` a port, `<id>` the endpoint's `x-request-id`.",
    ]
    for category in CATEGORIES:
        rows = [c for c in cases if c.category == category]
        lines += ["", f"## {category}", "", "| Input | Error | Message |", "|---|---|---|"]
        for case in rows:
            message = normalise(case.message, work)
            lines.append(f"| {_cell(case.input)} | `{case.error_class}` | {_cell(message)} |")
    return "\n".join(lines) + "\n"


def generate() -> tuple[str, list[Case]]:
    """Run all cases in a fresh scratch folder; the page and the raw outcomes."""
    import warnings

    with tempfile.TemporaryDirectory(prefix="cxr-bad-inputs-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        work = Path(tmp)
        cases = collect(work)
        return render(cases, work), cases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    page, cases = generate()
    args.output.write_text(page, encoding="utf-8")
    print(f"wrote {args.output} ({len(cases)} cases)")
    missing = [c.input for c in cases if c.error is None and not c.note]
    if missing:
        print("no error raised for:", *missing, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
