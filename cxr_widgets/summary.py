"""A one-line, patient-free summary of a study: which images and which texts it has."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .study import IMAGE_COLUMNS, TEXT_COLUMNS, Study


def study_summary(study: Study, images: Mapping[str, Any] | None = None) -> str:
    """E.g. ``frontal dicom 1841x1955 + prior; indication, technique``.

    ``images`` maps image columns to their PreparedImage (kind and original
    size are read from its fields). Never includes the texts themselves.
    """
    parts = []
    for column in IMAGE_COLUMNS:
        if getattr(study, column) is None:
            continue
        name = column.removesuffix("_image")
        prepared = (images or {}).get(column)
        if prepared is not None and column == "frontal_image":
            width, height = prepared.original_size
            name = f"{name} {prepared.source_kind} {width}x{height}"
        parts.append(name)
    texts = [c.replace("_", " ") for c in TEXT_COLUMNS if getattr(study, c).strip()]
    return " + ".join(parts) + (f"; {', '.join(texts)}" if texts else "")
