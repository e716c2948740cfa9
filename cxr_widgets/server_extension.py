"""Jupyter server extension: chest X-rays for JupyterLab's file browser, without a kernel.

Routes (under the server's base URL, all behind the server's own authentication):

``GET  /cxr-widgets/api/image?path=P``
    What the viewer needs first: size, bit depth, the file's window, the value
    mapping of the 16-bit codes, pixel spacing and technical metadata (never
    patient tags), plus the overview's shape.
``GET  /cxr-widgets/api/pixels?path=P[&x=&y=&w=&h=]&max_side=N``
    16-bit codes of the whole image or a region, reduced to ``max_side``,
    packed as ``zlib-delta`` (:func:`cxr_widgets.images.encode_uint16`); the
    shape and scale travel in ``X-Cxr-*`` headers.
``POST /cxr-widgets/api/notebook``  ``{"paths": [frontal, lateral?, prior?]}``
    A new notebook beside the first file, one cell that opens ``ReportGenWidget``
    on that study; never overwrites. Each file must be a PNG, JPEG or DICOM image
    by its content, whatever its name (``IM0001`` is a DICOM file's usual name).
``POST /cxr-widgets/api/tutorials``  ``{"dir": D}``
    Copies the bundled tutorial notebooks into D; never overwrites.
``GET|POST /cxr-widgets/api/local-endpoint``  ``{"action": "start" | "stop"}``
    The local endpoint (``cxr-widgets serve``) on 127.0.0.1: status, start, stop.

Files are served only from under the server's root directory: absolute paths,
``..``, symbolic links that lead outside the root and anything that is not a
regular file are refused, and decoding has a time and size limit.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web

from .errors import CxrWidgetsError, ImageError
from .images import DEFAULT_CODEC, DEFAULT_OVERVIEW_SIDE, PixelData, load_pixels
from .images.sniff import not_an_image
from .study import IMAGE_COLUMNS

#: The largest overview or region side a request may ask for.
MAX_SIDE = 4096
#: Seconds a decode may take before the request is answered 504.
DECODE_SECONDS = 30.0
#: Files larger than this are refused before they are read.
MAX_FILE_BYTES = 512 * 1024 * 1024
#: Decoded images kept for the next request (the overview, then regions when zooming).
CACHE_ENTRIES = 4

_executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="cxr-decode")


class _PixelCache:
    """The last few decoded images, keyed by real path, size and modification time."""

    def __init__(self, entries: int = CACHE_ENTRIES) -> None:
        self.entries = entries
        self._items: OrderedDict[tuple[str, int, int], PixelData] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int, int]) -> PixelData | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, key: tuple[str, int, int], pixels: PixelData) -> None:
        with self._lock:
            self._items[key] = pixels
            self._items.move_to_end(key)
            while len(self._items) > self.entries:
                self._items.popitem(last=False)


_cache = _PixelCache()


def resolve_under_root(root: str, relative: str) -> Path:
    """The regular file ``relative`` names under ``root``; raises ``web.HTTPError`` otherwise."""
    if not relative:
        raise web.HTTPError(400, "give the file's path (path=...)")
    if relative.startswith(("/", "\\")) or os.path.isabs(relative) or "\x00" in relative:
        raise web.HTTPError(400, "the path must be relative to the server's root directory")
    if ".." in Path(relative).parts:
        raise web.HTTPError(400, "the path must not contain '..'")
    base = Path(os.path.realpath(root))
    real = Path(os.path.realpath(base / relative))
    if real != base and base not in real.parents:
        raise web.HTTPError(403, "the file lies outside the server's root directory")
    try:
        info = os.stat(real)
    except FileNotFoundError:
        raise web.HTTPError(404, f"no file {relative!r}") from None
    except OSError as exc:
        raise web.HTTPError(400, f"{relative!r} cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise web.HTTPError(400, f"{relative!r} is not a regular file")
    if info.st_size > MAX_FILE_BYTES:
        raise web.HTTPError(413, f"{relative!r} is larger than {MAX_FILE_BYTES >> 20} MB")
    return real


def _int_argument(handler: APIHandler, name: str, default: int | None = None) -> int | None:
    text = handler.get_query_argument(name, None)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise web.HTTPError(400, f"{name} must be a whole number, got {text!r}") from None


class _ImageHandler(APIHandler):
    """Shared by the image routes: find, check and decode the file (cached)."""

    async def pixels(self) -> tuple[str, PixelData]:
        relative = self.get_query_argument("path", "")
        real = resolve_under_root(self.settings["server_root_dir"], relative)
        info = real.stat()
        key = (str(real), info.st_size, info.st_mtime_ns)
        cached = _cache.get(key)
        if cached is not None:
            return relative, cached
        loop = asyncio.get_running_loop()
        try:
            pixels = await asyncio.wait_for(
                loop.run_in_executor(_executor, load_pixels, str(real)), DECODE_SECONDS
            )
        except asyncio.TimeoutError:
            raise web.HTTPError(
                504, f"decoding {relative!r} took over {DECODE_SECONDS:g} s"
            ) from None
        except ImageError as exc:
            # The message names the file by the path the user gave, never a patient tag.
            raise web.HTTPError(415, _first_line(str(exc)).replace(str(real), relative)) from None
        except CxrWidgetsError as exc:
            raise web.HTTPError(400, _first_line(str(exc))) from None
        _cache.put(key, pixels)
        return relative, pixels

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = getattr(exc, "log_message", None) or self._reason
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"message": message, "status": status_code}))


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


class ImageInfoHandler(_ImageHandler):
    @web.authenticated
    async def get(self) -> None:
        relative, pixels = await self.pixels()
        max_side = _int_argument(self, "max_side", DEFAULT_OVERVIEW_SIDE) or DEFAULT_OVERVIEW_SIDE
        offset, step = pixels.value_mapping()
        scale = min(1.0, max_side / max(pixels.width, pixels.height))
        center, width = pixels.default_window()
        self.finish(
            json.dumps(
                {
                    "path": relative,
                    "width": pixels.width,
                    "height": pixels.height,
                    "bit_depth": pixels.bit_depth,
                    "invert": pixels.invert,
                    "window": list(pixels.window) if pixels.window else None,
                    "default_window": [center, width],
                    "value_range": list(pixels.value_range),
                    "mapping": {"offset": offset, "step": step},
                    "spacing": list(pixels.spacing) if pixels.spacing else None,
                    "metadata": _jsonable(dict(pixels.safe_metadata)),
                    "notes": list(pixels.notes),
                    "codec": DEFAULT_CODEC,
                    "overview_scale": scale,
                }
            )
        )


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, value in data.items():
        if isinstance(value, (tuple, list)):
            value = [float(v) if isinstance(v, float) else v for v in value]
        elif not isinstance(value, (str, int, float, bool, type(None))):
            value = str(value)
        out[name] = value
    return out


class PixelsHandler(_ImageHandler):
    @web.authenticated
    async def get(self) -> None:
        _relative, pixels = await self.pixels()
        max_side = _int_argument(self, "max_side", DEFAULT_OVERVIEW_SIDE)
        if not max_side or not 1 <= max_side <= MAX_SIDE:
            raise web.HTTPError(400, f"max_side must be 1 to {MAX_SIDE}")
        x = _int_argument(self, "x", 0)
        y = _int_argument(self, "y", 0)
        w = _int_argument(self, "w", pixels.width)
        h = _int_argument(self, "h", pixels.height)
        loop = asyncio.get_running_loop()
        try:
            codes, scale, box = await loop.run_in_executor(
                _executor, pixels.region, x, y, w, h, max_side
            )
        except ValueError as exc:
            raise web.HTTPError(400, str(exc)) from None
        data = await loop.run_in_executor(_executor, pixels.encode, codes)
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("X-Cxr-Width", str(codes.shape[1]))
        self.set_header("X-Cxr-Height", str(codes.shape[0]))
        self.set_header("X-Cxr-Scale", repr(scale))
        self.set_header("X-Cxr-Box", ",".join(str(v) for v in box))
        self.set_header("X-Cxr-Codec", DEFAULT_CODEC)
        self.set_header("Cache-Control", "no-store")
        self.finish(data)


def study_notebook(paths: list[str]) -> dict[str, Any]:
    """A one-cell notebook that opens ``ReportGenWidget`` on the study of ``paths``."""
    if not paths:
        source = (
            "# For research only, not for clinical use. With no client the panel runs on the\n"
            "# offline demo backend (canned findings, marked DEMO); choose your endpoint in it.\n"
            "from cxr_widgets import ReportGenWidget\n\n"
            "ReportGenWidget()"
        )
        return _notebook(source)
    arguments = "".join(
        f"    {column}={Path(path).name!r},\n"
        for column, path in zip(IMAGE_COLUMNS, paths, strict=False)
    )
    source = (
        "# A study opened from the file browser. For research only, not for clinical use.\n"
        "# With no client the panel runs on the offline demo backend (canned findings,\n"
        "# marked DEMO); choose your endpoint in the panel.\n"
        "from cxr_widgets import ReportGenWidget, Study\n\n"
        "widget = ReportGenWidget()\n"
        f"widget.load_study(Study(\n{arguments}))\n"
        "widget"
    )
    return _notebook(source)


def _notebook(source: str) -> dict[str, Any]:
    return {
        "cells": [
            {
                "cell_type": "code",
                "execution_count": None,
                "metadata": {},
                "outputs": [],
                "source": source,
            }
        ],
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def _free_name(folder: Path, stem: str, suffix: str) -> Path:
    candidate = folder / f"{stem}{suffix}"
    number = 1
    while candidate.exists():
        number += 1
        candidate = folder / f"{stem}-{number}{suffix}"
    return candidate


class NotebookHandler(APIHandler):
    @web.authenticated
    def post(self) -> None:
        body = self.get_json_body() or {}
        paths = body.get("paths") or []
        if not isinstance(paths, list) or len(paths) > len(IMAGE_COLUMNS):
            raise web.HTTPError(400, "paths: up to 3 image files (frontal, lateral, prior)")
        root = self.settings["server_root_dir"]
        base = Path(os.path.realpath(root))
        if paths:
            real = [resolve_under_root(root, str(p)) for p in paths]
            for relative, path in zip(paths, real, strict=True):
                why = _why_not_an_image(path)
                if why:
                    raise web.HTTPError(
                        400, f"{relative} is {why}; a study takes PNG, JPEG or DICOM images"
                    )
            folder = real[0].parent
            if any(p.parent != folder for p in real):
                raise web.HTTPError(400, "the images of one study must be in the same folder")
            target = _free_name(folder, f"{real[0].stem}-report", ".ipynb")
            notebook = study_notebook([str(p) for p in real])
        else:
            folder = _folder_under_root(root, str(body.get("dir", "")))
            target = _free_name(folder, "CXRReportGen", ".ipynb")
            notebook = study_notebook([])
        with open(target, "x", encoding="utf-8") as handle:
            json.dump(notebook, handle, indent=1)
        self.finish(json.dumps({"path": target.relative_to(base).as_posix()}))


def _why_not_an_image(path: Path) -> str | None:
    try:
        return not_an_image(path)
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc.__class__.__name__})"


def _folder_under_root(root: str, relative: str) -> Path:
    base = Path(os.path.realpath(root))
    if relative.startswith(("/", "\\")) or ".." in Path(relative).parts:
        raise web.HTTPError(400, "dir must be a folder under the server's root directory")
    folder = Path(os.path.realpath(base / relative))
    if (folder != base and base not in folder.parents) or not folder.is_dir():
        raise web.HTTPError(400, f"{relative!r} is not a folder under the root directory")
    return folder


def tutorials_folder() -> Path | None:
    """The bundled tutorials: in the installed package, or ``notebooks/`` of a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "tutorials", here.parent / "notebooks"):
        if candidate.is_dir() and any(candidate.glob("*.ipynb")):
            return candidate
    return None


