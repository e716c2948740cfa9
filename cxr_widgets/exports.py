"""Exports of one report: JSON, findings CSV and the annotated PNG, under safe file names.

File names come from study ids, which come from manifests and users
(``images/chest.png``, ``../x``, ``/etc/passwd``, ``CON``). :func:`safe_stem`
turns any id into one harmless name part; :func:`export_report` writes only
inside its folder and never overwrites a file.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from pathlib import Path
from typing import Any

from .errors import CxrWidgetsError
from .folders import make_folder
from .report import Report

EXPORT_KINDS: tuple[str, ...] = ("json", "csv", "png")
#: Longest stem :func:`safe_stem` returns for an id, and for a whole file name
#: (id, run, time) in :func:`export_report`: well under the 255 bytes file systems allow.
MAX_STEM = 80
MAX_FILE_STEM = 120
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: Names Windows reserves whatever the extension (a share or a synced folder may be NTFS).
_RESERVED = {"CON", "PRN", "AUX", "NUL"} | {f"{p}{i}" for p in ("COM", "LPT") for i in range(1, 10)}


def safe_stem(study_id: str, *, max_length: int = MAX_STEM, default: str = "study") -> str:
    """A file-name part from ``study_id``: no separators, no traversal, at most ``max_length``.

    Only ASCII letters, digits, ``.``, ``_`` and ``-`` remain; it never starts
    with a dot or a dash. When the id had to be changed, a short digest of the
    original is appended, so different ids (``a/b`` and ``a_b``, or two long ids
    that share their first characters) give different names.
    """
    if max_length < 16:
        raise ValueError(f"max_length must be at least 16, got {max_length}")
    text = str(study_id or "")
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    stem = _UNSAFE.sub("_", ascii_text).strip("._- ")
    stem = re.sub(r"\.{2,}", ".", stem)
    if stem.split(".")[0].upper() in _RESERVED:
        stem = f"_{stem}"
    changed = stem != text or len(stem) > max_length  # a cut name needs its digest too
    if not stem:
        stem = default
    if changed and text:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
        stem = f"{stem[: max_length - 9]}-{digest}"
    return stem[:max_length]


NO_FRONTAL = (
    "the PNG export needs the study's frontal image (a report holds none): pass it as `frontal`"
)


def _unique_stem(folder: Path, stem: str, kinds: tuple[str, ...]) -> str:
    """``stem``, or ``stem-2``, ``stem-3``... so that no ``stem.<kind>`` exists yet."""
    candidate, number = stem, 1
    while any((folder / f"{candidate}.{kind}").exists() for kind in kinds):
        number += 1
        candidate = f"{stem}-{number}"
    return candidate


def _inside(folder: Path, name: str) -> Path:
    path = folder / name
    if path.resolve().parent != folder.resolve():  # defence in depth: safe_stem already ensures it
        raise CxrWidgetsError(f"refusing to write {name!r} outside {folder}")
    return path


def export_report(
    report: Report,
    frontal: Any,
    directory: str | os.PathLike[str],
    stem: str,
    kinds: tuple[str, ...] = EXPORT_KINDS,
    **render_options: Any,
) -> dict[str, Path]:
    """Write ``<stem>.json``, ``.csv`` and ``.png`` into ``directory``; their paths.

    ``stem`` is made safe with :func:`safe_stem` and unique in the folder (an
    existing file is never overwritten). ``frontal`` is the study's frontal
    image source: the PNG is drawn on it at full resolution by
    :func:`cxr_widgets.render.render_findings` with ``render_options``.
    """
    unknown = set(kinds) - set(EXPORT_KINDS)
    if unknown:
        raise ValueError(f"unknown export kinds {sorted(unknown)}; choose from {EXPORT_KINDS}")
    if "png" in kinds and frontal is None:
        raise CxrWidgetsError(NO_FRONTAL)
    folder = make_folder(
        directory, purpose="the exports", fix="choose another folder (export_dir=...)."
    )
    name = _unique_stem(folder, safe_stem(stem, max_length=MAX_FILE_STEM), kinds)
    paths: dict[str, Path] = {}
    for kind in EXPORT_KINDS:
        if kind not in kinds:
            continue
        path = _inside(folder, f"{name}.{kind}")
        data = export_bytes(report, frontal, kind, **render_options)
        with open(path, "xb") as handle:  # "x": never overwrite what is there
            handle.write(data)
        paths[kind] = path
    return paths


#: The media type of each export, for downloads through the browser.
MEDIA_TYPES = {"json": "application/json", "csv": "text/csv", "png": "image/png"}


def export_bytes(report: Report, frontal: Any, kind: str, **render_options: Any) -> bytes:
    """One export's content (``json``, ``csv`` or ``png``), without writing a file.

    For downloads through the browser (Voilà, hosted hubs), where a file written on
    the server would be out of the user's reach.
    """
    if kind == "json":
        return report.to_json().encode("utf-8")
    if kind == "csv":
        return report.to_csv().encode("utf-8")
    if kind != "png":
        raise ValueError(f"unknown export kind {kind!r}; choose from {EXPORT_KINDS}")
    if frontal is None:
        raise CxrWidgetsError(NO_FRONTAL)
    from io import BytesIO

    from .render import render_findings

    buffer = BytesIO()
    # render.annotated_png optimises the PNG (5.5 s vs 0.5 s for the NEMA radiograph,
    # for 15 % fewer bytes); an interactive export favours the default compression.
    render_findings(frontal, report, **render_options).save(buffer, format="PNG")
    return buffer.getvalue()


#: Longest side of the annotated image in the static view.
STATIC_SIDE = 512
#: Said above the static view of the panel, where the live panel cannot run.
STATIC_NOTE = (
    "Saved view of the CXRReportGen panel (the interactive panel needs Jupyter with a "
    "running kernel)."
)


def static_view(report: Report | None, image: Any = None, caption: str = "") -> str:
    """The panel's report as self-contained HTML, for readers without a kernel or widgets.

    The findings table of :func:`cxr_widgets.report.report_html` and the
    annotated ``image`` (a display-size JPEG, drawn by :func:`render_findings`).
    Inside a live panel it is hidden by the panel's stylesheet (``.cxr-static-fallback``).
    """
    import base64
    import html
    from io import BytesIO

    from .report import RESEARCH_NOTICE, report_html

    parts = [f"<div class='cxr-static-fallback'><p><i>{html.escape(STATIC_NOTE)}</i></p>"]
    if report is None:
        parts.append(f"<p>No report is shown. {html.escape(RESEARCH_NOTICE)}</p>")
    else:
        if caption:
            parts.append(f"<p>{html.escape(caption)}</p>")
        if image is not None:
            from .render import render_findings

            buffer = BytesIO()
            # Small: the view travels to the page with every report shown and is saved
            # in the notebook (512 px is what a reader of a saved notebook sees anyway).
            picture = render_findings(image, report, max_side=STATIC_SIDE).convert("RGB")
            picture.save(buffer, format="JPEG", quality=75)
            data = base64.b64encode(buffer.getvalue()).decode("ascii")
            parts.append(
                "<img alt='the frontal image with the findings boxes' "
                f"style='max-width:420px;float:left;margin-right:12px' "
                f"src='data:image/jpeg;base64,{data}'/>"
            )
        parts.append(report_html(report))
    parts.append("</div>")
    return "".join(parts)
