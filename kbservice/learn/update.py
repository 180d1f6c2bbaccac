"""One update cycle: new labelled cases -> LoRA candidate -> gate against the champion -> promote or reject.

The caller holds the update lease (see lease_guard), so at most one cycle trains at a time. Every cycle
leaves an update_runs row (skipped ones included); every trained candidate leaves an adapters row that
ends "promoted", "rejected" or "failed" and is never changed afterwards.
"""

from __future__ import annotations

import random
import resource
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from kbservice.errors import KBError
from kbservice.learn.gate import Judged, compare, cross_fitted, examples_for, label_agreement
from kbservice.learn.lease_guard import HeldLease
from kbservice.learn.split import split_new_cases
from kbservice.learn.train import ImageFusion, TrainingExample, hyperparameters, train_lora
from kbservice.progress import NoProgress, Progress
from kbservice.recommend.calibrate import case_request
from kbservice.recommend.prompts import PROMPT_VERSION
from kbservice.recommend.request import RequestImage
from kbservice.types import CaseRecord

if TYPE_CHECKING:
    from kbservice.services import Services

STAGES = ("encoder", "adapter")
TREATMENT_TARGET_CHARS = 300  # a recorded treatment is cut to this in the training target


def training_target(case: CaseRecord) -> str:
    """What the model learns to write after "Diagnosis:" (scoring reads the diagnosis part)."""
    target = " " + "; ".join(case.diagnosis)
    if case.treatment:
        target += "\nTreatment: " + " ".join(case.treatment.split())[:TREATMENT_TARGET_CHARS]
    return target


def run_update_cycle(
    services: Services,
    *,
    triggered_by: str,
    lease: HeldLease | None = None,
    progress: Progress | None = None,
    stages: Sequence[str] = STAGES,
) -> dict[str, Any]:
    """Runs one cycle and returns its report (also stored with the run, and with the adapter version).
    `stages`: the encoder stage (new labelled image cases -> image encoder) runs first, so the adapter
    stage trains its image projector on the encoder that serves."""
    unknown = sorted(set(stages) - set(STAGES))
    if unknown or not stages:
        raise KBError(f"unknown update stage(s) {unknown}; choose from {', '.join(STAGES)}")
    progress = progress or NoProgress()
    started = time.perf_counter()
    registry, store, settings = services.registry, services.adapter_store, services.settings.learn
    reaped = registry.reap_interrupted(actor=triggered_by)
    interrupted_runs = store.fail_running_runs(reason="interrupted: the process running it stopped")
    run_id = f"run-{uuid.uuid4().hex[:12]}"
    version = services.retriever.resolve_version(None)
    store.start_run(run_id=run_id, triggered_by=triggered_by, knowledge_version=version)
    report: dict[str, Any] = {
        "run_id": run_id,
        "knowledge_version": version,
        "triggered_by": triggered_by,
        "reaped_adapters": reaped,
        "reaped_runs": interrupted_runs,
    }

    run_finished = False

    def finish(status: str, reason: str, adapter_version: str | None = None) -> dict[str, Any]:
        nonlocal run_finished
        run_finished = True
        encoder = report.get("encoder") or {}
        if status == "skipped" and encoder.get("status") in ("promoted", "rejected"):
            reason = f"encoder {encoder['version']} {encoder['status']}; adapter skipped: {reason}"
        report.update(status=status, reason=reason, adapter_version=adapter_version)
        report.setdefault("metrics", {"candidate": None, "champion": None})
        report["seconds"] = round(time.perf_counter() - started, 2)
        report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        store.finish_run(run_id, status=status, reason=reason, adapter_version=adapter_version, report=report)
        return report

    try:
        if version is None:
            return finish("skipped", "the knowledge base is empty")
        champion = registry.champion()
        watermark = store.get(champion)["data_watermark"] if champion else 0
        frozen_ids = set(store.frozen_case_ids())
        labelled = [c for c in services.case_store.cases(as_of=version) if c.diagnosis]
        new = [c for c in labelled if c.version_added > watermark and c.case_id not in frozen_ids]
        report.update(champion=champion, data_watermark=watermark, new_cases=len(new))
        if "encoder" in stages:
            from kbservice.learn.encoder_cycle import run_encoder_stage

            _, adapter_heldout = split_new_cases(new, fraction=settings.heldout_fraction, seed=settings.seed)
            report["encoder"] = run_encoder_stage(
                services,
                run_id=run_id,
                version=version,
                labelled=labelled,
                frozen_ids=frozen_ids,
                shared_split=({c.case_id for c in new}, {c.case_id for c in adapter_heldout}),
                triggered_by=triggered_by,
                progress=progress,
                check_lease=lease.check if lease else lambda: None,
            )
        if "adapter" not in stages:
            stage = report["encoder"]
            if stage["status"] == "skipped":
                return finish("skipped", stage["reason"])
            return finish(
                stage["status"],
                f"encoder {stage['version']} {stage['status']}: "
                + ("; ".join(stage["gate"]["reasons"]) or "passed the image-case gate"),
            )
        if len(new) < settings.min_new_cases:
            return finish(
                "skipped",
                f"{len(new)} new labelled case(s) since knowledge version {watermark}; "
                f"an update needs at least {settings.min_new_cases}",
            )
        judged_already = [
            a
            for a in store.all()
            if a["parent"] == champion and a["data_watermark"] == version and a["status"] == "rejected"
        ]
        if judged_already:
            return finish(
                "skipped",
                f"no new cases since adapter {judged_already[-1]['version']} was trained on knowledge version "
                f"{version} and rejected; ingest more cases or retract the bad ones",
            )
        return _train_and_judge(services, report, new, labelled, frozen_ids, champion, version, lease, progress, finish)
    except BaseException as error:  # every failure, KeyboardInterrupt included, ends the run row
        if not run_finished:
            finish("failed", f"{type(error).__name__}: {error}", report.get("adapter_version"))
        raise