class TutorialsHandler(APIHandler):
    @web.authenticated
    def post(self) -> None:
        body = self.get_json_body() or {}
        folder = _folder_under_root(self.settings["server_root_dir"], str(body.get("dir", "")))
        source = tutorials_folder()
        if source is None:
            raise web.HTTPError(404, "this installation has no bundled tutorials")
        copied, skipped = [], []
        for notebook in sorted(source.glob("*.ipynb")):
            target = folder / notebook.name
            if target.exists():
                skipped.append(notebook.name)
                continue
            shutil.copyfile(notebook, target)
            copied.append(notebook.name)
        self.finish(json.dumps({"copied": copied, "skipped": skipped}))


class _LocalEndpoint:
    """The one local endpoint this server runs (``cxr-widgets serve`` in-process)."""

    def __init__(self) -> None:
        self.endpoint: Any = None
        self._lock = threading.Lock()

    def status(self) -> dict[str, Any]:
        running = self.endpoint is not None
        return {"running": running, "url": self.endpoint.scoring_uri if running else None}

    def start(self) -> dict[str, Any]:
        with self._lock:
            if self.endpoint is None:
                from .local import LocalEndpoint

                endpoint = LocalEndpoint()
                endpoint.start()
                self.endpoint = endpoint
        return self.status()

    def stop(self) -> dict[str, Any]:
        with self._lock:
            if self.endpoint is not None:
                self.endpoint.stop()
                self.endpoint = None
        return self.status()


