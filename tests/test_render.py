"""Findings drawn on images: colours at the box edges, frames, crop square, matplotlib."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cxr_widgets import Box, Finding, ImageError, Report
from cxr_widgets.images import prepare_image
from cxr_widgets.palette import hex_to_rgb
from cxr_widgets.render import (
    CROP_DIM_ALPHA,
    annotated_png,
    line_width,
    plot_findings,
    render_findings,
)

GRAY = 100


def make_report(size: tuple[int, int], **kw) -> Report:
    findings = [
        Finding("Heart size normal.", []),
        Finding("Left opacity.", [Box(0.55, 0.3, 0.85, 0.6)]),
        Finding("Right effusion.", [Box(0.15, 0.35, 0.4, 0.7), Box(0.2, 0.75, 0.35, 0.9)]),
    ]
    return Report(findings=findings, image_size=size, **kw)


def gray(size: tuple[int, int]) -> Image.Image:
    return Image.new("L", size, GRAY)


def edge_points(box: Box, size: tuple[int, int], frame: str) -> list[tuple[int, int]]:
    """Midpoints of the four edges of ``box`` drawn on an image of ``size``."""
    x0, y0, x1, y1 = (round(v) for v in box.to_pixels(*size, frame))  # type: ignore[arg-type]
    xm, ym = (x0 + x1) // 2, (y0 + y1) // 2
    return [(x0, ym), (x1, ym), (xm, y0), (xm, y1)]


SIZES = {"square": (300, 300), "wide": (420, 280), "tall": (280, 420)}


@pytest.mark.parametrize("frame", ["center_crop", "full"])
@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
def test_box_edges_have_the_finding_colour(size, frame):
    report = make_report(size)
    out = render_findings(gray(size), report, frame=frame)
    assert out.mode == "RGB" and out.size == size
    array = np.asarray(out)
    for index, finding in enumerate(report.findings):
        color = hex_to_rgb(report.color(index))
        for box in finding.boxes:
            for x, y in edge_points(box, size, frame):
                assert tuple(array[y, x]) == color, (index, frame, x, y)
            x0, y0, x1, y1 = box.to_pixels(*size, frame)
            # the middle of the box is untouched
            assert tuple(array[round((y0 + y1) / 2), round((x0 + x1) / 2)]) == (GRAY,) * 3


def test_frames_differ_on_a_wide_image():
    size = (420, 280)  # center crop: square of 280 starting at x = 70
    report = make_report(size)
    crop = np.asarray(render_findings(gray(size), report, frame="center_crop"))
    full = np.asarray(render_findings(gray(size), report, frame="full"))
    box = report.findings[1].boxes[0]
    color = hex_to_rgb(report.color(1))
    assert box.to_pixels(*size)[0] == pytest.approx(70 + 0.55 * 280)
    x_crop, x_full = round(70 + 0.55 * 280), round(0.55 * 420)
    y = round(0.45 * 280)
    assert tuple(crop[y, x_crop]) == color and tuple(crop[y, x_full]) != color
    assert tuple(full[y, x_full]) == color and tuple(full[y, x_crop]) != color


def test_downscaled_image_uses_the_same_normalised_boxes():
    report = make_report((840, 560))  # the study's original size
    out = np.asarray(render_findings(gray((420, 280)), report))
    color = hex_to_rgb(report.color(1))
    for x, y in edge_points(report.findings[1].boxes[0], (420, 280), "center_crop"):
        assert tuple(out[y, x]) == color


def test_max_side_shrinks_before_drawing():
    report = make_report((1200, 800))
    out = render_findings(gray((1200, 800)), report, max_side=600)
    assert out.size == (600, 400)
    array = np.asarray(out)
    for x, y in edge_points(report.findings[1].boxes[0], (600, 400), "center_crop"):
        assert tuple(array[y, x]) == hex_to_rgb(report.color(1))


def test_line_width_scales_with_the_image():
    assert line_width(300, 300) == 2
    assert line_width(2000, 1800) == 9
    assert line_width(10, 10) == 2


def test_ungrounded_findings_draw_nothing():
    size = (200, 200)
    only_text = Report(findings=[Finding("Heart size normal.", [])], image_size=size)
    empty = Report(findings=[], image_size=size)
    np.testing.assert_array_equal(
        np.asarray(render_findings(gray(size), only_text)),
        np.asarray(render_findings(gray(size), empty)),
    )


def test_show_crop_dims_outside_the_square():
    size = (420, 280)
    report = Report(findings=[], image_size=size)
    plain = np.asarray(render_findings(gray(size), report)).astype(int)
    dimmed = np.asarray(render_findings(gray(size), report, show_crop=True)).astype(int)
    expected = round(GRAY * (255 - CROP_DIM_ALPHA) / 255)
    for x in (5, 60, 355, 410):  # outside the square 70..349
        assert abs(dimmed[140, x, 0] - expected) <= 1 and plain[140, x, 0] == GRAY
    inside = (slice(20, 260), slice(80, 340))
    np.testing.assert_array_equal(dimmed[inside], plain[inside])


def test_show_crop_changes_nothing_on_a_square_image():
    size = (300, 300)
    report = make_report(size)
    np.testing.assert_array_equal(
        np.asarray(render_findings(gray(size), report, show_crop=True)),
        np.asarray(render_findings(gray(size), report)),
    )


def test_highlight_fades_the_other_findings():
    size = (300, 300)
    report = make_report(size)
    out = np.asarray(render_findings(gray(size), report, highlight=1)).astype(int)
    chosen = hex_to_rgb(report.color(1))
    for x, y in edge_points(report.findings[1].boxes[0], size, "center_crop"):
        assert tuple(out[y, x]) == chosen
    faded = np.array(hex_to_rgb(report.color(2)))
    x, y = edge_points(report.findings[2].boxes[0], size, "center_crop")[0]
    pixel = out[y, x]
    assert not np.array_equal(pixel, faded)
    # a blend of the gray background and the colour
    assert np.all(pixel >= np.minimum(faded, GRAY) - 1)
    assert np.all(pixel <= np.maximum(faded, GRAY) + 1)
    with pytest.raises(IndexError):
        render_findings(gray(size), report, highlight=3)


def test_demo_mark_and_frame_caption():
    size = (400, 400)
    demo = np.asarray(render_findings(gray(size), make_report(size, demo=True)))
    real = np.asarray(render_findings(gray(size), make_report(size)))
    assert tuple(demo[3, 3]) == (255, 193, 7)  # the DEMO badge, top left
    assert tuple(real[3, 3]) == (GRAY,) * 3
    # the caption box darkens the bottom-left corner in both
    assert demo[-2, 2, 0] < GRAY and real[-2, 2, 0] < GRAY


def test_legend_adds_a_panel():
    size = (400, 300)
    out = render_findings(gray(size), make_report(size), legend=True)
    assert out.height == 300 and out.width > 400
    panel = np.asarray(out)[:, 400:]
    for index in (1, 2):  # each grounded finding's swatch is in the panel
        color = np.array(hex_to_rgb(make_report(size).color(index)))
        assert np.all(panel == color, axis=-1).any()


def test_prepared_image_path_and_pil_give_the_same_picture(tmp_path):
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (240, 320), dtype=np.uint8)
    path = tmp_path / "frontal.png"
    Image.fromarray(pixels).save(path)
    report = make_report((320, 240))
    from_pil = np.asarray(render_findings(Image.fromarray(pixels), report))
    from_path = np.asarray(render_findings(path, report))
    from_prepared = np.asarray(render_findings(prepare_image(path, full_resolution=True), report))
    np.testing.assert_array_equal(from_pil, from_path)
    np.testing.assert_array_equal(from_pil, from_prepared)


def test_sixteen_bit_pil_image_goes_through_prepare_image():
    wide = Image.fromarray(np.full((100, 120), 4000, dtype=np.uint16))
    out = render_findings(wide, Report(findings=[], image_size=(120, 100)))
    assert out.mode == "RGB" and out.size == (120, 100)


def test_rg1_renders_at_full_resolution(rg1_path):
    report = make_report((1841, 1955))
    out = render_findings(rg1_path, report, show_crop=True)
    assert out.size == (1841, 1955)
    array = np.asarray(out)
    for x, y in edge_points(report.findings[1].boxes[0], out.size, "center_crop"):
        assert tuple(array[y, x]) == hex_to_rgb(report.color(1))


def test_annotated_png_is_the_rendered_picture():
    size = (300, 200)
    report = make_report(size)
    data = annotated_png(gray(size), report, frame="full")
    with Image.open(io.BytesIO(data)) as image:
        decoded = np.asarray(image.convert("RGB"))
    np.testing.assert_array_equal(
        decoded, np.asarray(render_findings(gray(size), report, frame="full"))
    )


def test_bad_arguments():
    report = make_report((100, 100))
    with pytest.raises(ValueError, match="frame"):
        render_findings(gray((100, 100)), report, frame="crop")  # type: ignore[arg-type]
    with pytest.raises(ImageError, match="no image"):
        render_findings(None, report)
    with pytest.raises(ImageError):
        render_findings(b"not an image", report)


def test_a_differently_shaped_image_warns():
    with pytest.warns(UserWarning, match="different shape"):
        render_findings(gray((300, 100)), make_report((100, 300)))


# --- matplotlib ------------------------------------------------------------------


@pytest.fixture
def plt(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    yield plt
    plt.close("all")


def box_rectangles(ax) -> list:
    from matplotlib.patches import Rectangle

    return [p for p in ax.patches if isinstance(p, Rectangle)]


@pytest.mark.parametrize("frame", ["center_crop", "full"])
def test_plot_findings_draws_one_rectangle_per_box(plt, frame):
    from matplotlib.colors import to_rgba

    size = (420, 280)
    report = make_report(size)
    fig, ax = plt.subplots()
    assert plot_findings(report, gray(size), ax=ax, frame=frame) is ax
    rectangles = box_rectangles(ax)
    assert len(rectangles) == report.n_boxes == 3
    expected = [
        (index, box) for index, finding in enumerate(report.findings) for box in finding.boxes
    ]
    for rectangle, (index, box) in zip(rectangles, expected, strict=True):
        x0, y0, x1, y1 = box.to_pixels(*size, frame)
        assert rectangle.get_xy() == pytest.approx((x0, y0))
        assert rectangle.get_width() == pytest.approx(x1 - x0)
        assert rectangle.get_height() == pytest.approx(y1 - y0)
        assert rectangle.get_edgecolor() == pytest.approx(to_rgba(report.color(index)))
    legend = ax.get_legend()
    assert [t.get_text()[:3] for t in legend.get_texts()] == ["1. ", "2. ", "3. "]
    assert "(no box)" in legend.get_texts()[0].get_text()
    texts = [t.get_text() for t in ax.texts]
    if frame == "full":
        assert any("may be misplaced" in t for t in texts)
    else:
        assert "boxes: center crop" in texts
    fig.canvas.draw()  # renders without error


def test_plot_findings_makes_its_own_axis_and_marks_demo(plt):
    size = (200, 300)
    report = make_report(size, demo=True)
    ax = plot_findings(report, gray(size), show_crop=True, legend=False)
    assert len(box_rectangles(ax)) == 3  # the crop square adds no rectangle
    assert ax.get_legend() is None
    assert any("DEMO" in t.get_text() for t in ax.texts)
    assert len(ax.images) == 2  # the radiograph and the crop mask
    assert ax.get_xlim() == (0, 200) and ax.get_ylim() == (300, 0)


def test_plot_findings_without_an_image_says_so(plt):
    with pytest.raises(ImageError, match="no image"):
        plot_findings(make_report((100, 100)), None)


def test_render_module_does_not_import_matplotlib():
    import subprocess
    import sys

    code = "import sys, cxr_widgets.render; print('matplotlib' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"


def test_readme_figure_script(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "make_readme_figure.py"
    spec = importlib.util.spec_from_file_location("make_readme_figure", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    output = tmp_path / "figure.png"
    assert module.main(["--output", str(output), "--height", "400"]) == 0
    assert capsys.readouterr().out.strip() == str(output)
    with Image.open(output) as image:
        assert image.height == 400 and image.width > 400  # radiograph plus legend
        rgb = np.asarray(image.convert("RGB"))
    assert tuple(rgb[2, 2]) == (255, 193, 7)  # marked DEMO: not a reading of this image
    assert output.stat().st_size < module.SIZE_BUDGET


@pytest.mark.parametrize("size", [(400, 400), (420, 280)], ids=["square", "wide"])
def test_full_frame_pictures_carry_a_visible_warning(size):
    from cxr_widgets.render import WARNING_RGB

    def warning_pixels(frame: str) -> int:
        picture = np.asarray(render_findings(gray(size), make_report(size), frame=frame))
        strip = picture[-40:, : size[0] // 2].reshape(-1, 3)
        return int((strip == np.array(WARNING_RGB)).all(axis=1).sum())

    assert warning_pixels("full") > 200  # an amber caption bar saying "may be misplaced"
    assert warning_pixels("center_crop") == 0


def test_one_contrast_rule_and_one_aspect_tolerance():
    from cxr_widgets.palette import FINDING_COLORS, palette_for_frontend, text_color
    from cxr_widgets.report import ASPECT_TOLERANCE, same_shape

    assert text_color("#F0E442") == "#000000" and text_color("#0072B2") == "#FFFFFF"
    assert palette_for_frontend()["labels"] == [text_color(c) for c in FINDING_COLORS]
    assert same_shape((1000, 800), (500, 400))
    assert same_shape((1000, 800), (1000, round(800 * (1 + ASPECT_TOLERANCE / 2))))
    assert not same_shape((1000, 800), (800, 1000))
    assert same_shape(None, (10, 10))


def test_the_frame_list_lives_in_report_and_reaches_the_front_end_as_data():
    from cxr_widgets import render
    from cxr_widgets.report import FRAMES, FULL_FRAME_WARNING, frame_options

    assert [o["value"] for o in frame_options()] == list(FRAMES)
    full = next(o for o in frame_options() if o["value"] == "full")
    assert full["warning"] == FULL_FRAME_WARNING and "geometry.md" in full["help"]
    assert render.FRAMES is FRAMES
