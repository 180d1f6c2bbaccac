"""`eval diagnosis`: accuracy, macro-F1, per-class recall, calibration, abstention and latency on test cases.

With training cases the evaluation builds a fresh knowledge base from them in a temporary data directory,
fits the calibration there on held-out (leave-one-out) training cases, then answers every test case.
"""

from __future__ import annotations

import csv
import json
import random
import statistics
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kbservice.errors import KBError
from kbservice.ingest.cases import CaseDraft, deidentify, parse_case_file
from kbservice.progress import NoProgress, Progress
from kbservice.recommend import evidence
from kbservice.recommend.answer import fusion_for
from kbservice.recommend.calibrate import Example, calibrate_examples, fit, score, truth_indices
from kbservice.recommend.fusion import Fusion, expected_calibration_error
from kbservice.recommend.request import Mode, RecommendationRequest

if TYPE_CHECKING:
    from kbservice.services import Services


def test_request(draft: CaseDraft, *, mode: Mode) -> RecommendationRequest:
    return RecommendationRequest(
        findings=draft.findings, history=draft.history, age=draft.age, sex=draft.sex, mode=mode
    )


def evaluate_diagnosis(
    services: Services,
    test_file: Path,
    *,
    mode: Mode,
    calibrate_first: bool,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Answers every case in `test_file` (de-identified like any request) and scores the top diagnosis."""
    progress = progress or NoProgress()
    drafts = parse_case_file(test_file, labeled_by=None, max_chars=services.settings.ingest.max_case_field_chars)
    recommender = services.recommender
    ablations: dict[str, Fusion] = {}
    if calibrate_first:
        report, held_out = calibrate_examples(services, mode=mode, progress=progress)
        fusion, calibration_id = Fusion(weights=report["weights"]), report["calibration_id"]
        if mode == "rag":
            ablations = {
                "similar_cases_only": fit(held_out, names=evidence.EVIDENCE_FEATURES),
                "model_only_with_retrieved_context": fit(held_out, names=evidence.LLM_FEATURES),
            }
    else:
        fusion, calibration_id = fusion_for(services, mode=mode)
    with progress.task("De-identifying test cases", total=len(drafts)) as advance:
        clean = []
        for draft in drafts:
            clean.append(deidentify(draft))
            advance(1)
    recommender.features(test_request(clean[0], mode=mode))  # warm-up: first-call costs are not latency
    examples: list[Example] = []
    latencies, decisions = [], []
    with progress.task(f"Diagnosing test cases ({mode})", total=len(clean)) as advance:
        for draft in clean:
            started = time.perf_counter()
            feats = recommender.features(test_request(draft, mode=mode))
            differential, reason = recommender.decide(feats, fusion, mode=mode)
            latencies.append(time.perf_counter() - started)
            examples.append(Example(case=None, features=feats, truth=truth_indices(feats.candidates, draft.diagnosis)))
            decisions.append((draft, differential, reason))
            advance(1)
    result = {
        "mode": mode,
        "cases": len(clean),
        "calibration_id": calibration_id,
        "weights": fusion.weights,
        **_classification_metrics(decisions),
        "latency_s": _latency(latencies),
        "candidates": len(examples[0].features.candidates),
    }
    if ablations:
        # Accuracy, NLL and ECE of each evidence source alone and fused, on the same test answers.
        result["ablation"] = {name: _scores(f, examples) for name, f in ablations.items()} | {
            "fused": _scores(fusion, examples)
        }
    return result


def _classification_metrics(decisions: Sequence[tuple[CaseDraft, list[dict[str, Any]], str | None]]) -> dict[str, Any]:
    return classification_metrics(
        [
            Decision(
                labels=draft.diagnosis, top=d[0]["diagnosis"], probability=d[0]["probability"], abstained=r is not None
            )
            for draft, d, r in decisions
        ]
    )


@dataclass(frozen=True)
class Decision:
    labels: list[str]  # the true labels, the first one the primary
    top: str  # the top diagnosis
    probability: float
    abstained: bool = False


def classification_metrics(decisions: Sequence[Decision]) -> dict[str, Any]:
    """Accuracy, macro-F1 over the primary labels, ECE, abstention and per-class recall and support."""
    correct, confidences, abstained = [], [], []
    per_class: dict[str, list[bool]] = defaultdict(list)
    predicted_counts: dict[str, int] = defaultdict(int)
    true_positive: dict[str, int] = defaultdict(int)
    for decision in decisions:
        truths = {label.casefold() for label in decision.labels}
        hit = decision.top.casefold() in truths
        correct.append(hit)
        confidences.append(decision.probability)
        abstained.append(decision.abstained)
        gold = decision.labels[0]
        per_class[gold].append(hit)
        predicted = gold if hit else decision.top
        predicted_counts[predicted.casefold()] += 1
        if hit:
            true_positive[gold.casefold()] += 1
    f1s = []
    for label, hits in per_class.items():
        tp = true_positive[label.casefold()]
        precision = tp / predicted_counts[label.casefold()] if predicted_counts[label.casefold()] else 0.0
        recall = tp / len(hits)
        f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    answered = [c for c, a in zip(correct, abstained, strict=True) if not a]
    return {
        "accuracy": round(float(np.mean(correct)), 4),
        "macro_f1": round(float(np.mean(f1s)), 4),
        "ece": round(expected_calibration_error(confidences, correct), 4),
        "abstention_rate": round(float(np.mean(abstained)), 4),
        "accuracy_when_answered": round(float(np.mean(answered)), 4) if answered else None,
        "per_class_recall": {label: round(float(np.mean(h)), 4) for label, h in sorted(per_class.items())},
        "per_class_support": {label: len(h) for label, h in sorted(per_class.items())},
    }


def _scores(fusion: Fusion, examples: Sequence[Example]) -> dict[str, float]:
    return {name: round(value, 4) for name, value in score(fusion, examples).items()}


def _latency(latencies: Sequence[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "mean": round(statistics.fmean(ordered), 4),
        "p50": round(ordered[len(ordered) // 2], 4),
        "p95": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 4),
    }


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
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        by_label[row[label_column]].append(i)
    rng = random.Random(seed)
    test: set[int] = set()
    for label in sorted(by_label):
        members = by_label[label][:]
        rng.shuffle(members)
        test.update(members[: round(len(members) * test_share)])
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