def _train_and_judge(
    services: Services,
    report: dict[str, Any],
    new: list[CaseRecord],
    labelled: list[CaseRecord],
    frozen_ids: set[int],
    champion: str | None,
    version: int,
    lease: HeldLease | None,
    progress: Progress,
    finish: Callable[..., dict[str, Any]],
) -> dict[str, Any]:
    """Split, retrieve, check labels, train, gate and record: the part of a cycle that builds an adapter."""
    registry, store, settings = services.registry, services.adapter_store, services.settings.learn
    recommender = services.recommender
    train_cases, heldout = split_new_cases(new, fraction=settings.heldout_fraction, seed=settings.seed)
    new_ids = {c.case_id for c in new}
    older = [c for c in labelled if c.case_id not in new_ids and c.case_id not in frozen_ids]
    replay = sorted(
        random.Random(f"{settings.seed}:{version}").sample(older, min(settings.replay_cases, len(older))),
        key=lambda c: c.case_id,
    )
    frozen = [c for c in labelled if c.case_id in frozen_ids]
    report["split"] = {"train": len(train_cases), "heldout": len(heldout), "replay": len(replay), "frozen": len(frozen)}

    timings: dict[str, float] = {}
    stage = time.perf_counter()
    judged: dict[int, Judged] = {}
    everyone = train_cases + replay + heldout + frozen
    images = case_images(services, everyone)
    with progress.task("Retrieving context for training and evaluation cases", total=len(everyone)) as advance:
        for case in everyone:
            # Each case is retrieved as a new patient would be: without itself.
            request = replace(case_request(case, version=version, mode="rag"), images=images.get(case.case_id, ()))
            judged[case.case_id] = Judged(case, recommender.evidence(request, exclude_chunk_ids=[case.chunk_id]))
            advance(1)
    timings["retrieve_s"] = time.perf_counter() - stage

    # The poisoning guard looks at the labels before any training time is spent on them.
    label_reasons, labels_report = label_agreement(
        [judged[c.case_id] for c in train_cases + heldout], [judged[c.case_id] for c in replay + frozen], settings
    )
    report["labels"] = labels_report

    fusion, vectors = image_fusion(services, train_cases + replay, images)
    report["image_fusion"] = (
        {"encoder_version": fusion.encoder_version, "tokens": fusion.tokens, "cases_with_images": len(vectors)}
        if fusion
        else None
    )
    adapter_version = store.next_version()
    base = services.generator
    store.start(
        version=adapter_version,
        run_id=report["run_id"],
        parent=champion,
        base_model=base.model_name,
        base_model_sha256=base.model_sha256,
        knowledge_version=version,
        data_watermark=version,
        train_case_ids=[c.case_id for c in train_cases],
        heldout_case_ids=[c.case_id for c in heldout],
        replay_case_ids=[c.case_id for c in replay],
        frozen_case_ids=[c.case_id for c in frozen],
        hyperparameters=hyperparameters(settings) | {"prompt_version": PROMPT_VERSION},
        triggered_by=report["triggered_by"],
        encoder_version=fusion.encoder_version if fusion else None,
    )
    report["adapter_version"] = adapter_version
    try:
        stage = time.perf_counter()
        examples = [
            TrainingExample(
                case_id=c.case_id,
                prompt=judged[c.case_id].evidence.prompt,
                target=training_target(c),
                image_vectors=vectors.get(c.case_id),
            )
            for c in train_cases + replay
        ]
        result = train_lora(
            services.base_model.path,
            examples,
            settings=settings,
            init_adapter=registry.verified_path(champion) if champion else None,
            out_dir=registry.partial_path(adapter_version),
            progress=progress,
            on_step=lambda _step: lease.check() if lease else None,
            fusion=fusion,
            projector_learning_rate=services.settings.imaging.projector_learning_rate,
        )
        timings["train_s"] = time.perf_counter() - stage
        report["training"] = result.to_json()
        if lease:
            lease.check()
        checksum, archive = registry.publish(adapter_version)
        # The candidate's row has no checksum until it is final: load it from the files just published.
        base.load_adapter(adapter_version, registry.path(adapter_version))
        if champion:
            services.load_adapter(champion)

        stage = time.perf_counter()
        gate_cases = [judged[c.case_id] for c in heldout + frozen]
        with progress.task(
            "Scoring held-out and frozen cases (candidate, champion)", total=2 * len(gate_cases)
        ) as advance:
            candidate_examples = examples_for(recommender, gate_cases, adapter=adapter_version, advance=advance)
            champion_examples = examples_for(recommender, gate_cases, adapter=champion, advance=advance)
        candidate_fusion, candidate_metrics = cross_fitted(candidate_examples)
        _, champion_metrics = cross_fitted(champion_examples)
        timings["evaluate_s"] = time.perf_counter() - stage
        _, reasons, checks = compare(candidate_metrics, champion_metrics, settings)
        reasons += label_reasons
        report["metrics"] = {"candidate": candidate_metrics, "champion": champion_metrics}
        report["gate"] = {"passed": not reasons, "reasons": reasons, "checks": checks}
        report["timings"] = {k: round(v, 2) for k, v in timings.items()}
        calibration_id = services.recommendations.save_calibration(
            base_model_sha256=base.model_sha256,
            adapter_version=adapter_version,
            prompt_version=PROMPT_VERSION,
            mode="rag",
            knowledge_version=version,
            weights=candidate_fusion.weights,
            metrics=candidate_metrics,
            case_ids=[j.case.case_id for j in gate_cases],
        )
        report["calibration_id"] = calibration_id
        status = "promoted" if not reasons else "rejected"
        reason = (
            f"passed the gate: macro-F1 {candidate_metrics['macro_f1']:.4f} vs champion "
            f"{champion_metrics['macro_f1']:.4f} on {candidate_metrics['cases']} cases"
            if status == "promoted"
            else "; ".join(reasons)
        )
        if lease:
            lease.check()
        report["adapter_status"] = status
        report["decision"] = {"status": status, "reason": reason}
        store.finish(
            adapter_version,
            status=status,
            audit=services.audit,
            actor=report["triggered_by"],
            metrics=_headline(candidate_metrics),
            report=report,
            artifact_sha256=checksum,
            artifact=archive,
            promote_reason=reason,
        )
        return finish(status, reason, adapter_version)
    except BaseException as error:
        if report.get("adapter_status"):  # the adapter row is final; only the run row failed
            raise
        registry.remove_files(adapter_version)
        store.finish(
            adapter_version,
            status="failed",
            audit=services.audit,
            actor=report["triggered_by"],
            error=f"{type(error).__name__}: {error}",
        )
        raise KBError(f"update cycle failed while building adapter {adapter_version}: {error}") from error


