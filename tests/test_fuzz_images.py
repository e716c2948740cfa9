"""Fuzzing prepare_image: mutated PNG, JPEG and DICOM files give an image or ImageError.

Seeds are real files: the NEMA chest radiograph RG1 (full size, and an 8x
smaller copy that keeps its DICOM header, plain and JPEG 2000), and 8-bit,
16-bit and palette PNGs and JPEGs made from its pixels. Mutations are bit
flips, byte overwrites (random or "interesting" values such as 0xFFFFFFFF),
truncations, PNG chunks with repaired CRCs (so Pillow reads past the checksum),
PNGs rebuilt with hostile IHDR fields or mangled pixel rows, and DICOM header
elements set to hostile values. Every case must return a
PreparedImage or raise ImageError (never another exception), within a hang
guard; decompression bombs are refused before decoding, shown by the peak
memory of a fresh process.

CI runs a few hundred cases; ``bench/fuzz.py`` reuses this kit for thousands
and prints timings.
"""

from __future__ import annotations

import functools
import io
import json
import re
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import image_helpers
import numpy as np
import pytest

from cxr_widgets.errors import ImageError
from cxr_widgets.images import (
    MAX_PIXELS,
    build_png,
    decode_uint16,
    encode_uint16,
    load_pixels,
    png_chunks,
    prepare_image,
)

#: Generous per-call bound: a hang guard, not a performance claim (see bench/fuzz.py).
HANG_GUARD_SECONDS = 10.0

OUTCOMES = ("ok", "ImageError", "other")

# --- seeds ------------------------------------------------------------------------------


def _encode(image: object, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)  # type: ignore[attr-defined]
    return buffer.getvalue()


def _small_dicom(rg1_path: Path, step: int, transfer_syntax: str | None = None) -> bytes:
    """RG1 with its real header and pixels reduced ``step`` times."""
    import pydicom

    ds = pydicom.dcmread(rg1_path)
    small = np.ascontiguousarray(ds.pixel_array[::step, ::step])
    ds.Rows, ds.Columns = small.shape
    ds.PixelData = small.tobytes()
    if transfer_syntax:
        ds.compress(transfer_syntax, small)
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


