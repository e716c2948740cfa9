"""Writing small text fixtures (manifests, CSVs) in tests."""

from __future__ import annotations

from pathlib import Path


def write(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` and return it."""
    path.write_text(text, encoding="utf-8")
    return path
