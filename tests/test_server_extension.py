"""The Jupyter server extension, on a real Jupyter server: files under the root only,
authenticated only, bounded work, no patient tags in any answer."""

from __future__ import annotations

import json
import os
import shutil
import struct
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from browser.jupyter_harness import JupyterLab, isolated_env

from cxr_widgets.images import decode_uint16, load_pixels

PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "PID-8841-XYZ"


def _dicom_with_patient(path: Path) -> None:
    """A small MONOCHROME2 DICOM with patient tags and a pixel spacing."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = "19700101"
    ds.InstitutionName = "Secret General Hospital"
    ds.Modality = "DX"
    ds.ViewPosition = "PA"
    ds.Rows, ds.Columns = 64, 48
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelSpacing = [0.2, 0.25]
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.PixelData = (np.arange(64 * 48, dtype=np.uint16) % 4096).reshape(64, 48).tobytes()
    ds.save_as(path, enforce_file_format=True)


def _huge_png(path: Path) -> None:
    """A PNG whose header claims 60000 x 60000 pixels (3.6 gigapixels)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", 60000, 60000, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 100))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, rg1_path: Path) -> Iterator[JupyterLab]:
    root = tmp_path_factory.mktemp("root")
    outside = tmp_path_factory.mktemp("outside")
    shutil.copy(rg1_path, root / "rg1.dcm")
    shutil.copy(rg1_path, root / "IM0001")  # a DICOM file named as PACS exports name them
    (root / "NOTES").write_text("not an image\n")
    (root / "study").mkdir()
    _dicom_with_patient(root / "study" / "tagged.dcm")
    _huge_png(root / "huge.png")
    os.mkfifo(root / "pipe.dcm")
    shutil.copy(rg1_path, outside / "secret.dcm")
    (root / "link.dcm").symlink_to(outside / "secret.dcm")
    (root / "inside-link.dcm").symlink_to(root / "rg1.dcm")
    lab = JupyterLab(root_dir=root, env=isolated_env(tmp_path_factory.mktemp("home"))).start()
    yield lab
    lab.stop()


