"""`eval image-fusion --unlabelled SOURCE`: chest films without a diagnosis, stored as unlabelled image cases
so that the update cycle's self-supervised pre-training (imaging.cnn_pretrain_epochs) can learn from them.

A source is `todo` (the COVID-19 set's own X-rays whose finding is "todo": never in any split) or the path of
a MedMNIST-style .npz file (its `train_images`, e.g. PneumoniaMNIST). They are never test or held-out cases:
the encoder sees their pixels only, never a label, and never a film of a test patient (no "todo" patient has
a labelled image in the set today; the split's test patients are excluded all the same).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kbservice.imaging.prepare import write_png

TODO = "todo"


def unlabelled_case_file(
    sources: Sequence[str], *, covid_folder: Path, workdir: Path, test_patients: Collection[str]
) -> tuple[Path, list[dict[str, Any]]]:
    """A JSONL case file of image-only rows with no diagnosis, one per image of `sources` (see the module
    doc) except the films of `test_patients`, written in `workdir`, and how many images each source gave.
    Raises ValueError for a source that is neither `todo` nor an existing .npz file."""
    check_sources(sources)
    rows: list[dict] = []
    counts = []
    for source in sources:
        todo = source == TODO
        paths = todo_films(covid_folder, test_patients=test_patients) if todo else _npz_images(Path(source), workdir)
        counts.append({"source": source, "images": len(paths)})
        rows += [{"id": f"u{len(rows) + n}", "images": [str(path)]} for n, path in enumerate(paths)]
    path = workdir / "unlabelled.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, counts


def check_sources(sources: Sequence[str]) -> None:
    """Raises ValueError naming the first source that is neither `todo` nor an existing .npz file."""
    for source in sources:
        if source != TODO and not (source.endswith(".npz") and Path(source).is_file()):
            raise ValueError(f"an unlabelled source is {TODO!r} or an existing .npz file, not {source!r}")


def todo_films(folder: Path, *, test_patients: Collection[str] = ()) -> list[Path]:
    """The COVID-19 set's X-rays whose finding is "todo", except those of `test_patients`."""
    with (folder / "xray_licensed_metadata.csv").open(newline="", encoding="utf-8") as handle:
        return [
            (folder / "images256" / row["image_png"]).resolve()
            for row in csv.DictReader(handle)
            if row["finding"] == "todo" and row["patientid"] not in test_patients
        ]


def _npz_images(npz: Path, workdir: Path) -> list[Path]:
    with np.load(npz) as data:
        if "train_images" not in data:
            raise ValueError(f"{npz} has no 'train_images' array (expected the MedMNIST layout)")
        images = data["train_images"]
    folder = workdir / f"unlabelled-{npz.stem}"
    return [write_png(pixels, folder / f"{n}.png") for n, pixels in enumerate(images)]
