"""How long `import cxr_widgets` takes beside `import azure.ai.ml` (fresh interpreters).

Run: .venv/bin/python bench/bench_import.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, print_table

MODULES = {
    "cxr_widgets": "import cxr_widgets",
    "cxr_widgets + Study/build_request": "from cxr_widgets import Study, build_request",
    "cxr_widgets.ReportGenWidget": "from cxr_widgets import ReportGenWidget",
    "azure.ai.ml": "import azure.ai.ml",
    "ipywidgets": "import ipywidgets",
}


def time_import(statement: str) -> float:
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    time_import("import cxr_widgets")  # warm the file cache
    rows = []
    for name, statement in MODULES.items():
        samples = [time_import(statement) for _ in range(args.repeat)]
        rows.append(
            (name, f"{statistics.median(samples) * 1000:.0f} ms", f"{min(samples) * 1000:.0f} ms")
        )
    print(f"import time, median of {args.repeat} fresh interpreters; {machine()}")
    print_table(["import", "median", "best"], rows)


if __name__ == "__main__":
    main()
