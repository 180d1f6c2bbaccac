"""`eval split`: a stratified train/test split of a labelled CSV, written as case files."""

from __future__ import annotations

import csv
import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

from kbservice.errors import KBError


def stratified_test_rows(labels: list[str], *, test_share: float, rng: random.Random) -> set[int]:
    """The row indices held out for testing: per label (in sorted order), a shuffled `test_share` of its rows."""
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_label[label].append(i)
    test: set[int] = set()
    for label in sorted(by_label):
        members = by_label[label][:]
        rng.shuffle(members)
        test.update(members[: round(len(members) * test_share)])
    return test


def split_labelled_csv(
    path: Path,
    *,
    out_dir: Path,
    label_column: str,
    text_column: str,
    id_column: str | None,
    test_share: float,
    seed: int,
) -> dict[str, Any]:
    """Writes train.jsonl and test.jsonl (case format) from a labelled CSV, stratified by label."""
    if not path.exists():
        raise KBError(f"{path} does not exist")
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or label_column not in rows[0] or text_column not in rows[0]:
        raise KBError(f"{path} needs columns {label_column!r} and {text_column!r}")
    if id_column is not None:
        ids = [row.get(id_column) or "" for row in rows]
        if len(set(ids)) != len(ids) or not all(ids):
            raise KBError(
                f"column {id_column!r} of {path} does not hold unique ids; leave --id-column out to "
                "number the rows instead"
            )
    test = stratified_test_rows([row[label_column] for row in rows], test_share=test_share, rng=random.Random(seed))
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, chosen in (("train", [i for i in range(len(rows)) if i not in test]), ("test", sorted(test))):
        with (out_dir / f"{name}.jsonl").open("w", encoding="utf-8") as handle:
            for i in chosen:
                row = rows[i]
                case_id = row[id_column] if id_column else f"row-{i + 1}"
                record = {"id": case_id, "findings": row[text_column], "diagnosis": row[label_column]}
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        counts[name] = len(chosen)
    return {"train": str(out_dir / "train.jsonl"), "test": str(out_dir / "test.jsonl"), **counts}
