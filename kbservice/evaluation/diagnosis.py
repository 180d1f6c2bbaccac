"""`eval diagnosis`: accuracy, macro-F1, per-class recall, calibration, abstention and latency on test cases,
beside simple baselines fitted and scored on exactly the same split.

With training cases the evaluation builds a fresh knowledge base from them in a temporary data directory,
runs the update cycle's classifier stage there (the case classifier trains on the training cases it does
not hold out, and is judged by the gate), fits the calibration on held-out training cases the classifier
never saw (leave-one-out retrieval), then answers every test case. The baselines are fitted on the same
training cases (de-identified the same way) and score the same test cases.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kbservice.classification import Decision, classification_metrics
from kbservice.classifier.baselines import FITTERS, TrainTest
from kbservice.classifier.model import case_text
from kbservice.evaluation.ddxplus import gold_mass_covered
from kbservice.ingest.case_files import CaseDraft, parse_case_file
from kbservice.ingest.cases import deidentify
from kbservice.progress import NoProgress, Progress
from kbservice.recommend import evidence
from kbservice.recommend.answer import calibration_for
from kbservice.recommend.calibrate import Example, calibrate_examples, fit, truth_indices
from kbservice.recommend.fusion import Fusion
from kbservice.recommend.request import Mode, request_for_case

if TYPE_CHECKING:
    from kbservice.services import Services

COVERAGES = (1.0, 0.9, 0.8)
TOP_K = 5


def evaluate_diagnosis(
    services: Services,
    test_file: Path,
    *,
    mode: Mode,
    calibrate_first: bool,
    train_file: Path | None = None,
    gold_differentials: dict[str, list[list]] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Answers every case in `test_file` (de-identified like any request), scores the top diagnosis and the
    differential, and fits and scores the baselines on `train_file` (default: the store's labelled cases).
    `calibrate_first`: the store was just built from the training cases, so train the case classifier and
    fit the calibration first. `gold_differentials`: test case id -> gold [diagnosis, probability] pairs."""
    progress = progress or NoProgress()
    max_chars = services.settings.ingest.max_case_field_chars
    drafts = parse_case_file(test_file, labeled_by=None, max_chars=max_chars)
    recommender = services.recommender
    ablations: dict[str, Fusion] = {}
    classifier_stage = None
    if calibrate_first:
        if mode == "rag":
            classifier_stage = _train_classifier(services, progress)
        report, held_out = calibrate_examples(services, mode=mode, progress=progress)
        calibration = calibration_for(services, mode=mode, calibration_id=report["calibration_id"])
        if mode == "rag":
            ablations = {
                "similar_cases_only": fit(held_out, names=evidence.SIMILAR_CASE_FEATURES),
                "model_only_with_retrieved_context": fit(held_out, names=evidence.LLM_FEATURES),
            }
            if calibration.classifier is not None:
                ablations["classifier_only"] = fit(held_out, names=evidence.CLASSIFIER_FEATURES)
    else:
        calibration = calibration_for(services, mode=mode, adapter_version=services.serving_adapter(None))
    fusion, classifier = calibration.fusion, calibration.classifier
    with progress.task("De-identifying test cases", total=len(drafts)) as advance:
        clean = []
        for draft in drafts:
            clean.append(deidentify(draft))
            advance(1)
    model = classifier.model if classifier else None
    recommender.features(request_for_case(clean[0], mode=mode), classifier=model)  # warm-up: not latency
    examples: list[Example] = []
    latencies, decisions = [], []
    with progress.task(f"Diagnosing test cases ({mode})", total=len(clean)) as advance:
        for draft in clean:
            started = time.perf_counter()
            feats = recommender.features(request_for_case(draft, mode=mode), classifier=model)
            differential, reason = recommender.decide(feats, fusion, mode=mode)
            latencies.append(time.perf_counter() - started)
            examples.append(Example(case=None, features=feats, truth=truth_indices(feats.candidates, draft.diagnosis)))
            decisions.append(
                Decision(
                    labels=draft.diagnosis,
                    top=differential[0].diagnosis,
                    probability=differential[0].probability,
                    abstained=reason is not None,
                )
            )
            advance(1)
    gold = [gold_differentials.get(d.id) for d in clean] if gold_differentials else None
    kbservice = classification_metrics(decisions) | _ranked_metrics(
        [d.diagnosis for d in clean], [_ranking(fusion, e) for e in examples], gold
    )
    kbservice["risk_coverage"] = risk_coverage(decisions)
    result: dict[str, Any] = {
        "mode": mode,
        "cases": len(clean),
        "calibration_id": calibration.calibration_id,
        "classifier_version": classifier.version if classifier else None,
        "weights": fusion.weights,
        **kbservice,
        "latency_s": _latency(latencies),
        "candidates": len(examples[0].features.candidates),
    }
    if classifier_stage is not None:
        result["classifier_stage"] = classifier_stage
    if ablations:
        # Each evidence source alone (fitted on the same held-out cases) and fused, on the same test answers.
        result["ablation"] = {name: _fusion_metrics(f, examples, clean, gold) for name, f in ablations.items()} | {
            "fused": _fusion_metrics(fusion, examples, clean, gold)
        }
    train = (
        parse_case_file(train_file, labeled_by=None, max_chars=max_chars)
        if train_file is not None
        else _store_cases(services)
    )
    result["baselines"] = baselines(services, [deidentify(d) for d in train], clean, gold=gold, progress=progress)
    result["verdict"] = verdict(result)
    return result


