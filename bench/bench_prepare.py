"""Image preparation for the NEMA chest radiograph: time and bytes per setting.

Beside the model documentation's approach (the image file's raw bytes,
base64-encoded), prints for RG1_UNCR (uncompressed DICOM) and RG1_J2KR
(JPEG 2000) the prepare_image time (median), PNG and base64 bytes at several
shortest-side settings and at full resolution, then how resampling and PNG
compression settings trade time for bytes, and what the viewer's 16-bit
overview costs (load_pixels, overview, each encoding for the browser).

Run: .venv/bin/python bench/bench_prepare.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import base64
import io
import time
from pathlib import Path

import numpy as np
from common import machine, median_seconds, print_table
from PIL import Image

from cxr_widgets.contract import DEFAULT_REQUEST_BUDGET
from cxr_widgets.images import (
    DEFAULT_OVERVIEW_SIDE,
    DEFAULT_SHORTEST_SIDE,
    MODEL_INPUT_SIDE,
    decode_uint16,
    encode_uint16,
    load_pixels,
    prepare_image,
)
from cxr_widgets.images.pixels import DEFAULT_ZLIB_LEVEL
from cxr_widgets.samples import sample_path

SOURCES = ("RG1_UNCR.dcm", "RG1_J2KR.dcm")
SIDES = (518, 640, 768, 896, 1036)


def kb(n: float) -> str:
    return f"{n / 1000:,.1f} KB"


def size_table(repeat: int) -> None:
    rows = []
    for name in SOURCES:
        path = sample_path(name)
        raw = path.read_bytes()
        raw_time = median_seconds(lambda p=path: base64.b64encode(p.read_bytes()), repeat)
        raw_b64 = len(base64.b64encode(raw))
        rows.append(
            (
                name,
                "raw file, base64 (documentation)",
                "as stored",
                f"{raw_time * 1000:.1f} ms",
                kb(len(raw)),
                kb(raw_b64),
                "yes" if 3 * raw_b64 < DEFAULT_REQUEST_BUDGET else "no",
            )
        )
        settings: list[tuple[str, dict]] = [
            (
                f"shortest_side={side}" + (" (default)" if side == DEFAULT_SHORTEST_SIDE else ""),
                {"shortest_side": side},
            )
            for side in SIDES
        ]
        settings.append(("full_resolution=True", {"full_resolution": True}))
        for label, options in settings:
            prepared = prepare_image(path, **options)
            seconds = median_seconds(lambda p=path, o=options: prepare_image(p, **o), repeat)
            b64 = len(prepared.base64)
            rows.append(
                (
                    name,
                    label,
                    f"{prepared.size[0]}x{prepared.size[1]}",
                    f"{seconds * 1000:.0f} ms",
                    kb(prepared.nbytes),
                    kb(b64),
                    "yes" if 3 * b64 < DEFAULT_REQUEST_BUDGET else "no",
                )
            )
    print_table(
        (
            "source",
            "method",
            "size sent",
            "prepare (median)",
            "image bytes",
            "base64 bytes",
            "3 images < 1.5 MB",
        ),
        rows,
    )
    print(
        "\nThe raw DICOM row is what 'base64 the file' gives; the endpoint accepts only PNG "
        "or JPEG, so those bytes would be refused as well as being over budget."
    )


def resample_table(repeat: int) -> None:
    full = prepare_image(sample_path(SOURCES[0]), full_resolution=True).image
    reference = None
    rows = []
    for side in (MODEL_INPUT_SIDE, DEFAULT_SHORTEST_SIDE, 1036):
        scale = side / min(full.size)
        size = (side, round(full.size[1] * scale))
        for label, gap in (
            ("Lanczos (used)", None),
            ("reduce + Lanczos, reducing_gap=2", 2.0),
            ("reduce + Lanczos, reducing_gap=1", 1.0),
        ):
            seconds = median_seconds(
                lambda s=size, g=gap: full.resize(s, Image.Resampling.LANCZOS, reducing_gap=g),
                repeat,
            )
            out = np.asarray(full.resize(size, Image.Resampling.LANCZOS, reducing_gap=gap))
            if gap is None:
                reference = out
                diff = "-"
            else:
                delta = np.abs(out.astype(int) - reference.astype(int))
                diff = f"max {delta.max()}, mean {delta.mean():.3f}"
            rows.append((f"{size[0]}x{size[1]}", label, f"{seconds * 1000:.1f} ms", diff))
    print_table(("size", "resampling", "time (median)", "grey levels vs Lanczos"), rows)


def compression_table(repeat: int) -> None:
    image = prepare_image(sample_path(SOURCES[0])).image
    rows = []
    for level in (1, 3, 6, 9):

        def encode(level: int = level) -> bytes:
            buffer = io.BytesIO()
            image.save(buffer, format="PNG", compress_level=level)
            return buffer.getvalue()

        seconds = median_seconds(encode, repeat)
        rows.append((level, f"{seconds * 1000:.1f} ms", kb(len(encode()))))
    print_table((f"PNG compress_level ({image.size[0]}x{image.size[1]})", "time", "bytes"), rows)


def viewer_table(repeat: int) -> None:
    """load_pixels and the 16-bit overview in each encoding: bytes and time."""
    rows = []
    for name in SOURCES:
        path = sample_path(name)
        seconds = median_seconds(lambda p=path: load_pixels(p), repeat)
        rows.append((name, "load_pixels", "-", "-", f"{seconds * 1000:.0f} ms", "-"))
    pixels = load_pixels(sample_path(SOURCES[0]))
    for side in (DEFAULT_OVERVIEW_SIDE, 1536, 2048):
        overview, _scale = pixels.overview(side)
        seconds = median_seconds(lambda s=side: pixels.overview(s), repeat)
        shape = f"{overview.shape[1]}x{overview.shape[0]}"
        rows.append(
            (
                SOURCES[0],
                "overview (box filter)",
                shape,
                kb(overview.nbytes),
                f"{seconds * 1000:.0f} ms",
                "-",
            )
        )
        for codec, level in (
            ("zlib-delta", DEFAULT_ZLIB_LEVEL),
            ("zlib-zigzag", DEFAULT_ZLIB_LEVEL),
            ("zlib-delta", 6),
            ("zlib", DEFAULT_ZLIB_LEVEL),
            ("png16", DEFAULT_ZLIB_LEVEL),
            ("png16", 6),
        ):
            data = encode_uint16(overview, codec, level)
            encode = median_seconds(
                lambda o=overview, c=codec, v=level: encode_uint16(o, c, v), repeat
            )
            decode = median_seconds(
                lambda d=data, c=codec, s=overview.shape: decode_uint16(d, s, c), repeat
            )
            rows.append(
                (
                    SOURCES[0],
                    f"{codec}, level {level}",
                    shape,
                    kb(len(data)),
                    f"{encode * 1000:.0f} ms",
                    f"{decode * 1000:.0f} ms",
                )
            )
    print_table(("source", "step", "size", "bytes", "time (median)", "decode in Python"), rows)
    print(
        "\nBrowsers decode PNG to 8 bits, so png16 would need a PNG decoder in JavaScript; "
        "zlib-delta and zlib-zigzag (the widget viewer's) inflate with the browser's "
        "DecompressionStream('deflate')."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"# prepare_image on the NEMA chest radiograph\n\nMachine: {machine()}")
    print(f"Run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, median of {args.repeat}\n")
    size_table(args.repeat)
    print()
    resample_table(args.repeat)
    print()
    compression_table(args.repeat)
    print()
    viewer_table(args.repeat)
    print(f"\nFiles: {', '.join(str(Path(sample_path(n)).name) for n in SOURCES)} (pydicom-data)")


if __name__ == "__main__":
    main()
