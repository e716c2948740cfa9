"""The image viewer's Python side: what travels, presets, the Python API and bad input.

The browser side (drawing, dragging, zoom) is tested in tests/browser/test_viewer_browser.py.
"""

from __future__ import annotations

import dataclasses
import io
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from cxr_widgets import Box, Finding, Report
from cxr_widgets.errors import CxrWidgetsError
from cxr_widgets.images import decode_uint16, load_pixels
from cxr_widgets.widget.viewer import BoxEdit, ReportViewer, apply_box_edit, box_shapes
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
    v = ReportViewer(editable=True)
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
    codes = decode_uint16(ov.data, (meta["oh"], meta["ow"]), meta["codec"])
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
    codes = decode_uint16(data, (content["oh"], content["ow"]), content["codec"])
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


# --- box editing ------------------------------------------------------------------------

FRAMES = ("center_crop", "full")


def _unit_box(a: float, b: float, c: float, d: float) -> Box:
    (x0, x1), (y0, y1) = sorted((a, c)), sorted((b, d))
    return Box(x0, y0, x1, y1)


@settings(max_examples=400, deadline=None)
@given(
    coords=st.tuples(*[st.floats(0, 1, allow_nan=False)] * 4),
    width=st.integers(1, 5000),
    height=st.integers(1, 5000),
    frame=st.sampled_from(FRAMES),
)
def test_from_pixels_inverts_box_shapes(
    coords: tuple[float, ...], width: int, height: int, frame: str
) -> None:
    box = _unit_box(*coords)
    [shape] = box_shapes(Report(findings=[Finding("x", [box])]), width, height, frame)
    back = Box.from_pixels(shape["x0"], shape["y0"], shape["x1"], shape["y1"], width, height, frame)
    # Rounded to 5 decimals: within half a hundred-thousandth of the frame.
    assert back.as_list() == pytest.approx(box.as_list(), abs=5e-6 + 1e-12)
    # And the other way: the pixels of the box found are the pixels given.
    side = min(width, height) if frame == "center_crop" else max(width, height)
    again = back.to_pixels(width, height, frame)  # type: ignore[arg-type]
    got = (shape["x0"], shape["y0"], shape["x1"], shape["y1"])
    assert again == pytest.approx(got, abs=side * 5e-6 + 1e-9)


@pytest.mark.parametrize("frame", FRAMES)
@pytest.mark.parametrize("size", [(1841, 1955), (1955, 1841), (1, 4000), (4000, 3), (513, 513)])
def test_from_pixels_gives_back_the_models_bin_centres_exactly(
    frame: str, size: tuple[int, int]
) -> None:
    rng = np.random.default_rng(sum(size))
    for _ in range(200):
        (i0, i1), (j0, j1) = np.sort(rng.integers(0, 100, 2)), np.sort(rng.integers(0, 100, 2))
        box = Box((i0 + 0.5) / 100, (j0 + 0.5) / 100, (i1 + 0.5) / 100, (j1 + 0.5) / 100)
        [shape] = box_shapes(Report(findings=[Finding("x", [box])]), *size, frame)
        corners = (shape["x0"], shape["y0"], shape["x1"], shape["y1"])
        assert Box.from_pixels(*corners, *size, frame) == box  # type: ignore[arg-type]


