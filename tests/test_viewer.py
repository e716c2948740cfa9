"""The image viewer's Python side: what travels, presets, the Python API and bad input.

The browser side (drawing, dragging, zoom) is tested in tests/browser/test_viewer_browser.py.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from cxr_widgets import Box, Finding, Report
from cxr_widgets.errors import CxrWidgetsError
from cxr_widgets.images import decode_uint16, load_pixels
from cxr_widgets.widget.viewer import ReportViewer
from cxr_widgets.widget.viewer_pixels import (
    OVERVIEW_LEVELS,
    PRESETS,
    overview,
    window_to_uint8,
)

REPORT = Report(
    findings=[
        Finding("Opacity.", [Box(0.105, 0.205, 0.405, 0.455)]),
        Finding("Nodule.", [Box(0.205, 0.255, 0.255, 0.305)]),
        Finding("Heart size normal."),
    ],
    image_size=(1841, 1955),
)


@pytest.fixture
def viewer(rg1_path: Path) -> ReportViewer:
    v = ReportViewer()
    v.set_images(str(rg1_path))
    v.set_report(REPORT)
    return v


def detail(v: ReportViewer, **request) -> tuple[dict, bytes]:
    """Ask for a region as the browser does; the message and buffer the kernel sends back."""
    sent: list = []
    v.send = lambda content, buffers=None: sent.append((content, buffers))  # type: ignore[method-assign]
    v._on_custom_msg(v, {"kind": "detail", "id": 7, "view": "frontal", **request}, [])
    assert len(sent) == 1
    content, buffers = sent[0]
    return content, buffers[0]


def test_window_to_uint8_is_linear_rounded_and_inverts() -> None:
    values = np.array([0, 50, 100, 150, 200])
    assert window_to_uint8(values, 100, 100, False).tolist() == [0, 0, 128, 255, 255]
    assert window_to_uint8(values, 100, 100, True).tolist() == [255, 255, 127, 0, 0]


def test_rg1_overview_is_16_bit_within_budget_and_maps_to_the_values(rg1_path: Path) -> None:
    pixels = load_pixels(str(rg1_path))
    ov = overview(pixels)
    meta = ov.meta
    assert (meta["width"], meta["height"]) == (1841, 1955)
    assert max(meta["ow"], meta["oh"]) == 1024
    assert len(ov.data) <= 1_500_000  # the per-study budget before any zoom
    codes = decode_uint16(ov.data, (meta["oh"], meta["ow"]))
    assert int(codes.max()) < OVERVIEW_LEVELS
    assert int(codes.max()) > 255  # more than 8 bits survive
    # Each overview pixel stands for the mean of the image pixels it covers, within one step.
    values = meta["offset"] + meta["step"] * codes.astype(np.float64)
    src = np.asarray(pixels.values, dtype=np.float64)
    block = src[200:204, 300:304].mean()
    row, col = int(201.5 * meta["scale"]), int(301.5 * meta["scale"])
    assert abs(values[row, col] - block) < meta["step"] * 2 + src[196:208, 296:308].std() * 2
    assert meta["window"] == [15000.0, 30000.0] and meta["invert"] is True
    assert meta["spacing"] is None and any("pixel spacing unknown" in n for n in meta["notes"])


def test_presets_are_ordered_windows_in_the_images_values(viewer: ReportViewer) -> None:
    table = viewer.images["frontal"]["presets"]
    assert list(PRESETS) == viewer.presets_order and set(table) == set(PRESETS)
    lo, hi = viewer.images["frontal"]["range"]
    assert table["full"] == [(lo + hi) / 2, hi - lo]
    assert table["file"] == [15000.0, 30000.0]
    # MONOCHROME1: the lungs (dark on screen) are the high values, bone the low ones.
    assert table["lung"][0] > table["mediastinum"][0] > table["bone"][0]
    for name in ("lung", "mediastinum", "bone"):
        assert 0 < table[name][1] < hi - lo


def test_window_preset_invert_and_reset_from_python(viewer: ReportViewer) -> None:
    table = viewer.images["frontal"]["presets"]
    assert viewer.window == (15000.0, 30000.0) and viewer.preset == "file" and viewer.invert
    viewer.preset = "lung"
    assert viewer.window == tuple(table["lung"])
    viewer.window = (9000, 2000)
    assert viewer.preset == "custom"
    viewer.preset = "no such preset"
    assert viewer.preset == "custom" and viewer.window == (9000, 2000)
    viewer.window = (9000, -5)
    assert viewer.window == (9000, 1.0)
    viewer.invert = False
    # The browser reports a drag's end the same way.
    viewer.set_state({"window": [12000.0, 5000.0], "preset": "custom", "camera": {"zoom": 3}})
    assert viewer.window == (12000.0, 5000.0) and viewer.preset == "custom"
    viewer.reset_view()
    assert viewer.window == (15000.0, 30000.0) and viewer.preset == "file" and viewer.invert
    assert viewer.camera["zoom"] == 1 and viewer.measurement == {}


def test_zoom_to_finding_frames_its_boxes(viewer: ReportViewer) -> None:
    viewer.zoom_to_finding(1)
    assert viewer.selected == 1
    x0, y0, x1, y1 = viewer.camera["rect"]
    box = next(b for b in viewer.boxes if b["finding"] == 1)
    assert x0 < box["x0"] < box["x1"] < x1 and y0 < box["y0"] < box["y1"] < y1
    with pytest.raises(CxrWidgetsError, match="not grounded"):
        viewer.zoom_to_finding(2)
    with pytest.raises(IndexError):
        viewer.zoom_to_finding(9)


def test_boxes_are_in_original_pixels(viewer: ReportViewer) -> None:
    got = [(b["x0"], b["y0"], b["x1"], b["y1"]) for b in viewer.boxes]
    want = [b.to_pixels(1841, 1955) for f in REPORT.findings for b in f.boxes]
    assert got == want and (viewer.width, viewer.height) == (1841, 1955)


def test_detail_region_is_exact_at_full_resolution(viewer: ReportViewer, rg1_path: Path) -> None:
    content, data = detail(viewer, x=700, y=900, w=64, h=48, side=64)
    assert (content["x"], content["y"], content["w"], content["h"]) == (700, 900, 64, 48)
    assert content["scale"] == 1 and content["id"] == 7
    codes = decode_uint16(data, (content["oh"], content["ow"]))
    values = content["offset"] + content["step"] * codes.astype(np.float64)
    source = pydicom.dcmread(rg1_path).pixel_array[900:948, 700:764]
    assert np.array_equal(values, source)


def test_detail_region_is_reduced_to_the_side_asked_and_clipped(viewer: ReportViewer) -> None:
    content, _ = detail(viewer, x=1800, y=-20, w=400, h=400, side=100)
    assert (content["x"], content["y"], content["w"], content["h"]) == (1800, 0, 41, 380)
    assert max(content["ow"], content["oh"]) <= 100
    sent: list = []
    viewer.send = lambda content, buffers=None: sent.append(content)  # type: ignore[method-assign]
    viewer._on_custom_msg(viewer, {"kind": "detail", "view": "frontal", "x": 5000, "y": 0}, [])
    viewer._on_custom_msg(viewer, {"kind": "detail", "view": "lateral", "x": 0}, [])
    assert sent == []  # malformed or outside: nothing sent, nothing raised


def test_lateral_and_prior_travel_only_when_shown(rg1_path: Path) -> None:
    v = ReportViewer()
    v.set_images(str(rg1_path), lateral=np.zeros((40, 30), np.uint8), prior=str(rg1_path))
    assert v.views == ["frontal", "lateral", "prior"]
    assert v.frontal_pixels and not v.lateral_pixels and not v.prior_pixels
    total = len(v.frontal_pixels)
    assert total <= 1_500_000
    v._on_custom_msg(v, {"kind": "want", "views": ["lateral"]}, [])
    assert v.lateral_pixels and not v.prior_pixels
    v.arrangement = "views"
    assert v.prior_pixels
    v.arrangement = "nonsense"
    assert v.arrangement == "single"


def test_same_source_is_not_read_twice(rg1_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cxr_widgets.widget.viewer as module

    calls: list = []
    real = module.load_pixels
    monkeypatch.setattr(module, "load_pixels", lambda s, **k: calls.append(s) or real(s, **k))
    v = ReportViewer()
    source = str(rg1_path)
    v.set_images(source)
    data = v.frontal_pixels
    v.set_images(source)
    assert len(calls) == 1 and v.frontal_pixels is data


def test_two_runs_side_by_side(viewer: ReportViewer) -> None:
    other = Report(findings=[Finding("Effusion.", [Box(0.055, 0.605, 0.355, 0.905)])])
    viewer.set_runs([("run 1", other), ("run 2", REPORT)])
    assert viewer.runs == ["run 1", "run 2"]
    viewer.compare = 0
    viewer.arrangement = "runs"
    assert [r["text"] for r in viewer.compare_findings] == ["Effusion."]
    assert len(viewer.compare_boxes) == 1 and len(viewer.boxes) == 2
    assert viewer.compare_findings[0]["color"] == other.color(0)
    viewer.compare = -1
    assert viewer.compare_boxes == [] and viewer.arrangement == "single"


def _png16(shape: tuple[int, int]) -> bytes:
    array = (np.arange(shape[0] * shape[1], dtype=np.uint32) % 4096).reshape(shape)
    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.uint16)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("source", "note"),
    [
        (np.full((300, 400), 7, np.uint16), "every pixel has the value 7"),
        (np.arange(4000, dtype=np.uint16).reshape(1, 4000), "a 4000 x 1 strip"),
        (_png16((600, 500)), "the file gives no window"),
    ],
    ids=["constant", "strip", "png16"],
)
def test_bad_inputs_get_a_view_and_a_note(source: object, note: str) -> None:
    v = ReportViewer()
    v.set_images(source)
    meta = v.images["frontal"]
    assert v.frontal_pixels and meta["window"][1] >= 1
    assert any(note in n for n in meta["notes"]), meta["notes"]


def test_png16_keeps_its_16_bit_values() -> None:
    v = ReportViewer()
    v.set_images(_png16((600, 500)))
    meta = v.images["frontal"]
    assert meta["range"] == [0.0, 4095.0] and meta["step"] == 1.0
    assert meta["invert"] is False


def test_dicom_without_window_starts_at_full_range(rg1_path: Path, tmp_path: Path) -> None:
    ds = pydicom.dcmread(rg1_path)
    del ds.WindowCenter, ds.WindowWidth
    path = tmp_path / "nowindow.dcm"
    ds.save_as(path)
    v = ReportViewer()
    v.set_images(str(path))
    lo, hi = v.images["frontal"]["range"]
    assert v.window == ((lo + hi) / 2, hi - lo)


def test_huge_dicom_travels_as_an_overview(tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parent / "browser"))
    from big_dicom import write_big_dicom

    path = tmp_path / "huge.dcm"
    write_big_dicom(path, 4000, 5000)
    started = time.monotonic()
    v = ReportViewer()
    v.set_images(str(path))
    elapsed = time.monotonic() - started
    meta = v.images["frontal"]
    assert (meta["width"], meta["height"]) == (4000, 5000) and meta["oh"] == 1024
    assert len(v.frontal_pixels) <= 1_500_000
    assert any("full-resolution detail" in n for n in meta["notes"])
    assert elapsed < 60  # a sanity bound against a hang, not a benchmark (bench_viewer.py)


def test_unreadable_image_is_named_and_the_rest_is_kept(rg1_path: Path) -> None:
    v = ReportViewer()
    v.set_images(str(rg1_path), lateral=b"not an image")
    assert v.views == ["frontal"]
    assert any("lateral image not shown" in w for w in v.warnings)
    v.set_images(b"still not an image")
    assert v.views == [] and "frontal image not shown" in v.message


def test_new_frontal_shows_a_preview_then_the_overview_and_keeps_the_lateral(
    rg1_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cxr_widgets.widget.viewer as module

    calls: list = []
    real = module.load_pixels
    monkeypatch.setattr(module, "load_pixels", lambda s, **k: calls.append(s) or real(s, **k))
    lateral = np.zeros((40, 30), np.uint8)
    v = ReportViewer()
    sent: list[tuple[int, bool]] = []
    v.observe(
        lambda c: sent.append((len(c["new"]), "preview" in c["new"].get("frontal", {}))), "images"
    )
    v.set_images(str(rg1_path), lateral=lateral)
    assert sent[0][1] and not sent[-1][1]  # the quick picture first, then the overview
    assert v.images["frontal"]["ow"] == 964 and "preview" not in v.images["frontal"]
    v.set_images(np.full((50, 60), 3, np.uint16), lateral=lateral)
    assert [type(c).__name__ for c in calls] == ["str", "ndarray", "ndarray"]  # lateral once
    assert v.views == ["frontal", "lateral"]