def _call(
    lab: JupyterLab, method: str, route: str, body: Any = None, *, token: bool = True
) -> tuple[int, dict[str, str], bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{lab.base_url}/cxr-widgets/api/{route}", data, method=method)
    if token:
        request.add_header("Authorization", f"token {lab.token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_an_unauthenticated_request_is_refused(server: JupyterLab):
    status, _headers, body = _call(server, "GET", "image?path=rg1.dcm", token=False)
    assert status == 403
    assert b"1841" not in body


@pytest.mark.parametrize(
    "path, status, words",
    [
        ("../outside/secret.dcm", 400, ".."),
        ("/etc/passwd", 400, "relative"),
        ("link.dcm", 403, "outside the server's root"),
        ("pipe.dcm", 400, "not a regular file"),
        ("study", 400, "not a regular file"),
        ("missing.dcm", 404, "no file"),
    ],
)
def test_paths_outside_the_root_or_not_regular_files_are_refused(server, path, status, words):
    started = time.monotonic()
    code, _headers, body = _call(server, "GET", f"image?path={urllib.request.quote(path)}")
    assert code == status, body
    assert words in json.loads(body)["message"]
    assert time.monotonic() - started < 5  # a FIFO must not block the server


def test_a_symlink_inside_the_root_is_served(server):
    code, _headers, body = _call(server, "GET", "image?path=inside-link.dcm")
    assert code == 200 and json.loads(body)["width"] == 1841


def test_a_huge_image_is_refused_quickly(server):
    started = time.monotonic()
    code, _headers, body = _call(server, "GET", "image?path=huge.png")
    assert code == 415
    assert "pixels" in json.loads(body)["message"]
    assert time.monotonic() - started < 3


def test_image_info_of_the_nema_radiograph(server, rg1_path):
    code, _headers, body = _call(server, "GET", "image?path=rg1.dcm")
    assert code == 200
    info = json.loads(body)
    expected = load_pixels(rg1_path)
    assert (info["width"], info["height"]) == expected.size
    assert info["invert"] is True  # MONOCHROME1
    assert info["window"] == list(expected.window)
    assert info["spacing"] is None  # RG1's PixelSpacing is 0\0: unknown
    assert info["value_range"] == list(expected.value_range)


def test_pixels_of_a_region_are_the_files_values(server, rg1_path):
    code, headers, body = _call(
        server, "GET", "pixels?path=rg1.dcm&x=600&y=700&w=64&h=32&max_side=64"
    )
    assert code == 200
    width, height = int(headers["X-Cxr-Width"]), int(headers["X-Cxr-Height"])
    assert (width, height, float(headers["X-Cxr-Scale"])) == (64, 32, 1.0)
    codes = decode_uint16(body, (height, width))
    expected = load_pixels(rg1_path)
    offset, step = expected.value_mapping()
    assert np.array_equal(
        offset + step * codes.astype(np.float64), expected.values[700:732, 600:664]
    )


def test_the_overview_is_reduced_to_max_side(server):
    code, headers, _body = _call(server, "GET", "pixels?path=rg1.dcm&max_side=512")
    assert code == 200
    assert max(int(headers["X-Cxr-Width"]), int(headers["X-Cxr-Height"])) == 512


def test_no_patient_tag_in_any_answer(server):
    answers, bodies = [], []
    for route in ("image?path=study/tagged.dcm", "pixels?path=study/tagged.dcm&max_side=64"):
        code, headers, body = _call(server, "GET", route)
        assert code == 200
        bodies.append(body)
        answers.append(body + json.dumps(headers).encode())
    info = json.loads(bodies[0])
    assert info["spacing"] == [0.2, 0.25]
    assert info["metadata"]["modality"] == "DX"
    for answer in answers:
        for secret in (PATIENT_NAME, "Doe", PATIENT_ID, "19700101", "Secret General"):
            assert secret.encode() not in answer


def test_report_notebook_beside_the_files_never_overwrites(server):
    code, _h, body = _call(server, "POST", "notebook", {"paths": ["study/tagged.dcm"]})
    assert code == 200
    first = json.loads(body)["path"]
    assert first == "study/tagged-report.ipynb"
    second = json.loads(_call(server, "POST", "notebook", {"paths": ["study/tagged.dcm"]})[2])[
        "path"
    ]
    assert second == "study/tagged-report-2.ipynb"
    notebook = json.loads((server.root_dir / first).read_text())
    source = notebook["cells"][0]["source"]
    assert "frontal_image='tagged.dcm'" in source and "ReportGenWidget()" in source
    code, _h, body = _call(server, "POST", "notebook", {"paths": ["../outside/secret.dcm"]})
    assert code == 400


def test_a_dicom_file_without_an_extension_is_recognised_by_its_content(server, rg1_path):
    code, _h, body = _call(server, "GET", "image?path=IM0001")
    assert code == 200 and (json.loads(body)["width"], json.loads(body)["height"]) == (1841, 1955)
    code, _h, body = _call(server, "POST", "notebook", {"paths": ["IM0001"]})
    assert code == 200 and json.loads(body)["path"] == "IM0001-report.ipynb"
    source = json.loads((server.root_dir / "IM0001-report.ipynb").read_text())["cells"][0]
    assert "frontal_image='IM0001'" in source["source"]
    code, _h, body = _call(server, "POST", "notebook", {"paths": ["IM0001", "NOTES"]})
    assert code == 400
    assert json.loads(body)["message"] == (
        "NOTES is text, not an image; a study takes PNG, JPEG or DICOM images"
    )
    assert not (server.root_dir / "IM0001-report-2.ipynb").exists()  # nothing was written


def test_tutorials_are_copied_without_overwriting(server):
    (server.root_dir / "learn").mkdir()
    (server.root_dir / "learn" / "04_widget.ipynb").write_text("mine")
    code, _h, body = _call(server, "POST", "tutorials", {"dir": "learn"})
    assert code == 200
    result = json.loads(body)
    assert "04_widget.ipynb" in result["skipped"] and "01_deploy.ipynb" in result["copied"]
    assert (server.root_dir / "learn" / "04_widget.ipynb").read_text() == "mine"
    assert _call(server, "POST", "tutorials", {"dir": "../"})[0] == 400


def test_the_local_endpoint_starts_and_stops(server):
    status = json.loads(_call(server, "POST", "local-endpoint", {"action": "start"})[2])
    assert status["running"] and status["url"].startswith("http://127.0.0.1:")
    with urllib.request.urlopen(status["url"].rsplit("/", 1)[0] + "/", timeout=10) as response:
        assert response.status == 200
    assert json.loads(_call(server, "GET", "local-endpoint")[2])["running"] is True
    assert (
        json.loads(_call(server, "POST", "local-endpoint", {"action": "stop"})[2])["running"]
        is False
    )