def _train_classifier(services: Services, progress: Progress) -> dict[str, Any]:
    """The update cycle's classifier stage on the freshly built store; its report (status, version, gate)."""
    from kbservice.learn.update import run_update_cycle

    report = run_update_cycle(services, triggered_by="eval", stages=("classifier",), progress=progress)
    stage = report.classifier or {}
    return {k: stage.get(k) for k in ("status", "reason", "version", "train", "gate_cases", "chosen_c", "train_s")} | {
        "gate": (stage.get("gate") or {}).get("reasons"),
        "metrics": stage.get("metrics"),
    }


def _store_cases(services: Services) -> list[CaseDraft]:
    version = services.retriever.resolve_version(None)
    return [
        CaseDraft(
            id=c.id,
            findings=c.findings,
            history=c.history,
            age=c.age,
            sex=c.sex,
            diagnosis=c.diagnosis,
            treatment=c.treatment,
            images=[],
            labeled_by=c.labeled_by,
        )
        for c in services.case_store.cases(as_of=version)
        if c.diagnosis
    ]


# ----- metrics -------------------------------------------------------------------------------------------


def _ranking(fusion: Fusion, example: Example) -> list[tuple[str, float]]:
    p = fusion.probabilities(example.features.matrix, example.features.names)
    order = np.argsort(-p, kind="stable")
    return [(example.features.candidates[i], float(p[i])) for i in order]


def _ranked_metrics(
    truths: Sequence[Sequence[str]], rankings: Sequence[list[tuple[str, float]]], gold: Sequence[list | None] | None
) -> dict[str, Any]:
    """Top-5 recall of the true diagnosis and, with gold differentials, the mean share of the gold
    differential's probability mass that the top 5 covers."""
    hits = []
    for labels, ranking in zip(truths, rankings, strict=True):
        wanted = {label.casefold() for label in labels}
        hits.append(any(name.casefold() in wanted for name, _ in ranking[:TOP_K]))
    out: dict[str, Any] = {f"top{TOP_K}_recall": round(float(np.mean(hits)), 4)}
    if gold is not None:
        covered = [
            gold_mass_covered(g, [name for name, _ in ranking[:TOP_K]])
            for g, ranking in zip(gold, rankings, strict=True)
            if g
        ]
        out[f"gold_mass_in_top{TOP_K}"] = round(float(np.mean(covered)), 4) if covered else None
    return out


def risk_coverage(decisions: Sequence[Decision]) -> dict[str, float]:
    """Accuracy on the most confident share of the cases (by top probability), at each of COVERAGES: how
    much answering fewer cases buys."""
    ordered = sorted(decisions, key=lambda d: -d.probability)
    out = {}
    for coverage in COVERAGES:
        kept = ordered[: max(1, round(len(ordered) * coverage))]
        right = [d.top.casefold() in {label.casefold() for label in d.labels} for d in kept]
        out[f"accuracy_at_{round(coverage * 100)}pct"] = round(float(np.mean(right)), 4)
    return out


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    keep = ("accuracy", "macro_f1", "ece", f"top{TOP_K}_recall", f"gold_mass_in_top{TOP_K}", "per_class_recall")
    return {k: metrics[k] for k in keep if k in metrics}