_local = _LocalEndpoint()


class LocalEndpointHandler(APIHandler):
    @web.authenticated
    def get(self) -> None:
        self.finish(json.dumps(_local.status()))

    @web.authenticated
    async def post(self) -> None:
        action = (self.get_json_body() or {}).get("action")
        if action not in ("start", "stop"):
            raise web.HTTPError(400, "action must be 'start' or 'stop'")
        loop = asyncio.get_running_loop()
        try:
            status = await loop.run_in_executor(
                None, _local.start if action == "start" else _local.stop
            )
        except CxrWidgetsError as exc:
            raise web.HTTPError(500, _first_line(str(exc))) from None
        self.finish(json.dumps(status))


def _load_jupyter_server_extension(server_app: Any) -> None:
    """Register the routes on the Jupyter server (called by jupyter_server)."""
    web_app = server_app.web_app
    base = url_path_join(web_app.settings["base_url"], "cxr-widgets", "api")
    web_app.add_handlers(
        ".*$",
        [
            (url_path_join(base, "image"), ImageInfoHandler),
            (url_path_join(base, "pixels"), PixelsHandler),
            (url_path_join(base, "notebook"), NotebookHandler),
            (url_path_join(base, "tutorials"), TutorialsHandler),
            (url_path_join(base, "local-endpoint"), LocalEndpointHandler),
        ],
    )
    server_app.log.info("cxr-widgets: chest X-ray viewer routes at %s", base)