def test_from_pixels_clamps_to_the_frame_and_orders_corners() -> None:
    # 600 x 512: the central square is x 44..556, the whole image y 0..512.
    assert Box.from_pixels(-50, 10, 20, 600, 600, 512).as_list() == [0.0, 0.01953, 0.0, 1.0]
    assert Box.from_pixels(556, 512, 44, 0, 600, 512).as_list() == [0.0, 0.0, 1.0, 1.0]
    assert Box.from_pixels(0, 0, 300, 256, 600, 512, "full").as_list() == [0.0, 0.0, 0.5, 0.5]
    with pytest.raises(ValueError, match="frame must be one of"):
        Box.from_pixels(0, 0, 1, 1, 10, 10, "middle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="image size must be positive"):
        Box.from_pixels(0, 0, 1, 1, 0, 10)


def edit(v: ReportViewer, seq: int | None = None, **message: object) -> None:
    """Send a ``box_edit`` message as the browser does."""
    content = {"kind": "box_edit", **message}
    if seq is not None:
        content["seq"] = seq
    v._on_custom_msg(v, content, [])


def test_box_edit_messages_become_box_edits(viewer: ReportViewer) -> None:
    got: list[BoxEdit] = []
    viewer.on_box_edit(got.append)
    w, h = viewer.width, viewer.height
    edit(viewer, 1, finding=2, box=-1, rect=[300.5, 700, 900, 1200.25])
    edit(viewer, 2, finding=0, box=0, rect=[200, 400, 800, 950])
    edit(viewer, 3, finding=1, box=0, rect=None)
    assert got == [
        BoxEdit(2, None, Box.from_pixels(300.5, 700, 900, 1200.25, w, h)),
        BoxEdit(0, 0, Box.from_pixels(200, 400, 800, 950, w, h)),
        BoxEdit(1, 0, None),
    ]
    assert viewer.edit_ack == 3
    # In the full frame the same pixels are another box.
    viewer.frame = "full"
    edit(viewer, 4, finding=0, box=0, rect=[200, 400, 800, 950])
    assert got[-1].new == Box.from_pixels(200, 400, 800, 950, w, h, "full")
    assert got[-1].new != got[1].new
    with pytest.raises(dataclasses.FrozenInstanceError):
        got[0].finding = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    "message",
    [
        {"finding": 3, "box": -1, "rect": [0, 0, 100, 100]},  # no such finding
        {"finding": -1, "box": 0, "rect": [0, 0, 100, 100]},
        {"finding": 0, "box": 1, "rect": [0, 0, 100, 100]},  # finding 0 has one box
        {"finding": 0, "box": -2, "rect": None},
        {"finding": 0, "box": -1, "rect": None},  # a new box with no rectangle
        {"finding": 0, "box": 0, "rect": [0, 0, 100]},
        {"finding": 0, "box": 0, "rect": [0, 0, 100, float("nan")]},
        {"finding": 0, "box": 0, "rect": [0, 0, True, 100]},
        {"finding": 0, "box": 0, "rect": [0, 0, 10**400, 100]},
        {"finding": 0, "box": 0, "rect": [0, 0, float("inf"), 100]},
        {"finding": 0, "box": 0, "rect": "0 0 100 100"},
        {"finding": "0", "box": 0, "rect": None},
        {"finding": True, "box": 0, "rect": None},
        {"finding": 0, "box": 0.0, "rect": None},
        {"box": 0, "rect": None},
        {},
        # Wholly above RG1's central square (it starts at y = 57): no area left in the frame.
        {"finding": 0, "box": 0, "rect": [100, 0, 900, 50]},
    ],
)
def test_bad_box_edit_messages_are_ignored(viewer: ReportViewer, message: dict) -> None:
    got: list[BoxEdit] = []
    viewer.on_box_edit(got.append)
    boxes = list(viewer.boxes)
    edit(viewer, 5, **message)
    assert got == [] and viewer.boxes == boxes
    assert viewer.edit_ack == 5  # answered, so the browser drops its copy of the edit


def test_box_edit_while_editing_is_off_is_ignored(viewer: ReportViewer) -> None:
    got: list[BoxEdit] = []
    viewer.on_box_edit(got.append)
    viewer.editable = False
    edit(viewer, 1, finding=0, box=0, rect=None)
    viewer.editable = True
    edit(viewer, 2, finding=0, box=0, rect=None)
    assert got == [BoxEdit(0, 0, None)] and viewer.edit_ack == 2


def test_box_edit_without_report_or_image_is_ignored(rg1_path: Path) -> None:
    v = ReportViewer(editable=True)
    got: list[BoxEdit] = []
    v.on_box_edit(got.append)
    edit(v, finding=0, box=-1, rect=[0, 0, 10, 10])
    v.set_images(str(rg1_path))
    edit(v, finding=0, box=-1, rect=[0, 0, 10, 10])
    edit(v, seq=True, finding=0, box=-1, rect=[0, 0, 10, 10])  # type: ignore[arg-type]
    assert got == [] and v.edit_ack == 0


def test_box_edit_callbacks_all_run_and_can_be_removed(
    viewer: ReportViewer, caplog: pytest.LogCaptureFixture
) -> None:
    first: list[BoxEdit] = []
    second: list[BoxEdit] = []

    def broken(_edit: BoxEdit) -> None:
        raise RuntimeError("the owner could not save")

    viewer.on_box_edit(first.append)
    viewer.on_box_edit(broken)
    viewer.on_box_edit(second.append)
    boxes = list(viewer.boxes)
    edit(viewer, 1, finding=1, box=0, rect=None)
    assert len(first) == len(second) == 1  # one callback failing does not stop the others
    assert "the owner could not save" in caplog.text
    assert viewer.boxes == boxes  # with callbacks, only the owner changes the report
    viewer.on_box_edit(first.append, remove=True)
    edit(viewer, 2, finding=1, box=0, rect=None)
    assert len(first) == 1 and len(second) == 2 and viewer.edit_ack == 2