def _fusion_metrics(
    fusion: Fusion, examples: Sequence[Example], clean: Sequence[CaseDraft], gold: Sequence[list | None] | None
) -> dict[str, Any]:
    rankings = [_ranking(fusion, e) for e in examples]
    decisions = [
        Decision(labels=d.diagnosis, top=r[0][0], probability=r[0][1]) for d, r in zip(clean, rankings, strict=True)
    ]
    return _summary(classification_metrics(decisions) | _ranked_metrics([d.diagnosis for d in clean], rankings, gold))


def baselines(
    services: Services,
    train: Sequence[CaseDraft],
    test: Sequence[CaseDraft],
    *,
    gold: Sequence[list | None] | None,
    progress: Progress,
) -> dict[str, dict[str, Any]]:
    """Every baseline of kbservice.classifier.baselines fitted on `train` and scored on `test`."""
    labelled = [d for d in train if d.diagnosis]
    train_texts, test_texts = [case_text(d) for d in labelled], [case_text(d) for d in test]
    with progress.task("Embedding cases for the baselines", total=len(train_texts) + len(test_texts)) as advance:
        vectors = services.embedder.encode(train_texts + test_texts, progress=advance)
    data = TrainTest(
        train_texts=train_texts,
        train_vectors=vectors[: len(train_texts)],
        train_labels=[d.diagnosis[0] for d in labelled],
        test_texts=test_texts,
        test_vectors=vectors[len(train_texts) :],
    )
    labels = data.labels
    out = {}
    for name, fitter in FITTERS.items():
        probabilities = fitter(data)
        rankings = [[(labels[i], float(row[i])) for i in np.argsort(-row, kind="stable")] for row in probabilities]
        decisions = [
            Decision(labels=d.diagnosis, top=r[0][0], probability=r[0][1]) for d, r in zip(test, rankings, strict=True)
        ]
        out[name] = _summary(
            classification_metrics(decisions) | _ranked_metrics([d.diagnosis for d in test], rankings, gold)
        )
    return out


def verdict(result: dict[str, Any]) -> dict[str, Any]:
    """Whether kbservice beats the best baseline (by macro-F1; accuracy reported beside it), said plainly."""
    best = max(result["baselines"], key=lambda name: (result["baselines"][name]["macro_f1"], name))
    theirs = result["baselines"][best]
    beats_f1 = result["macro_f1"] > theirs["macro_f1"]
    beats_accuracy = result["accuracy"] > theirs["accuracy"]
    beaten_by = [
        name
        for name, metrics in result["baselines"].items()
        if metrics["accuracy"] >= result["accuracy"] or metrics["macro_f1"] >= result["macro_f1"]
    ]
    if not beaten_by:
        text = (
            f"kbservice beats every baseline: accuracy {result['accuracy']:.4f} and macro-F1 {result['macro_f1']:.4f} "
            f"vs the best baseline ({best}) {theirs['accuracy']:.4f} / {theirs['macro_f1']:.4f}"
        )
    else:
        text = (
            f"kbservice does NOT beat every baseline: accuracy {result['accuracy']:.4f} and macro-F1 "
            f"{result['macro_f1']:.4f}; matched or beaten by {', '.join(beaten_by)} (best: {best} "
            f"{theirs['accuracy']:.4f} / {theirs['macro_f1']:.4f})"
        )
    return {
        "best_baseline": best,
        "beats_best_on_macro_f1": beats_f1,
        "beats_best_on_accuracy": beats_accuracy,
        "beats_every_baseline": not beaten_by,
        "text": text,
    }


def _latency(latencies: Sequence[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "mean": round(statistics.fmean(ordered), 4),
        "p50": round(ordered[len(ordered) // 2], 4),
        "p95": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 4),
    }
