"""The update cycle's classifier stage: labelled cases -> candidate case classifier -> the gate -> promote.

The classifier is refitted from scratch on every labelled case valid at the knowledge version except those
any stage ever held out for judging and the frozen evaluation set (a fit takes seconds, and a fresh fit
forgets nothing). Candidate and champion (or, before the first, no classifier) are judged on the same
held-out and frozen cases, those neither trained on: each case's leave-one-out evidence and the serving
adapter's scores are computed once, the classifier columns are filled in by each, each fusion is
cross-fitted, and the adapter gate's rules decide. A promoted classifier is stored with a calibration
fitted with it, so requests use it from their next lookup of the calibration (and replay uses the one
its calibration names).
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from kbservice.classifier.model import CaseClassifier, ClassifierSettings, case_text
from kbservice.learn.candidate import judge_every_case
from kbservice.learn.cycle_data import AdapterPlan, NewCases, case_images
from kbservice.learn.gate import Judged, compare, cross_fitted, examples_for
from kbservice.progress import Progress
from kbservice.recommend import evidence
from kbservice.recommend.calibrate import Example, selection_settings
from kbservice.recommend.prompts import PROMPT_VERSION
from kbservice.types import CaseRecord

if TYPE_CHECKING:
    from kbservice.services import Services

CLASSIFIER_COLUMNS = [evidence.EVIDENCE_FEATURES.index(name) for name in evidence.CLASSIFIER_FEATURES]


def never_train_on(services: Services, plan: AdapterPlan, data: NewCases) -> set[int]:
    """Case ids a classifier must not train on: the frozen set, this cycle's held-out cases, and every case
    that an adapter, encoder or classifier version was ever judged on."""
    ids = set(data.frozen_ids) | {c.case_id for c in plan.heldout}
    for store in (services.adapter_store, services.encoder_store, services.classifier_store):
        for row in store.all():
            ids |= set(row["heldout_case_ids"] or [])
    return ids


def run_classifier_stage(
    services: Services,
    *,
    run_id: str,
    data: NewCases,
    plan: AdapterPlan,
    triggered_by: str,
    progress: Progress,
    check_lease: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Trains, judges and records one candidate classifier when labelled cases arrived since the champion
    classifier's data; returns the stage's report ({"status": "skipped", ...} otherwise)."""
    store, learn = services.classifier_store, services.settings.learn
    champion = store.alias("champion")
    watermark = store.get(champion)["data_watermark"] if champion else 0
    new = [c for c in data.labelled if c.version_added > watermark and c.case_id not in data.frozen_ids]
    if len(new) < learn.min_new_cases:
        return {
            "status": "skipped",
            "reason": f"{len(new)} new labelled case(s) since knowledge version {watermark}; a new classifier "
            f"needs at least {learn.min_new_cases}",
        }
    if any(
        r["parent"] == champion and r["data_watermark"] == data.version and r["status"] == "rejected"
        for r in store.all()
    ):
        return {"status": "skipped", "reason": f"a classifier trained on knowledge version {data.version} was rejected"}
    excluded = never_train_on(services, plan, data)
    train = [c for c in data.labelled if c.case_id not in excluded]
    champion_seen = set(store.get(champion)["train_case_ids"]) if champion else set()
    # Judged on every case it may not train on (this cycle's held-out and frozen cases, and those earlier
    # stages judged on) that the champion did not train on either (a held-out side can change as cases
    # arrive), at most `recommend.calibration_cases` of them (a seeded sample).
    pool = [c for c in data.labelled if c.case_id in excluded and c.case_id not in champion_seen]
    cap = services.settings.recommend.calibration_cases
    if len(pool) > cap:
        pool = sorted(random.Random(f"{learn.seed}:{data.version}").sample(pool, cap), key=lambda c: c.case_id)
    gate_cases = pool
    if len({c.diagnosis[0].casefold() for c in train}) < 2:
        return {"status": "skipped", "reason": "the training cases name fewer than two diagnoses"}
    if len(gate_cases) < 10:
        return {"status": "skipped", "reason": f"{len(gate_cases)} held-out case(s) to judge a classifier on; need 10"}
    version = store.next_version()
    settings = ClassifierSettings(seed=learn.seed)
    store.start(
        version=version,
        run_id=run_id,
        parent=champion,
        knowledge_version=data.version,
        data_watermark=data.version,
        embedder=services.embedder.embedder_id,
        labels=sorted({c.diagnosis[0] for c in train}, key=str.casefold),
        train_case_ids=[c.case_id for c in train],
        heldout_case_ids=[c.case_id for c in gate_cases],
        hyperparameters=asdict(settings),
        triggered_by=triggered_by,
    )
    report: dict[str, Any] = {
        "version": version,
        "champion": champion,
        "train": len(train),
        "gate_cases": len(gate_cases),
    }
    try:
        started = time.perf_counter()
        candidate = fit_classifier(services, train, settings=settings, progress=progress)
        report["train_s"] = round(time.perf_counter() - started, 2)
        report["chosen_c"] = candidate.chosen_c
        check_lease()
        started = time.perf_counter()
        adapter = services.serving_adapter(None)
        images = case_images(services, gate_cases)
        judged = judge_every_case(services, gate_cases, version=data.version, images=images, progress=progress)
        base = [judged[c.case_id] for c in gate_cases]
        with progress.task("Scoring held-out cases for the classifier gate", total=len(base)) as advance:
            scored = examples_for(services.recommender, base, adapter=adapter, advance=advance)
        champion_model = services.classifiers.load(champion) if champion else None
        candidate_examples = _with_classifier(services, scored, base, candidate)
        champion_examples = _with_classifier(services, scored, base, champion_model)
        selection = selection_settings(services.settings.recommend)
        candidate_fusion, candidate_metrics = cross_fitted(candidate_examples, **selection)
        _, champion_metrics = cross_fitted(champion_examples, **selection)
        candidate_metrics["classifier_only_accuracy"] = _alone_accuracy(services, candidate, base)
        report["evaluate_s"] = round(time.perf_counter() - started, 2)
        _, reasons, checks = compare(candidate_metrics, champion_metrics, learn)
        report["metrics"] = {"candidate": candidate_metrics, "champion": champion_metrics}
        report["gate"] = {"passed": not reasons, "reasons": reasons, "checks": checks}
        status = "rejected" if reasons else "promoted"
        blob = candidate.to_bytes()
        check_lease()
        store.finish(
            version,
            status=status,
            audit=services.audit,
            actor=triggered_by,
            metrics={k: candidate_metrics[k] for k in ("accuracy", "macro_f1", "ece", "nll", "cases")},
            report=report,
            artifact_sha256=hashlib.sha256(blob).hexdigest(),
            artifact=blob,
            promote_reason=f"passed the gate on {len(gate_cases)} held-out cases: macro-F1 "
            f"{candidate_metrics['macro_f1']:.4f} vs {champion_metrics['macro_f1']:.4f}",
        )
        report["status"] = status
    except BaseException as error:
        if report.get("status"):
            raise
        store.finish(version, status="failed", audit=services.audit, actor=triggered_by, error=_failure(error))
        raise
    if status == "promoted":
        report["calibration_id"] = services.recommendations.save_calibration(
            base_model_sha256=services.generator.model_sha256,
            adapter_version=adapter,
            prompt_version=PROMPT_VERSION,
            mode="rag",
            knowledge_version=data.version,
            weights=candidate_fusion.weights,
            metrics=candidate_metrics,
            case_ids=[c.case_id for c in gate_cases],
            classifier_version=version,
        )
    return report