def test_owner_saves_and_shows_the_edit_keeping_the_view(viewer: ReportViewer) -> None:
    saved: list[Report] = []

    def owner(e: BoxEdit) -> None:
        report = apply_box_edit(viewer.report, e)  # type: ignore[arg-type]
        saved.append(report)
        viewer.set_report(report, "reviewed", keep_view=True)

    viewer.on_box_edit(owner)
    viewer.camera = {"zoom": 2.0, "x": 700.0, "y": 900.0}
    viewer.window = (9000.0, 4000.0)
    viewer.select(0)
    rect = [250.0, 500.0, 810.0, 1111.0]
    edit(viewer, 1, finding=0, box=-1, rect=rect)
    assert [len(f.boxes) for f in viewer.report.findings] == [2, 1, 0]  # type: ignore[union-attr]
    new = next(b for b in viewer.boxes if (b["finding"], b["box"]) == (0, 1))
    assert [new["x0"], new["y0"], new["x1"], new["y1"]] == pytest.approx(rect, abs=0.02)
    edit(viewer, 2, finding=0, box=0, rect=None)
    assert viewer.report.findings[0].boxes == saved[0].findings[0].boxes[1:]  # type: ignore[union-attr]
    assert [(b["finding"], b["box"]) for b in viewer.boxes] == [(0, 0), (1, 0)]
    assert viewer.selected == 0 and viewer.caption == "reviewed"
    assert viewer.camera == {"zoom": 2.0, "x": 700.0, "y": 900.0}
    assert viewer.window == (9000.0, 4000.0)
    assert REPORT.findings[0].boxes == (Box(0.105, 0.205, 0.405, 0.455),)  # not mutated


def test_set_report_keep_view_keeps_selection_and_compared_run(viewer: ReportViewer) -> None:
    viewer.set_runs([("run 1", REPORT), ("run 2", REPORT)])
    viewer.compare = 0
    viewer.select(2)
    viewer.set_report(REPORT, keep_view=True)
    assert viewer.selected == 2 and viewer.compare == 0
    shorter = Report(findings=REPORT.findings[:2], image_size=REPORT.image_size)
    viewer.set_report(shorter, keep_view=True)
    assert viewer.selected == -1  # the selected finding is gone
    viewer.select(1)
    viewer.set_report(REPORT)
    assert viewer.selected == -1 and viewer.compare == -1  # another report: view reset


def test_viewer_without_an_owner_edits_its_own_report(viewer: ReportViewer) -> None:
    edit(viewer, 1, finding=1, box=0, rect=[400, 500, 600, 700])
    box = viewer.report.findings[1].boxes[0]  # type: ignore[union-attr]
    assert box == Box.from_pixels(400, 500, 600, 700, viewer.width, viewer.height)
    shape = next(b for b in viewer.boxes if b["finding"] == 1)
    assert (shape["x0"], shape["y1"]) == pytest.approx((400, 700), abs=0.02)


def test_an_unreadable_image_is_warned_about_once(rg1_path: Path) -> None:
    v = ReportViewer()
    for _ in range(3):
        v.set_images(str(rg1_path), lateral=b"not an image")
    assert len([w for w in v.warnings if w.startswith("lateral image not shown")]) == 1


def test_saved_boxes_and_the_edits_answer_travel_in_one_update(viewer: ReportViewer) -> None:
    # The browser drops its own copy of an edit when edit_ack arrives: the saved boxes
    # must come in the same message, or the box would jump back for a moment.
    viewer.on_box_edit(
        lambda e: viewer.set_report(apply_box_edit(viewer.report, e), keep_view=True)  # type: ignore[arg-type]
    )
    sent: list[dict] = []
    viewer._send = lambda msg, buffers=None: sent.append(msg)  # type: ignore[method-assign]
    edit(viewer, 9, finding=1, box=0, rect=[400, 500, 600, 700])
    updates = [m["state"] for m in sent if m.get("method") == "update"]
    assert len(updates) == 1
    assert updates[0]["edit_ack"] == 9
    moved = next(b for b in updates[0]["boxes"] if b["finding"] == 1)
    assert moved["x0"] == pytest.approx(400, abs=0.02)
