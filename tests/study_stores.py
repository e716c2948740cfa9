"""Synthetic results stores for the study browser's tests and benchmark.

``write_store(folder, n)`` draws a few synthetic radiograph-like PNGs, writes a
manifest for ``n`` studies that use them, and stores one report per study
(findings from a fixed vocabulary with boxes on the model's 0.01 grid; every
``failed_every``-th study failed) through :class:`ResultStore`, as a run does.
Deterministic for a given ``seed``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cxr_widgets.manifest import write_manifest
from cxr_widgets.report import Box, Finding, Report
from cxr_widgets.store import ResultStore

FINDINGS = [
    ("The heart size is normal.", False),
    ("The heart is mildly enlarged.", True),
    ("There is a small {side} pleural effusion.", True),
    ("Patchy opacity in the {side} lower lung may represent atelectasis.", True),
    ("No pneumothorax is seen.", False),
    ("There is mild pulmonary vascular congestion.", True),
    ("Healed fractures of the {side} posterior ribs are noted.", True),
    ("No focal consolidation.", False),
    ("A {side} central venous catheter ends in the superior vena cava.", True),
    ("Degenerative changes of the thoracic spine.", True),
    ("The lungs are clear.", False),
    ("There is a nodule in the {side} upper lobe.", True),
]
SIDES = ("right", "left")


@dataclass
class SyntheticStore:
    store: Path
    manifest: Path
    images: list[Path]
    study_ids: list[str]
    failed: list[str]


def _grid(value: float) -> float:
    return round((min(99, max(0, int(value * 100))) + 0.5) / 100, 3)


def _box(rng: random.Random) -> list[float]:
    x0, y0 = rng.uniform(0.02, 0.6), rng.uniform(0.05, 0.6)
    return [
        _grid(x0),
        _grid(y0),
        _grid(x0 + rng.uniform(0.1, 0.35)),
        _grid(y0 + rng.uniform(0.1, 0.3)),
    ]


def synthetic_report(rng: random.Random, study_id: str) -> Report:
    findings = []
    for template, grounded in rng.sample(FINDINGS, rng.randint(0, 6)):
        text = template.format(side=rng.choice(SIDES))
        boxes = [Box.from_list(_box(rng)) for _ in range(rng.randint(1, 2))] if grounded else []
        findings.append(Finding(text, boxes))
    return Report(
        findings=findings, image_size=(600, 512), demo=True, source="synthetic", study_id=study_id
    )


def draw_images(folder: Path, count: int = 6, size: tuple[int, int] = (600, 512)) -> list[Path]:
    """Radiograph-like grayscale PNGs (dark lungs, bright mediastinum, ribs), each different."""
    folder.mkdir(parents=True, exist_ok=True)
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    paths = []
    for number in range(count):
        r = np.random.default_rng(number)
        picture = 170 - 90 * np.exp(
            -(((x - width * 0.3) / 90) ** 2 + ((y - height * 0.5) / 150) ** 2)
        )
        picture -= 90 * np.exp(-(((x - width * 0.7) / 90) ** 2 + ((y - height * 0.5) / 150) ** 2))
        picture += 40 * (np.sin(y / (14 + number)) > 0.6)
        picture += r.normal(0, 6, size=picture.shape)
        path = folder / f"synthetic_{number:02d}.png"
        Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8), "L").save(path)
        paths.append(path)
    return paths


def write_store(
    folder: Path, n: int, *, failed_every: int = 25, seed: int = 0, images: int = 6
) -> SyntheticStore:
    """A results store of ``n`` studies in ``folder`` with its manifest and images."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    pictures = draw_images(folder / "images", images)
    ids = [f"S{i:05d}" for i in range(n)]
    rows = [
        {
            "study_id": sid,
            "frontal": pictures[i % len(pictures)],
            "indication": "Synthetic study.",
            "lateral": pictures[(i + 1) % len(pictures)] if i % 7 == 0 else "",
        }
        for i, sid in enumerate(ids)
    ]
    manifest = write_manifest(folder / "manifest.csv", rows)
    store_path = folder / "results.sqlite"
    failed = []
    with ResultStore(store_path) as store:
        ok_items = []
        for i, sid in enumerate(ids):
            if failed_every and i % failed_every == failed_every - 1:
                failed.append(sid)
                continue
            ok_items.append((f"key-{sid}", synthetic_report(rng, sid), sid))
        for start in range(0, len(ok_items), 500):
            store.put_many_ok(ok_items[start : start + 500])
        if failed:
            store.put_many_errors(
                [(f"key-{sid}", sid) for sid in failed], ("ModelError", "424: the model failed")
            )
        put_sources = getattr(store, "put_sources", None)
        if put_sources is not None:
            for row in rows:
                put_sources(
                    row["study_id"],
                    {
                        column: str(Path(row[name]).resolve())
                        for column, name in (
                            ("frontal_image", "frontal"),
                            ("lateral_image", "lateral"),
                        )
                        if row[name]
                    },
                )
    return SyntheticStore(store_path, manifest, pictures, ids, failed)