@functools.lru_cache(maxsize=2)
def seed_files(rg1_path: Path) -> dict[str, bytes]:
    """Real files to mutate, by name; ``rg1`` is the NEMA radiograph itself (7 MB)."""
    from PIL import Image
    from pydicom.uid import JPEG2000Lossless

    pixels = prepare_image(rg1_path, full_resolution=True).image  # 8-bit, bone bright
    small = pixels.resize((pixels.width // 8, pixels.height // 8))
    import pydicom

    raw = pydicom.dcmread(rg1_path).pixel_array[::8, ::8]
    return {
        "png-8bit": _encode(small, "PNG"),
        "png-16bit": _encode(Image.fromarray(np.ascontiguousarray(raw, dtype=np.uint16)), "PNG"),
        "png-palette": _encode(small.quantize(32), "PNG"),
        "jpeg": _encode(small, "JPEG", quality=90),
        "jpeg-progressive": _encode(small.convert("RGB"), "JPEG", progressive=True),
        "dicom-small": _small_dicom(rg1_path, 8),
        "dicom-small-j2k": _small_dicom(rg1_path, 8, JPEG2000Lossless),
        "rg1": Path(rg1_path).read_bytes(),
    }


# --- mutations --------------------------------------------------------------------------

INTERESTING = (
    b"\x00",
    b"\xff",
    b"\x7f",
    b"\x80",
    b"\x00\x00",
    b"\xff\xff",
    b"\x00\x00\x00\x00",
    b"\xff\xff\xff\xff",
    b"\x7f\xff\xff\xff",
    b"\x80\x00\x00\x00",
)

#: DICOM elements that steer decoding, and hostile values for them.
DICOM_EDITS: dict[str, tuple[object, ...]] = {
    "Rows": (0, 1, 65535, 8000, 7),
    "Columns": (0, 1, 65535, 8000, 3),
    "BitsAllocated": (0, 1, 8, 12, 32, 64, 255),
    "BitsStored": (0, 1, 16, 17, 32, 255),
    "HighBit": (0, 15, 31, 255),
    "PixelRepresentation": (0, 1, 2, 255),
    "SamplesPerPixel": (0, 3, 4, 255),
    "PlanarConfiguration": (0, 1, 7),
    "PhotometricInterpretation": ("RGB", "YBR_FULL", "PALETTE COLOR", "MONOCHROME2", "XYZ", ""),
    "NumberOfFrames": (0, 2, 1000, -1),
    "WindowCenter": ("nan", "1e308", "-1e308", "0", ""),
    "WindowWidth": ("0", "-5", "inf", "1e-30", "nan"),
    "RescaleSlope": ("0", "nan", "1e308", "-1", "inf"),
    "RescaleIntercept": ("nan", "1e308", "-32768"),
    "VOILUTFunction": ("SIGMOID", "LINEAR_EXACT", "BOGUS"),
}


def flip_bits(data: bytearray, rng: np.random.Generator) -> None:
    """1-8 bit flips, half of them in the first KB (where the headers are)."""
    for _ in range(int(rng.integers(1, 9))):
        if data:
            limit = len(data) if rng.random() < 0.5 else min(len(data), 1024)
            data[int(rng.integers(0, limit))] ^= 1 << int(rng.integers(0, 8))


def overwrite_bytes(data: bytearray, rng: np.random.Generator) -> None:
    """A run of random bytes or an "interesting" value, usually in the header."""
    if not data:
        return
    limit = min(len(data), 1024) if rng.random() < 0.7 else len(data)
    start = int(rng.integers(0, limit))
    if rng.random() < 0.5:
        value = INTERESTING[int(rng.integers(0, len(INTERESTING)))]
    else:
        value = rng.bytes(int(rng.integers(1, 33)))
    data[start : start + len(value)] = value


def truncate(data: bytearray, rng: np.random.Generator) -> None:
    del data[int(rng.integers(0, max(1, len(data)))) :]


def fix_png_crcs(data: bytearray) -> None:
    """Recompute every chunk CRC that still lies inside the file (Pillow checks them)."""
    pos = 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        end = pos + 8 + length
        if length > len(data) or end + 4 > len(data):
            return
        data[end : end + 4] = struct.pack(">I", zlib.crc32(bytes(data[pos + 4 : end])))
        pos = end + 4


#: IHDR fields (offset, format) and hostile values: width, height, depth, colour, interlace.
PNG_HEADER_EDITS: tuple[tuple[int, str, tuple[int, ...]], ...] = (
    (0, ">I", (0, 1, 2**31 - 1, 7999, 100_000)),
    (4, ">I", (0, 1, 2**31 - 1, 7999, 100_000)),
    (8, ">B", (1, 2, 3, 4, 8, 16, 255)),
    (9, ">B", (0, 1, 2, 3, 4, 6, 7)),
    (12, ">B", (0, 1, 2)),
)


def mutate_png_structure(data: bytes, rng: np.random.Generator) -> bytes:
    """A PNG that passes every checksum: hostile IHDR fields, or mangled pixel rows.

    Byte-level mutations mostly die at a CRC or in zlib; this reaches the decoder
    itself (filter types, row lengths, palette indexes, bit depth / colour type mismatches).
    """
    chunks = list(png_chunks(data))
    raw = bytearray(zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT")))
    ihdr = bytearray(chunks[0][1])
    if rng.random() < 0.5:
        offset, fmt, values = PNG_HEADER_EDITS[int(rng.integers(0, len(PNG_HEADER_EDITS)))]
        struct.pack_into(fmt, ihdr, offset, values[int(rng.integers(0, len(values)))])
    else:
        [flip_bits, overwrite_bytes, truncate][int(rng.integers(0, 3))](raw, rng)
    rest = [(k, b) for k, b in chunks[1:] if k not in (b"IDAT", b"IEND")]
    idat = zlib.compress(bytes(raw))
    return build_png([(b"IHDR", bytes(ihdr)), *rest, (b"IDAT", idat), (b"IEND", b"")])


def edit_dicom_header(data: bytes, rng: np.random.Generator) -> bytes:
    """Set one to three pixel-describing elements to hostile values (via pydicom)."""
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    names = list(DICOM_EDITS)
    for index in rng.choice(len(names), size=int(rng.integers(1, 4)), replace=False):
        name = names[int(index)]
        values = DICOM_EDITS[name]
        value = values[int(rng.integers(0, len(values)))]
        try:
            setattr(ds, name, value)
        except (ValueError, OverflowError, struct.error):
            continue  # pydicom refuses this value for the VR; try the others
    buffer = io.BytesIO()
    try:
        ds.save_as(buffer)
    except (ValueError, OverflowError, struct.error):
        return data
    return buffer.getvalue()


def mutate(name: str, data: bytes, rng: np.random.Generator) -> bytes:
    """One mutated copy of seed ``name``; the choice of mutation is drawn from ``rng``."""
    if name.startswith("dicom") and rng.random() < 0.3:
        return edit_dicom_header(data, rng)
    if name.startswith("png") and rng.random() < 0.3:
        return mutate_png_structure(data, rng)
    out = bytearray(data)
    operation = int(rng.integers(0, 4))
    if operation == 0:
        flip_bits(out, rng)
    elif operation == 1:
        overwrite_bytes(out, rng)
    elif operation == 2:
        truncate(out, rng)
    else:
        flip_bits(out, rng)
        overwrite_bytes(out, rng)
        if rng.random() < 0.3:
            truncate(out, rng)
    if name.startswith("png") and rng.random() < 0.5:
        fix_png_crcs(out)
    return bytes(out)


# --- running cases ----------------------------------------------------------------------


def run_case(data: bytes) -> tuple[str, float, BaseException | None]:
    """(outcome, seconds, exception) of prepare_image on ``data`` with default options."""
    start = time.perf_counter()
    try:
        prepare_image(data)
        outcome, error = "ok", None
    except ImageError as exc:
        outcome, error = "ImageError", exc
    except Exception as exc:
        outcome, error = "other", exc
    return outcome, time.perf_counter() - start, error


def fuzz(
    seeds: dict[str, bytes],
    cases_per_seed: dict[str, int],
    seed: int,
    on_case: Callable[[str, bytes, str, float, BaseException | None], None] | None = None,
) -> dict[str, dict[str, list]]:
    """Run the cases; per seed: outcome counts, per-call times and the unexpected exceptions."""
    results: dict[str, dict[str, list]] = {}
    for name, count in cases_per_seed.items():
        rng = np.random.default_rng([seed, sum(name.encode())])
        record: dict[str, list] = {"times": [], "other": [], **{o: [] for o in OUTCOMES[:2]}}
        for _ in range(count):
            data = mutate(name, seeds[name], rng)
            outcome, seconds, error = run_case(data)
            record["times"].append(seconds)
            if outcome == "other":
                record["other"].append((data, error))
            else:
                record[outcome].append(error)
            if on_case:
                on_case(name, data, outcome, seconds, error)
        results[name] = record
    return results


# --- bombs and peak memory ------------------------------------------------------------


def png_bomb(width: int, height: int, depth: int = 8) -> bytes:
    """A valid greyscale PNG of zeros: a small file that inflates to width x height pixels."""
    return image_helpers.png_bomb(width, height, depth)


def jpeg_bomb(side: int) -> bytes:
    """A real small JPEG whose frame header is rewritten to claim side x side pixels."""
    from PIL import Image

    jpeg = bytearray(_encode(Image.new("L", (64, 64), 128), "JPEG"))
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5 : sof + 9] = struct.pack(">HH", side, side)
    return bytes(jpeg)


def dicom_bomb(rg1_path: Path, side: int) -> bytes:
    """The small RG1 DICOM with Rows/Columns claiming side x side (pixel data unchanged)."""
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(_small_dicom(rg1_path, 8)))
    ds.Rows = ds.Columns = side
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


_PEAK_SCRIPT = textwrap.dedent(
    """
    import json, sys, time, tracemalloc
    from pathlib import Path
    from cxr_widgets.errors import ImageError
    from cxr_widgets.images import prepare_image
    import PIL.PngImagePlugin, PIL.JpegImagePlugin, pydicom.pixels  # imports out of the peak

    def status_mb(field):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024

    data = Path(sys.argv[1]).read_bytes()
    try:
        prepare_image(data[:64])  # warm up lazy imports on a rejected header
    except ImageError:
        pass
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    before = status_mb("VmRSS")
    tracemalloc.start()
    start = time.perf_counter()
    try:
        prepare_image(data)
        outcome, message = "ok", ""
    except ImageError as exc:
        outcome, message = "ImageError", str(exc)
    seconds = time.perf_counter() - start
    traced = tracemalloc.get_traced_memory()[1]
    print(json.dumps({"outcome": outcome, "message": message, "seconds": seconds,
                      "rss_growth_mb": status_mb("VmHWM") - before,
                      "traced_peak_mb": traced / 2**20}))
    """
)


def peak_memory(data: bytes, workdir: Path) -> dict[str, object]:
    """prepare_image(data) in a fresh interpreter: outcome, time, peak RSS growth, traced peak.

    Peak RSS is Linux's VmHWM, reset just before the call (``ru_maxrss`` would
    include the parent's size, which survives fork and exec). ``traced_peak_mb``
    covers Python and numpy allocations only; Pillow's pixel buffers show in RSS.
    """
    path = workdir / f"case-{zlib.crc32(data):08x}.bin"
    path.write_bytes(data)
    done = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- tests --------------------------------------------------------------------------------

SMALL_SEEDS = ("png-8bit", "png-16bit", "png-palette", "jpeg", "jpeg-progressive")
DICOM_SEEDS = ("dicom-small", "dicom-small-j2k")


def _check(results: dict[str, dict[str, list]]) -> list[float]:
    times = []
    for name, record in results.items():
        assert not record["other"], (name, [repr(e) for _, e in record["other"]])
        for error in record["ImageError"]:
            text = str(error)
            assert text.strip() and "Traceback" not in text
            # No chained library traceback is shown under the message.
            assert error.__cause__ is None
            assert error.__context__ is None or error.__suppress_context__
        times.extend(record["times"])
    assert max(times) < HANG_GUARD_SECONDS, max(times)
    return times


@pytest.fixture(scope="module")
def seeds(rg1_path: Path) -> dict[str, bytes]:
    found = seed_files(rg1_path)
    for name, data in found.items():  # unmutated seeds are good images
        assert run_case(data)[0] == "ok", name
    return found


@pytest.mark.timeout(60)
@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom/Pillow warn about mangled values
def test_mutated_png_and_jpeg(seeds: dict[str, bytes]) -> None:
    results = fuzz(seeds, {name: 50 for name in SMALL_SEEDS}, seed=1)
    _check(results)
    outcomes = {o: sum(len(r[o]) for r in results.values()) for o in OUTCOMES[:2]}
    assert outcomes["ok"] > 10 and outcomes["ImageError"] > 50, outcomes  # both paths reached


@pytest.mark.timeout(60)
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_mutated_dicom(seeds: dict[str, bytes]) -> None:
    results = fuzz(seeds, {name: 60 for name in DICOM_SEEDS}, seed=2)
    _check(results)
    outcomes = {o: sum(len(r[o]) for r in results.values()) for o in OUTCOMES[:2]}
    assert outcomes["ok"] > 10 and outcomes["ImageError"] > 20, outcomes


@pytest.mark.timeout(60)
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_mutated_nema_radiograph(seeds: dict[str, bytes]) -> None:
    """The full 7 MB RG1_UNCR itself, mutated."""
    _check(fuzz(seeds, {"rg1": 16}, seed=3))


def viewer_case(data: bytes) -> str:
    """What the viewer and the server extension do with a file: load_pixels, an overview,
    a region, the browser encoding; then prepare_image from those pixels, which must
    equal prepare_image from the bytes. Returns "ok" or "ImageError"; anything else raises."""
    try:
        pixels = load_pixels(data)
    except ImageError:
        with pytest.raises(ImageError):
            prepare_image(data)
        return "ImageError"
    overview, scale = pixels.overview(256)
    assert overview.dtype == np.uint16 and 0 < scale <= 1 and max(overview.shape) <= 256
    codes, _, box = pixels.region(pixels.width // 4, pixels.height // 4, 64, 64, 32)
    assert max(codes.shape) <= 32 and box[2] <= 64 and box[3] <= 64
    assert np.array_equal(decode_uint16(encode_uint16(overview), overview.shape), overview)
    try:
        from_bytes = prepare_image(data).png
    except ImageError as error:  # the model's rules (shape) refuse what a viewer can show
        with pytest.raises(ImageError, match=re.escape(str(error).split(": ", 1)[-1][:40])):
            prepare_image(pixels)
        return "ImageError"
    assert prepare_image(pixels).png == from_bytes
    return "ok"


@pytest.mark.timeout(120)
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_viewer_path_on_mutated_files(seeds: dict[str, bytes]) -> None:
    """load_pixels, overviews, regions and their encoding on mutated files: only
    ImageError, and prepare_image from the pixels equals prepare_image from the bytes."""
    outcomes = Counter()
    for name in SMALL_SEEDS + DICOM_SEEDS:
        rng = np.random.default_rng([4, sum(name.encode())])
        for _ in range(25):
            outcomes[viewer_case(mutate(name, seeds[name], rng))] += 1
    assert outcomes["ok"] > 20 and outcomes["ImageError"] > 20, outcomes


def test_mutations_are_deterministic(seeds: dict[str, bytes]) -> None:
    first = [mutate("dicom-small", seeds["dicom-small"], np.random.default_rng(7)) for _ in "ab"]
    again = [mutate("dicom-small", seeds["dicom-small"], np.random.default_rng(7)) for _ in "ab"]
    assert first == again and first[0] != seeds["dicom-small"]


@pytest.mark.timeout(120)
def test_bombs_are_refused_before_decoding(rg1_path: Path, tmp_path: Path) -> None:
    """Peak memory of a fresh process stays small for 0.9-3.6 gigapixel claims."""
    bombs = {
        "png 30000x30000": png_bomb(30000, 30000),
        "jpeg 30000x30000": jpeg_bomb(30000),
        "dicom 60000x60000": dicom_bomb(rg1_path, 60000),
    }
    assert all(len(data) < 2_000_000 for data in bombs.values())
    for name, data in bombs.items():
        result = peak_memory(data, tmp_path)
        assert result["outcome"] == "ImageError", (name, result)
        assert "decompression bomb" in str(result["message"]), (name, result)
        # A decoded 30000x30000 8-bit image alone would be 900 MB.
        assert float(result["rss_growth_mb"]) < 30, (name, result)
        assert float(result["traced_peak_mb"]) < 30, (name, result)


@pytest.mark.timeout(120)
def test_peak_memory_measurement_sees_a_real_decode(tmp_path: Path) -> None:
    """The probe above is not blind: decoding a genuine 6000x6000 PNG shows up in it."""
    assert MAX_PIXELS > 6000 * 6000
    result = peak_memory(png_bomb(6000, 6000), tmp_path)
    assert result["outcome"] == "ok", result
    assert float(result["rss_growth_mb"]) > 30, result  # 36 MB of pixels at least
