"""Install size and time: the base install beside the full one, side by side in one run.

Each variant is installed from this checkout into a fresh virtual environment
(pip's cache warm, as on a machine that installed once before; the first run
downloads). Prints distributions, megabytes on disk and seconds per variant, as
a Markdown table for docs/benchmarks.md. Takes about 3-4 minutes.

    .venv/bin/python bench/bench_install.py [--variants base,all]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

from common import machine, print_table

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {
    "base": "",
    "deploy": "[deploy]",
    "local": "[local]",
    "plot": "[plot]",
    "all": "[all]",
}


def _size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def measure(extra: str) -> tuple[int, float, float]:
    """(distributions, MB in the environment, seconds to install) for ``cxr-widgets{extra}``."""
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "env"
        venv.EnvBuilder(with_pip=True).create(target)
        python = str(target / "bin" / "python")
        empty = _size_mb(target)
        started = time.perf_counter()
        subprocess.run(
            [python, "-m", "pip", "install", "-q", f"{REPO}{extra}"],
            check=True,
            capture_output=True,
        )
        seconds = time.perf_counter() - started
        listed = subprocess.run(
            [python, "-m", "pip", "list", "--format=freeze"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        # pip itself (and setuptools, where the venv has it) come with any environment.
        count = len([line for line in listed if not line.startswith(("pip==", "setuptools=="))])
        return count, _size_mb(target) - empty, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--variants", default="base,all", help="comma-separated: " + ",".join(VARIANTS)
    )
    args = parser.parse_args()
    print(machine())
    rows = []
    for name in args.variants.split(","):
        extra = VARIANTS[name]
        count, megabytes, seconds = measure(extra)
        rows.append(
            (f"`pip install cxr-widgets{extra}`", count, f"{megabytes:.0f} MB", f"{seconds:.0f} s")
        )
        print(f"  {name}: done", file=sys.stderr)
    print_table(["install", "distributions", "size on disk", "time (warm cache)"], rows)


if __name__ == "__main__":
    main()
