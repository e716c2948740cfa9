"""Long fuzz runs: prepare_image on mutated files, parse_response on generated bodies.

The same generators as the test suite (tests/test_fuzz_images.py and
tests/test_fuzz_response.py), run at scale:

* prepare_image on >= 2,000 mutated files: bit flips, byte overwrites,
  truncations, PNG chunks with repaired CRCs and hostile DICOM header values,
  of real PNG (8-bit, 16-bit, palette), JPEG (baseline, progressive) and DICOM
  files made from the NEMA chest radiograph RG1, and of RG1_UNCR.dcm itself.
* parse_response on >= 10,000 bodies from the hypothesis strategies: valid,
  nearly valid and hostile JSON in all three response shapes, and random bytes,
  in strict and lenient mode.
* decompression bombs, each in a fresh process: peak memory of the refusal.

Outcomes are "ok", the package's own error (ImageError / ResponseFormatError)
or "other"; any "other" (another exception, or a returned report holding an
invalid box) is a bug and is printed with the input that caused it.

Run: .venv/bin/python bench/fuzz.py [--images 2400] [--bodies 12000] [--seed 1]
"""

from __future__ import annotations

import argparse
import statistics
import struct
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from common import machine, print_table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import test_fuzz_images as images_kit  # noqa: E402  (the test suite's generators)
import test_fuzz_response as response_kit  # noqa: E402

from cxr_widgets import parse_response  # noqa: E402
from cxr_widgets.errors import ResponseFormatError  # noqa: E402
from cxr_widgets.images import PNG_MAGIC  # noqa: E402
from cxr_widgets.report import validate_box  # noqa: E402
from cxr_widgets.samples import sample_path  # noqa: E402

#: Share of the image cases spent on the full 7 MB radiograph (slow to decode).
RG1_SHARE = 0.05


