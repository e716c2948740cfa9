"""images.raster and the shapes prepare_image refuses: animated PNGs whose default
image is blank, and strips such as 65535 x 1."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cxr_widgets.errors import ImageError
from cxr_widgets.images import MAX_ASPECT_RATIO, load_pixels, prepare_image


def apng(default: np.ndarray, frames: list[np.ndarray], *, default_is_frame: bool) -> bytes:
    """An animated PNG; with ``default_is_frame=False`` its default image is not
    part of the animation (what a viewer that ignores APNG shows)."""
    buffer = io.BytesIO()
    first = Image.fromarray(default)
    first.save(
        buffer,
        format="PNG",
        save_all=True,
        append_images=[Image.fromarray(f) for f in frames],
        default_image=not default_is_frame,
        duration=100,
    )
    return buffer.getvalue()


def card(value: int = 0) -> np.ndarray:
    image = np.full((600, 560), value, dtype=np.uint8)
    image[100:300, 100:300] = 200
    return image


def test_apng_with_a_blank_default_image_is_refused() -> None:
    data = apng(np.zeros((600, 560), dtype=np.uint8), [card(), card(30)], default_is_frame=False)
    assert b"acTL" in data
    with pytest.raises(ImageError, match=r"animated PNG \(APNG\) whose default image is blank"):
        prepare_image(data, name="frontal_image")
    with pytest.raises(ImageError, match="default image is blank"):
        load_pixels(data)


def test_apng_with_a_real_default_image_is_used_with_a_note() -> None:
    data = apng(card(), [card(30)], default_is_frame=True)
    prepared = prepare_image(data, full_resolution=True)
    assert np.array_equal(np.asarray(prepared.image), card())
    assert "animated PNG: only its default image is used" in prepared.notes


def test_plain_blank_png_is_sent_with_a_note() -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.full((600, 600), 9, dtype=np.uint8)).save(buffer, format="PNG")
    prepared = prepare_image(buffer.getvalue())
    assert any("blank: every pixel is 9" in note for note in prepared.notes)


@pytest.mark.parametrize("size", [(65535, 1), (1, 65535), (4000, 1), (5000, 400)])
def test_strips_are_refused_for_the_model(size: tuple[int, int]) -> None:
    buffer = io.BytesIO()
    Image.new("L", size, 128).save(buffer, format="PNG")
    width, height = size
    with pytest.raises(
        ImageError, match=rf"{width}x{height} pixels .* to 1\) is not a chest X-ray"
    ):
        prepare_image(buffer.getvalue(), name="frontal_image")
    assert load_pixels(buffer.getvalue()).size == size  # the viewer can still show it


def test_aspect_ratio_at_the_limit_is_accepted() -> None:
    width = int(600 * MAX_ASPECT_RATIO)
    prepared = prepare_image(np.zeros((600, width), dtype=np.uint8), full_resolution=True)
    assert prepared.size == (width, 600)
