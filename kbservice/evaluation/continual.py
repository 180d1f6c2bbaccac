"""`kbservice eval continual`: the continual-learning benchmark.

Training cases arrive in N batches by disease group (the sorted disease names cut into N contiguous
groups, so later batches bring diseases never seen before); each batch is ingested as one knowledge
version and followed by an update cycle. After each batch the test cases of every disease seen so far are
answered by the base model with RAG and by the champion adapter with RAG; at the end a separate knowledge
base trained jointly on all batches at once gives the upper reference. Backward transfer: the average
change, from right after its batch to the end, of the champion's accuracy on each earlier group's diseases.

As a clinical team would, each batch also adds a few of its cases to the frozen evaluation set (the
explicit `adapters freeze` step), so every later gate and calibration also sees the earlier diseases.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from kbservice.classification import Decision, classification_metrics
from kbservice.config import Settings
from kbservice.errors import KBError
from kbservice.evaluation.case_batches import ingest_case_lines
from kbservice.evaluation.diagnosis import baselines
from kbservice.ingest.case_files import CaseDraft
from kbservice.ingest.cases import deidentify
from kbservice.learn.update import run_update_cycle
from kbservice.progress import NoProgress, Progress
from kbservice.recommend.answer import calibration_for
from kbservice.recommend.calibrate import collect_examples, fit_selected, selection_settings
from kbservice.recommend.request import request_for_case
from kbservice.services import Services, temporary_services
from kbservice.types import UpdateReport


def disease_groups(drafts: Sequence[CaseDraft], batches: int) -> list[list[str]]:
    labels = sorted({d.diagnosis[0] for d in drafts})
    if batches < 1 or batches > len(labels):
        raise KBError(f"--batches must be between 1 and the number of diseases ({len(labels)})")
    return [list(g) for g in np.array_split(np.array(labels, dtype=object), batches)]


def run_continual(
    settings: Settings,
    train: Sequence[CaseDraft],
    test: Sequence[CaseDraft],
    *,
    batches: int,
    joint: bool = True,
    freeze_per_batch: int = 12,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Runs the benchmark on fresh temporary stores with `settings`' models (see the module's docstring)."""
    progress = progress or NoProgress()
    groups = disease_groups(train, batches)
    test = [deidentify(d) for d in test]
    rows: list[dict[str, Any]] = []
    hits_after: list[dict[str, dict[str, list[bool]]]] = []  # per batch: system -> group -> per-case hits
    started = time.perf_counter()
    with temporary_services(settings) as (services, tmp):
        _every_batch_updates(services)
        for k, group in enumerate(groups):
            batch = [d for d in train if d.diagnosis[0] in group]
            _ingest(services, tmp / f"batch{k + 1}.jsonl", batch, labeled_by=f"batch-{k + 1}", progress=progress)
            _freeze_some(services, freeze_per_batch, seed=k)
            cycle = run_update_cycle(services, triggered_by="eval-continual", progress=progress)
            seen = {label for g in groups[: k + 1] for label in g}
            seen_test = [d for d in test if d.diagnosis[0] in seen]
            judged = services.registry.show(cycle.adapter_version)["heldout_case_ids"] if cycle.adapter_version else []
            base = _evaluate(services, seen_test, adapter=None, fusion_case_ids=set(judged), progress=progress)
            champion_version = services.registry.champion()
            champion = _evaluate(
                services, seen_test, adapter=champion_version, fusion_case_ids=set(), progress=progress
            )
            hits_after.append({"champion": _hits_by_group(champion["decisions"], groups)})
            seen_train = [d for d in train if d.diagnosis[0] in seen]
            fitted = baselines(services, seen_train, seen_test, gold=None, progress=progress)
            rows.append(
                {
                    "batch": k + 1,
                    "new_diseases": group,
                    "train_cases": len(batch),
                    "test_cases": len(seen_test),
                    "update": _update_summary(cycle) | {"training": cycle.training},
                    "champion": champion_version,
                    "base_rag": base["metrics"],
                    "champion_rag": champion["metrics"],
                    "classifier": services.classifiers.champion_version(),
                    # The same training cases so far, the same test cases, fitted by the simple baselines.
                    "baselines": {
                        name: {k: m[k] for k in ("accuracy", "macro_f1", "ece", "per_class_recall")}
                        for name, m in fitted.items()
                    },
                }
            )
    result: dict[str, Any] = {"batches": rows, "groups": groups}
    final = hits_after[-1]["champion"]
    changes = [
        float(np.mean(final[str(j)])) - float(np.mean(hits_after[j]["champion"][str(j)]))
        for j in range(len(groups) - 1)
    ]
    result["backward_transfer"] = round(float(np.mean(changes)), 4) if changes else None
    if joint:
        with temporary_services(settings) as (services, tmp):
            _every_batch_updates(services)
            _ingest(services, tmp / "all.jsonl", list(train), labeled_by="joint", progress=progress)
            _freeze_some(services, freeze_per_batch * len(groups), seed=0)
            cycle = run_update_cycle(services, triggered_by="eval-continual-joint", progress=progress)
            joint_eval = _evaluate(
                services, test, adapter=services.registry.champion(), fusion_case_ids=set(), progress=progress
            )
            result["joint"] = {
                "update": _update_summary(cycle),
                "champion_rag": joint_eval["metrics"],
            }
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def _update_summary(cycle: UpdateReport) -> dict[str, Any]:
    return {
        "status": cycle.status,
        "adapter_version": cycle.adapter_version,
        "reason": cycle.reason,
        "seconds": cycle.seconds,
    }


