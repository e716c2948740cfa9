"""Regenerate the README figure: the NEMA chest radiograph with example findings.

The findings are the response example of the CXRReportGen documentation
("How to use CXRReportGen"), parsed by the package like any answer; they are
not a reading of this image, so the picture is marked DEMO. The central
square the model grounds its boxes in is shown (``show_crop=True``).

    .venv/bin/python scripts/make_readme_figure.py [--output PATH] [--height PX]
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from cxr_widgets import parse_response, prepare_image
from cxr_widgets.render import render_findings
from cxr_widgets.samples import sample_path

#: The response example of the model documentation, verbatim.
DOCUMENTED_RESPONSE = """{
"output": [
["The heart size is normal.", null],
["Lungs demonstrate blunting of both costophrenic angles.", [[0.005, 0.555, 0.965, 0.865]]],
["There is an area of increased radiodensity overlying the left lower lung.", [[0.555, 0.405, 0.885, 0.745]]],
["Healed fractures of the left fourth, fifth, sixth, seventh, and eighth posterior ribs are noted.", [[0.585, 0.135, 0.925, 0.725]]]
]
}"""

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "docs" / "images" / "rg1_findings.png"
#: Keep the committed PNG small.
SIZE_BUDGET = 400_000


def encode(image, budget: int = SIZE_BUDGET) -> bytes:
    """PNG bytes; reduced to a 256-colour palette when the full-colour PNG is over budget."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    if buffer.tell() <= budget:
        return buffer.getvalue()
    buffer = io.BytesIO()
    image.quantize(colors=256, dither=0).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--height", type=int, default=720, help="image height in pixels")
    args = parser.parse_args(argv)

    frontal = prepare_image(sample_path(), full_resolution=True)
    (parsed,) = parse_response(DOCUMENTED_RESPONSE, n_studies=1)
    report = parsed.replace(
        image_size=frontal.original_size, demo=True, source="model documentation example"
    )

    picture = render_findings(frontal, report, show_crop=True, max_side=args.height, legend=True)
    data = encode(picture)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(data)
    print(args.output)
    print(f"{picture.width} x {picture.height} px, {len(data) / 1000:.0f} KB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
