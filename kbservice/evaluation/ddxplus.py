"""DDXPlus as case files: each synthetic patient's evidence codes rendered as a findings text with the
questions of `release_evidences.json`, split by patient (stratified by pathology, seeded).

Symptoms become the findings, antecedents (history questions) the history, age and sex their own fields;
a multi-choice answer joins its values ("Characterize your pain: sharp, heavy"); a scale answer keeps its
number ("How intense is the pain? 7/10"). Each test patient's gold differential (pathology -> probability)
is written beside the case files, so the evaluation can say how much of it kbservice's top 5 covers.
"""

from __future__ import annotations

import ast
import csv
import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

from kbservice.errors import KBError
from kbservice.evaluation.splits import stratified_test_rows

PATIENTS_FILE = "release_test_patients_mini_version.txt"
EVIDENCES_FILE = "release_evidences.json"


def _value_text(evidence: dict[str, Any], value: str) -> str:
    meaning = evidence.get("value_meaning", {}).get(value)
    if meaning is not None:
        return meaning.get("en") or value
    return value


def render_patient(codes: list[str], evidences: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """(findings, history) for one patient's evidence codes."""
    answers: dict[str, list[str]] = defaultdict(list)
    order: list[str] = []
    for code in codes:
        name, _, value = code.partition("_@_")
        if name not in answers:
            order.append(name)
        if value:
            answers[name].append(value)
    findings, history = [], []
    for name in order:
        evidence = evidences.get(name)
        if evidence is None:
            continue
        question = evidence["question_en"].strip()
        values = [_value_text(evidence, v) for v in answers[name]]
        values = [v for v in values if v and v != "NA"]
        if evidence.get("data_type") == "B" or not values:
            line = f"{question} Yes."
        elif evidence.get("data_type") == "C" and all(v.isdigit() for v in values):
            line = f"{question} {', '.join(values)}/10."
        else:
            line = f"{question} {', '.join(values)}."
        (history if evidence.get("is_antecedent") else findings).append(line)
    return " ".join(findings), " ".join(history)


def write_ddxplus_split(
    data_dir: Path, *, out_dir: Path, test_share: float = 0.3, seed: int = 0, limit: int | None = None
) -> dict[str, Any]:
    """Writes train.jsonl, test.jsonl (case format) and test_differentials.json (case id -> gold
    differential) under `out_dir`. `limit`: use only that many patients (a seeded sample), for quick runs."""
    patients_path, evidences_path = data_dir / PATIENTS_FILE, data_dir / EVIDENCES_FILE
    for path in (patients_path, evidences_path):
        if not path.exists():
            raise KBError(f"{path} does not exist: point --data at the ddxplus folder")
    evidences = json.loads(evidences_path.read_text(encoding="utf-8"))
    with patients_path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    rng = random.Random(seed)
    if limit is not None and limit < len(rows):
        rows = [rows[i] for i in sorted(rng.sample(range(len(rows)), limit))]
    test = stratified_test_rows([row["diagnosis"] for row in rows], test_share=test_share, rng=rng)
    out_dir.mkdir(parents=True, exist_ok=True)
    differentials: dict[str, list[list]] = {}
    counts = {}
    for name, chosen in (("train", [i for i in range(len(rows)) if i not in test]), ("test", sorted(test))):
        with (out_dir / f"{name}.jsonl").open("w", encoding="utf-8") as handle:
            for i in chosen:
                row = rows[i]
                findings, history = render_patient(ast.literal_eval(row["features"]), evidences)
                case_id = f"ddxplus-{i + 1}"
                record = {
                    "id": case_id,
                    "findings": findings,
                    "history": history or None,
                    "age": row["age"],
                    "sex": row["sex"] if row["sex"] in ("F", "M") else None,
                    "diagnosis": row["diagnosis"],
                }
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                if name == "test":
                    differentials[case_id] = [[d, float(p)] for d, p in ast.literal_eval(row["top5_diagnoses"])]
        counts[name] = len(chosen)
    (out_dir / "test_differentials.json").write_text(json.dumps(differentials), encoding="utf-8")
    return {
        "train": counts["train"],
        "test": counts["test"],
        "conditions": len({row["diagnosis"] for row in rows}),
        "files": [str(out_dir / n) for n in ("train.jsonl", "test.jsonl", "test_differentials.json")],
    }


def gold_mass_covered(gold: list[list], predicted_top: list[str]) -> float:
    """The share of the gold differential's probability mass on diagnoses among `predicted_top`."""
    total = sum(p for _, p in gold)
    if total <= 0:
        return 0.0
    chosen = {d.casefold() for d in predicted_top}
    return sum(p for d, p in gold if d.casefold() in chosen) / total