def _every_batch_updates(services: Services) -> None:
    """However small a batch, it gets its update cycle (the benchmark's premise)."""
    learn = services.settings.learn.model_copy(update={"min_new_cases": 1})
    services.settings = services.settings.model_copy(update={"learn": learn})


def _freeze_some(services: Services, count: int, *, seed: int) -> None:
    """Adds `count` of the newest version's cases, one per disease in turn, to the frozen evaluation set."""
    if count <= 0:
        return
    version = services.retriever.resolve_version(None)
    newest = [c for c in services.case_store.cases(as_of=version) if c.version_added == version]
    by_label: dict[str, list[int]] = {}
    for case in newest:
        by_label.setdefault(case.diagnosis[0], []).append(case.case_id)
    rng = random.Random(seed)
    for ids in by_label.values():
        rng.shuffle(ids)
    chosen: list[int] = []
    while len(chosen) < count and any(by_label.values()):
        for ids in by_label.values():
            if ids and len(chosen) < count:
                chosen.append(ids.pop())
    services.adapter_store.freeze_cases(chosen, audit=services.audit, actor="eval-continual")


def _ingest(
    services: Services, path: Path, drafts: Sequence[CaseDraft], *, labeled_by: str, progress: Progress
) -> None:
    lines = [
        json.dumps({k: v for k, v in asdict(d).items() if v not in (None, [], "")} | {"labeled_by": labeled_by})
        for d in drafts
    ]
    ingest_case_lines(services, path, lines, author="eval-continual", progress=progress)


def _evaluate(
    services: Services,
    drafts: Sequence[CaseDraft],
    *,
    adapter: str | None,
    fusion_case_ids: set[int],
    progress: Progress,
) -> dict[str, Any]:
    """Metrics of one system on the test drafts. An adapter uses the fusion its update cycle fitted; the
    base model gets one fitted (leave-one-out) on the same held-out cases that cycle judged on."""
    recommender = services.recommender
    if adapter is None:
        version = services.retriever.resolve_version(None)
        labelled = [c for c in services.case_store.cases(as_of=version) if c.diagnosis]
        classifier_version = services.classifiers.champion_version()
        served = services.serving_classifier(classifier_version)
        seen = set(services.classifier_store.get(classifier_version)["train_case_ids"]) if classifier_version else set()
        cases = [c for c in labelled if c.case_id in fusion_case_ids and c.case_id not in seen] or [
            c for c in labelled if c.case_id not in seen
        ][:100]
        model = served.model if served else None
        examples = collect_examples(
            recommender, cases, version=version, mode="rag", leave_one_out=True, classifier=model
        )
        fusion, _ = fit_selected(examples, **selection_settings(services.settings.recommend))
    else:
        calibration = calibration_for(services, mode="rag", adapter_version=adapter)
        fusion, model = calibration.fusion, calibration.classifier.model if calibration.classifier else None
        services.serving_adapter(adapter)
    decisions = []
    with progress.task(f"Answering test cases ({adapter or 'base'})", total=len(drafts)) as advance:
        for draft in drafts:
            feats = recommender.features(request_for_case(draft, mode="rag"), adapter=adapter, classifier=model)
            p = fusion.probabilities(feats.matrix, feats.names)
            top = int(np.argmax(p))
            decisions.append(Decision(labels=draft.diagnosis, top=feats.candidates[top], probability=float(p[top])))
            advance(1)
    metrics = classification_metrics(decisions)
    return {
        "metrics": {k: metrics[k] for k in ("accuracy", "macro_f1", "ece", "per_class_recall")},
        "decisions": decisions,
    }


def _hits_by_group(decisions: Sequence[Decision], groups: Sequence[Sequence[str]]) -> dict[str, list[bool]]:
    where = {label: str(i) for i, g in enumerate(groups) for label in g}
    out: dict[str, list[bool]] = {}
    for d in decisions:
        out.setdefault(where[d.labels[0]], []).append(d.top.casefold() in {x.casefold() for x in d.labels})
    return out