def case_images(services: Services, cases: Sequence[CaseRecord]) -> dict[int, tuple[RequestImage, ...]]:
    """Each case's stored images as request images (what a new patient's request would carry)."""
    ids = services.image_store.ids_by_case([c.case_id for c in cases])
    if not ids:
        return {}
    pixels = services.image_store.pixels([i for found in ids.values() for i in found])
    return {case_id: tuple(RequestImage.of(pixels[i]) for i in found) for case_id, found in ids.items()}


def image_fusion(
    services: Services, cases: Sequence[CaseRecord], images: dict[int, tuple[RequestImage, ...]]
) -> tuple[ImageFusion | None, dict[int, np.ndarray]]:
    """What the projector trains on: the champion encoder's embeddings of the training cases' images (none
    when no encoder exists or no training case has an image)."""
    with_images = [c for c in cases if images.get(c.case_id)]
    encoder_version = services.encoders.champion_version() if with_images else None
    if encoder_version is None:
        return None, {}
    encoder = services.encoders.load(encoder_version)
    vectors = {c.case_id: encoder.encode([i.pixels for i in images[c.case_id]]) for c in with_images}
    tokens = services.settings.imaging.soft_tokens
    return ImageFusion(encoder_version=encoder_version, encoder_dim=encoder.dim, tokens=tokens), vectors


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics[k] for k in ("accuracy", "macro_f1", "ece", "nll", "cases") if k in metrics}
