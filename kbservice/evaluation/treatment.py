"""`eval treatment`: do plans name a disease-modifying drug when the knowledge lists one?

PharmacotherapyDB indications become one guideline per disease (its disease-modifying, symptomatic and
non-indicated drugs, in plain sentences), ingested into a fresh store. For every disease with at least one
disease-modifying (DM) drug, the treatment planner writes a plan for that diagnosis; the evaluation counts
plans that name at least one DM drug, and plans that name a drug listed as NOT indicated.
"""

from __future__ import annotations

import csv
import json
import re
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kbservice.errors import KBError
from kbservice.ingest.guidelines import ingest_guidelines
from kbservice.progress import NoProgress, Progress

if TYPE_CHECKING:
    from kbservice.services import Services

_LEADS = {
    "DM": "Disease-modifying treatment",
    "SYM": "Symptomatic treatment",
    "NOT": "Not indicated (do not use)",
}


def read_indications(path: Path) -> dict[str, dict[str, list[str]]]:
    """disease -> category (DM, SYM, NOT) -> drugs, from PharmacotherapyDB's indications.tsv."""
    if not path.exists():
        raise KBError(f"{path} does not exist")
    by_disease: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            by_disease[row["disease"]][row["category"]].append(row["drug"])
    return {disease: dict(categories) for disease, categories in by_disease.items()}


def write_guidelines(indications: dict[str, dict[str, list[str]]], path: Path) -> Path:
    """One JSONL guideline per disease, naming the disease as its condition."""
    with path.open("w", encoding="utf-8") as handle:
        for disease, categories in sorted(indications.items()):
            sentences = [
                f"{_LEADS[c]} of {disease}: {', '.join(sorted(categories[c]))}." for c in _LEADS if c in categories
            ]
            record = {
                "id": disease,
                "title": f"Drug therapy of {disease}",
                "text": "\n\n".join(sentences),
                "conditions": [disease],
            }
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def _names(plan: str, drugs: list[str]) -> list[str]:
    return [d for d in drugs if re.search(rf"\b{re.escape(d)}\b", plan, flags=re.IGNORECASE)]


def evaluate_treatment(
    services: Services, indications_tsv: Path, *, workdir: Path, limit: int | None, progress: Progress | None = None
) -> dict[str, Any]:
    """Ingests the indications into `services` (a fresh store) and scores a plan for each DM disease."""
    progress = progress or NoProgress()
    indications = read_indications(indications_tsv)
    ingest_guidelines(
        [write_guidelines(indications, workdir / "indications.jsonl")],
        store=services.store,
        embedder=services.embedder,
        replica=services.replica,
        settings=services.settings,
        source="pharmacotherapydb",
        author="eval",
        progress=progress,
    )
    version = services.retriever.resolve_version(None)
    diseases = sorted(d for d, categories in indications.items() if categories.get("DM"))[:limit]
    named, unsafe, extracted, sentences, seconds = 0, 0, 0, 0, []
    examples = []
    with progress.task("Planning treatments", total=len(diseases)) as advance:
        for disease in diseases:
            started = time.perf_counter()
            plan = services.recommender.plan_treatment(disease, version=version, sources=[]).plan
            seconds.append(time.perf_counter() - started)
            dm = _names(plan.plan, indications[disease]["DM"])
            not_indicated = _names(plan.plan, indications[disease].get("NOT", []))
            named += bool(dm)
            unsafe += bool(not_indicated)
            sentences += len(plan.sentences)
            extracted += sum(s.method == "extracted" for s in plan.sentences)
            if len(examples) < 5:
                examples.append({"disease": disease, "plan": plan.plan, "dm_named": dm})
            advance(1)
    return {
        "diseases_with_dm_drugs": len(diseases),
        "plans_naming_a_dm_drug": round(named / len(diseases), 4),
        "plans_naming_a_not_indicated_drug": round(unsafe / len(diseases), 4),
        "sentences_extracted_not_generated": round(extracted / max(sentences, 1), 4),
        "mean_plan_seconds": round(sum(seconds) / len(seconds), 2),
        "examples": examples,
    }