def fit_classifier(
    services: Services, cases: Sequence[CaseRecord], *, settings: ClassifierSettings, progress: Progress
) -> CaseClassifier:
    """A classifier fitted on `cases` (their text, its embedding by the configured embedder, their first
    diagnosis)."""
    texts = [case_text(c) for c in cases]
    with progress.task("Embedding cases for the classifier", total=len(texts)) as advance:
        vectors = services.embedder.encode(texts, progress=advance)
    with progress.task("Fitting the case classifier", total=0):
        return CaseClassifier.fit(texts, vectors, [c.diagnosis[0] for c in cases], settings=settings)


def _with_classifier(
    services: Services, scored: Sequence[Example], judged: Sequence[Judged], classifier: CaseClassifier | None
) -> list[Example]:
    """The scored examples with their classifier columns filled in by `classifier` (zeros: none)."""
    recommender = services.recommender
    out = []
    for example, item in zip(scored, judged, strict=True):
        matrix = example.features.matrix.copy()
        matrix[:, CLASSIFIER_COLUMNS] = recommender.classifier_features(
            example.features.candidates, case_text(item.case), classifier
        )
        out.append(replace(example, features=replace(example.features, matrix=matrix)))
    return out


def _alone_accuracy(services: Services, classifier: CaseClassifier, judged: Sequence[Judged]) -> float:
    """The classifier's own accuracy on the judged cases (its top label against each case's diagnoses)."""
    texts = [case_text(j.case) for j in judged]
    top = np.argmax(classifier.log_probabilities(texts, services.embedder.encode(texts)), axis=1)
    hits = [
        classifier.labels[t].casefold() in {d.casefold() for d in j.case.diagnosis}
        for t, j in zip(top, judged, strict=True)
    ]
    return round(float(np.mean(hits)), 4)


def _failure(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"