def vm_mb(field: str) -> float:
    """A /proc/self/status memory figure (VmRSS, VmHWM) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> float:
    """Reset the peak RSS to the current RSS (Linux clear_refs); return the current RSS."""
    Path("/proc/self/clear_refs").write_text("5")
    return vm_mb("VmRSS")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


# --- prepare_image ----------------------------------------------------------------------


def fuzz_images(total: int, seed: int) -> list[tuple]:
    seeds = images_kit.seed_files(sample_path())
    for data in seeds.values():  # warm up decoders and lazy imports
        images_kit.run_case(data)
    small = [name for name in seeds if name != "rg1"]
    rg1_cases = max(1, round(total * RG1_SHARE))
    per_seed = {name: -(-(total - rg1_cases) // len(small)) for name in small}
    per_seed["rg1"] = rg1_cases
    # Peak RSS per call: reset the high-water mark before each case, read it after.
    peaks: dict[str, list[float]] = {name: [] for name in per_seed}
    baseline = [reset_peak()]
    worst: list[tuple[float, str, bytes]] = [(0.0, "", b"")]

    def on_case(name: str, data: bytes, outcome: str, seconds: float, error: object) -> None:
        growth = max(0.0, vm_mb("VmHWM") - baseline[0])
        peaks[name].append(growth)
        if growth > worst[0][0]:
            worst[0] = (growth, name, data)
        baseline[0] = reset_peak()

    start = time.perf_counter()
    results = images_kit.fuzz(seeds, per_seed, seed=seed, on_case=on_case)
    wall = time.perf_counter() - start
    rows = []
    bugs = []
    for name, record in results.items():
        times = record["times"]
        rows.append(
            (
                name,
                f"{len(seeds[name]):,} B",
                len(times),
                len(record["ok"]),
                len(record["ImageError"]),
                len(record["other"]),
                ms(statistics.median(times)),
                ms(max(times)),
                f"{max(peaks[name]):.0f} MB",
            )
        )
        bugs.extend((name, data, error) for data, error in record["other"])
    every = [t for r in results.values() for t in r["times"]]
    rows.append(
        (
            "all",
            "",
            len(every),
            sum(len(r["ok"]) for r in results.values()),
            sum(len(r["ImageError"]) for r in results.values()),
            len(bugs),
            ms(statistics.median(every)),
            ms(max(every)),
            f"{max(max(p) for p in peaks.values()):.0f} MB",
        )
    )
    print(f"\n### prepare_image on mutated files ({wall:.0f} s in all)\n")
    print_table(
        (
            "seed file",
            "seed size",
            "cases",
            "ok",
            "ImageError",
            "other",
            "median time",
            "max time",
            "max peak RSS growth",
        ),
        rows,
    )
    growth, name, data = worst[0]
    print(f"\nLargest peak: {growth:.0f} MB, a mutated {name}: {describe(data)}")
    return bugs


def describe(data: bytes) -> str:
    """What a mutated file claims to be (the PNG header, or prepare_image's description)."""
    if data.startswith(PNG_MAGIC):
        width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
        return f"PNG header {width}x{height}, bit depth {depth}, colour type {colour}"
    outcome, _, error = images_kit.run_case(data)
    return outcome if error is None else f"{outcome}: {str(error)[:120]}"


def bomb_table() -> None:
    rg1 = sample_path()
    cases = {
        "PNG header 30000x30000": images_kit.png_bomb(30000, 30000),
        "JPEG header 30000x30000": images_kit.jpeg_bomb(30000),
        "DICOM Rows/Columns 60000": images_kit.dicom_bomb(rg1, 60000),
        "real PNG 6000x6000 (decoded, for scale)": images_kit.png_bomb(6000, 6000),
        "real 16-bit PNG 8000x8000 (at max_pixels)": images_kit.png_bomb(8000, 8000, 16),
        "RG1_UNCR.dcm (decoded, for scale)": rg1.read_bytes(),
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in cases.items():
            result = images_kit.peak_memory(data, Path(tmp))
            rows.append(
                (
                    name,
                    f"{len(data):,} B",
                    result["outcome"],
                    ms(float(result["seconds"])),
                    f"{float(result['rss_growth_mb']):.1f} MB",
                    f"{float(result['traced_peak_mb']):.1f} MB",
                )
            )
    print("\n### Decompression bombs, each in a fresh process\n")
    print_table(
        ("input", "file size", "outcome", "time", "peak RSS growth", "traced peak (numpy/Python)"),
        rows,
    )


# --- parse_response ---------------------------------------------------------------------


def fuzz_bodies(total: int, seed: int) -> list[tuple]:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis import strategies as st

    kit = response_kit
    kinds = st.one_of(
        st.tuples(st.just("valid"), st.tuples(kit.valid_output, kit.shapes, kit.encodings)),
        st.tuples(
            st.just("nearly valid"), st.tuples(kit.nearly_valid_output, kit.shapes, kit.encodings)
        ),
        st.tuples(st.just("hostile JSON"), st.tuples(kit.any_json, kit.encodings)),
        st.tuples(st.just("random bytes"), st.binary(max_size=200)),
    )
    counts: dict[str, Counter] = {}
    times: dict[str, list[float]] = {}
    bugs: list[tuple] = []

    def build(kind: str, parts: object) -> object:
        if kind in ("valid", "nearly valid"):
            output, shape, encoding = parts  # type: ignore[misc]
            try:
                return kit.encode(kit.as_body(output, shape), encoding)
            except (ValueError, OverflowError):  # json cannot encode it: the object itself
                return kit.as_body(output, "documented")
        if kind == "hostile JSON":
            body, encoding = parts  # type: ignore[misc]
            try:
                return kit.encode(body, encoding)
            except (ValueError, OverflowError):
                return body
        return parts

    def one(case: tuple, strict: bool) -> None:
        kind, parts = case
        body = build(kind, parts)
        start = time.perf_counter()
        try:
            reports = parse_response(body, strict=strict)
            outcome = "parsed"
        except ResponseFormatError:
            reports, outcome = [], "ResponseFormatError"
        except Exception as exc:
            reports, outcome = [], "other"
            bugs.append((kind, body, exc))
        times.setdefault(kind, []).append(time.perf_counter() - start)
        for report in reports:  # what parse_response returns never holds an invalid box
            for finding in report.findings:
                invalid = [b for b in finding.boxes if validate_box(b.as_list()) is not None]
                if invalid or not isinstance(finding.text, str):
                    outcome = "other"
                    bugs.append((kind, body, ValueError(f"accepted invalid {invalid}")))
        counts.setdefault(kind, Counter())[outcome] += 1

    before = reset_peak()
    start = time.perf_counter()
    round_number = 0
    while sum(sum(c.values()) for c in counts.values()) < total:
        remaining = total - sum(sum(c.values()) for c in counts.values())

        @hypothesis_seed(seed * 1000 + round_number)
        @settings(
            max_examples=remaining,
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(kinds, st.booleans())
        def run(case: tuple, strict: bool) -> None:
            one(case, strict)

        run()
        round_number += 1
    wall = time.perf_counter() - start
    growth = vm_mb("VmHWM") - before
    rows = []
    for kind in ("valid", "nearly valid", "hostile JSON", "random bytes"):
        c, t = counts.get(kind, Counter()), times.get(kind, [0.0])
        rows.append(
            (
                kind,
                sum(c.values()),
                c["parsed"],
                c["ResponseFormatError"],
                c["other"],
                ms(statistics.median(t)),
                ms(max(t)),
            )
        )
    every = [x for t in times.values() for x in t]
    total_counts = sum(counts.values(), Counter())
    rows.append(
        (
            "all",
            sum(total_counts.values()),
            total_counts["parsed"],
            total_counts["ResponseFormatError"],
            total_counts["other"],
            ms(statistics.median(every)),
            ms(max(every)),
        )
    )
    print(f"\n### parse_response on generated bodies ({wall:.0f} s, peak RSS +{growth:.0f} MB)\n")
    print_table(
        ("bodies", "cases", "parsed", "ResponseFormatError", "other", "median", "max"), rows
    )
    return bugs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2400, help="mutated image files")
    parser.add_argument("--bodies", type=int, default=12000, help="parse_response bodies")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    import warnings

    warnings.simplefilter("ignore")  # pydicom and Pillow warn about every mangled value
    print(f"Machine: {machine()}")
    bugs = fuzz_images(args.images, args.seed)
    bomb_table()
    bugs += fuzz_bodies(args.bodies, args.seed)
    if bugs:
        print(f"\n{len(bugs)} unexpected outcome(s):")
        for name, data, error in bugs[:20]:
            print(f"- {name}: {error!r} on {data[:80]!r}")
        return 1
    print("\nNo unexpected exception: every failure was ImageError or ResponseFormatError.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
