"""One update cycle: new labelled cases -> LoRA candidate -> gate against the champion -> promote or reject.

The caller holds the update lease (see lease_guard), so at most one cycle trains at a time. Every cycle
leaves an update_runs row (skipped ones included); every trained candidate leaves an adapters row that
ends "promoted", "rejected" or "failed" and is never changed afterwards. The steps are separate modules:
what the cycle reads (cycle_data), building the candidate (candidate), judging it (judging, gate).
"""

from __future__ import annotations

import resource
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from kbservice.errors import KBError
from kbservice.learn.candidate import TrainedCandidate, judge_every_case, train_candidate
from kbservice.learn.cycle_data import (
    AdapterPlan,
    NewCases,
    case_images,
    image_fusion,
    plan_adapter_data,
    read_new_cases,
)
from kbservice.learn.gate import label_agreement
from kbservice.learn.judging import Verdict, judge_candidate
from kbservice.learn.lease_guard import HeldLease
from kbservice.learn.train import hyperparameters
from kbservice.progress import NoProgress, Progress
from kbservice.recommend.prompts import PROMPT_VERSION
from kbservice.types import UpdateReport

if TYPE_CHECKING:
    from kbservice.services import Services

STAGES = ("encoder", "classifier", "adapter")


def run_update_cycle(
    services: Services,
    *,
    triggered_by: str,
    lease: HeldLease | None = None,
    progress: Progress | None = None,
    stages: Sequence[str] = STAGES,
) -> UpdateReport:
    """Runs one cycle and returns its report (also stored with the run, and with the adapter version).
    `stages`: the encoder stage (new labelled image cases -> image encoder) runs first, so the adapter
    stage trains its image projector on the encoder that serves; then the classifier stage (labelled cases
    -> case classifier), so the adapter is judged and calibrated with the classifier that serves."""
    unknown = sorted(set(stages) - set(STAGES))
    if unknown or not stages:
        raise KBError(f"unknown update stage(s) {unknown}; choose from {', '.join(STAGES)}")
    progress = progress or NoProgress()
    started = time.perf_counter()
    store = services.adapter_store
    reaped = services.registry.reap_interrupted(actor=triggered_by)
    interrupted_runs = store.fail_running_runs(reason="interrupted: the process running it stopped")
    run_id = f"run-{uuid.uuid4().hex[:12]}"
    version = services.retriever.resolve_version(None)
    store.start_run(run_id=run_id, triggered_by=triggered_by, knowledge_version=version)
    report = UpdateReport(
        run_id=run_id,
        knowledge_version=version,
        triggered_by=triggered_by,
        reaped_adapters=reaped,
        reaped_runs=interrupted_runs,
    )
    try:
        report = _run_stages(services, report, stages=stages, lease=lease, progress=progress)
    except _StageFailed as failed:
        error = failed.error
        _finish_run(services, replace(failed.report, status="failed", reason=_failure(error)), started=started)
        raise error from error.__cause__
    except BaseException as error:  # every failure, KeyboardInterrupt included, ends the run row
        _finish_run(services, replace(report, status="failed", reason=_failure(error)), started=started)
        raise
    return _finish_run(services, report, started=started)


def _failure(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


class _StageFailed(Exception):
    """A stage failed after the report had grown: carries the report as far as it got (it is stored with the
    failed run) and the error the cycle raises."""

    def __init__(self, report: UpdateReport, error: BaseException) -> None:
        super().__init__(str(error))
        self.report, self.error = report, error


def _run_stages(
    services: Services, report: UpdateReport, *, stages: Sequence[str], lease: HeldLease | None, progress: Progress
) -> UpdateReport:
    """The report with the cycle's outcome (`status`, `reason`, `adapter_version`), not yet stamped."""
    settings = services.settings.learn
    if report.knowledge_version is None:
        return replace(report, status="skipped", reason="the knowledge base is empty")
    data = read_new_cases(services, version=report.knowledge_version)
    # One split of the new cases serves both stages (the encoder holds out the adapter's held-out cases).
    plan = plan_adapter_data(data, settings=settings)
    report = replace(report, champion=data.champion, data_watermark=data.data_watermark, new_cases=len(data.new))
    if "encoder" in stages:
        report = replace(report, encoder=_encoder_stage(services, report, data, plan, lease=lease, progress=progress))
    if "classifier" in stages:
        report = replace(
            report, classifier=_classifier_stage(services, report, data, plan, lease=lease, progress=progress)
        )
    if "adapter" not in stages:
        return _outcome_without_adapter(report)
    if len(data.new) < settings.min_new_cases:
        return _skipped(
            report,
            f"{len(data.new)} new labelled case(s) since knowledge version {data.data_watermark}; "
            f"an update needs at least {settings.min_new_cases}",
        )
    judged_already = [
        a
        for a in services.adapter_store.all()
        if a["parent"] == data.champion and a["data_watermark"] == data.version and a["status"] == "rejected"
    ]
    if judged_already:
        return _skipped(
            report,
            f"no new cases since adapter {judged_already[-1]['version']} was trained on knowledge version "
            f"{data.version} and rejected; ingest more cases or retract the bad ones",
        )
    return _adapter_stage(services, report, data, plan, lease=lease, progress=progress)


def _outcome_without_adapter(report: UpdateReport) -> UpdateReport:
    """The run's status and reason from the stages that ran: promoted if any promoted, else rejected if any
    was rejected, else skipped."""
    stages = [
        (name, stage) for name, stage in (("encoder", report.encoder), ("classifier", report.classifier)) if stage
    ]
    summaries = []
    for name, stage in stages:
        if stage["status"] == "skipped":
            summaries.append(f"{name} skipped: {stage['reason']}")
        else:
            passed = "; ".join(stage["gate"]["reasons"]) or "passed the gate"
            summaries.append(f"{name} {stage['version']} {stage['status']}: {passed}")
    statuses = {stage["status"] for _, stage in stages}
    status = next((s for s in ("promoted", "rejected") if s in statuses), "skipped")
    return replace(report, status=status, reason="; ".join(summaries))


def _skipped(report: UpdateReport, reason: str) -> UpdateReport:
    finished = [
        f"{name} {stage['version']} {stage['status']}"
        for name, stage in (("encoder", report.encoder), ("classifier", report.classifier))
        if stage and stage.get("status") in ("promoted", "rejected")
    ]
    if finished:
        reason = f"{'; '.join(finished)}; adapter skipped: {reason}"
    return replace(report, status="skipped", reason=reason)


def _encoder_stage(
    services: Services,
    report: UpdateReport,
    data: NewCases,
    plan: AdapterPlan,
    *,
    lease: HeldLease | None,
    progress: Progress,
) -> dict:
    from kbservice.learn.encoder_cycle import run_encoder_stage

    return run_encoder_stage(
        services,
        run_id=report.run_id,
        version=data.version,
        labelled=data.labelled,
        frozen_ids=data.frozen_ids,
        shared_split=({c.case_id for c in data.new}, {c.case_id for c in plan.heldout}),
        triggered_by=report.triggered_by,
        progress=progress,
        check_lease=lease.check if lease else lambda: None,
    )


def _classifier_stage(
    services: Services,
    report: UpdateReport,
    data: NewCases,
    plan: AdapterPlan,
    *,
    lease: HeldLease | None,
    progress: Progress,
) -> dict:
    from kbservice.learn.classifier_cycle import run_classifier_stage

    return run_classifier_stage(
        services,
        run_id=report.run_id,
        data=data,
        plan=plan,
        triggered_by=report.triggered_by,
        progress=progress,
        check_lease=lease.check if lease else lambda: None,
    )


def _adapter_stage(
    services: Services,
    report: UpdateReport,
    data: NewCases,
    plan: AdapterPlan,
    *,
    lease: HeldLease | None,
    progress: Progress,
) -> UpdateReport:
    """Plan, retrieve, check labels, train, judge and record: the part of a cycle that builds an adapter.
    A failure is raised as _StageFailed carrying the report as far as it got (it is stored with the run)."""
    store, settings = services.adapter_store, services.settings.learn
    report = replace(report, split=plan.split)
    try:
        started = time.perf_counter()
        everyone = plan.training_cases + plan.gate_cases
        images = case_images(services, everyone)
        classifier = services.serving_classifier(services.classifiers.champion_version())
        judged = judge_every_case(
            services,
            everyone,
            version=data.version,
            images=images,
            progress=progress,
            classifier=classifier.model if classifier else None,
        )
        # The gate never judges on a case the serving classifier was trained on (its scores there are
        # overconfident); the cycle's own held-out and frozen cases never are, this guards older versions.
        seen = set(services.classifier_store.get(classifier.version)["train_case_ids"]) if classifier else set()
        gate_cases = [c for c in plan.gate_cases if c.case_id not in seen]
        timings = {"retrieve_s": time.perf_counter() - started}
        # The poisoning guard looks at the labels before any training time is spent on them.
        label_reasons, labels_report = label_agreement(
            [judged[c.case_id] for c in plan.train + plan.heldout],
            [judged[c.case_id] for c in plan.replay + plan.frozen],
            settings,
        )
        fusion, vectors = image_fusion(services, plan.training_cases, images)
        summary = (
            {"encoder_version": fusion.encoder_version, "tokens": fusion.tokens, "cases_with_images": len(vectors)}
            if fusion
            else None
        )
        report = replace(report, labels=labels_report, image_fusion=summary)
        candidate = _start_adapter_row(
            services, report, data, plan, encoder_version=fusion.encoder_version if fusion else None
        )
    except BaseException as error:
        raise _StageFailed(report, error) from error
    report = replace(report, adapter_version=candidate)
    try:
        trained = train_candidate(
            services,
            version=candidate,
            champion=data.champion,
            plan=plan,
            judged=judged,
            fusion=fusion,
            image_vectors=vectors,
            lease=lease,
            progress=progress,
        )
        report = replace(report, training=trained.training.to_json())
        timings["train_s"] = trained.train_s
        verdict = judge_candidate(
            services,
            candidate=candidate,
            champion=data.champion,
            gate_cases=[judged[c.case_id] for c in gate_cases],
            label_reasons=label_reasons,
            progress=progress,
        )
        timings["evaluate_s"] = verdict.evaluate_s
        report = replace(
            report,
            metrics={"candidate": verdict.candidate_metrics, "champion": verdict.champion_metrics},
            language_model=verdict.language_model,
            gate=verdict.gate,
            timings={k: round(v, 2) for k, v in timings.items()},
            calibration_id=services.recommendations.save_calibration(
                base_model_sha256=services.generator.model_sha256,
                adapter_version=candidate,
                prompt_version=PROMPT_VERSION,
                mode="rag",
                knowledge_version=data.version,
                weights=verdict.candidate_fusion.weights,
                metrics=verdict.candidate_metrics,
                case_ids=[c.case_id for c in gate_cases],
                classifier_version=classifier.version if classifier else None,
            ),
        )
        if lease:
            lease.check()
        report = _finish_adapter(services, report, verdict, trained=trained)
    except BaseException as error:  # the candidate's row is still "training": it fails, its files go
        services.registry.remove_files(candidate)
        store.finish(candidate, status="failed", audit=services.audit, actor=report.triggered_by, error=_failure(error))
        failure = KBError(f"update cycle failed while building adapter {candidate}: {error}")
        failure.__cause__ = error
        raise _StageFailed(report, failure) from error
    return replace(report, status=report.adapter_status, reason=report.decision.reason)  # type: ignore[union-attr]


def _start_adapter_row(
    services: Services, report: UpdateReport, data: NewCases, plan: AdapterPlan, *, encoder_version: str | None
) -> str:
    """Writes the candidate's row (status "training") with everything it will be trained and judged on;
    returns its version."""
    store, base = services.adapter_store, services.generator
    candidate = store.next_version()
    store.start(
        version=candidate,
        run_id=report.run_id,
        parent=data.champion,
        base_model=base.model_name,
        base_model_sha256=base.model_sha256,
        knowledge_version=data.version,
        data_watermark=data.version,
        train_case_ids=[c.case_id for c in plan.train],
        heldout_case_ids=[c.case_id for c in plan.heldout],
        replay_case_ids=[c.case_id for c in plan.replay],
        frozen_case_ids=[c.case_id for c in plan.frozen],
        hyperparameters=hyperparameters(services.settings.learn) | {"prompt_version": PROMPT_VERSION},
        triggered_by=report.triggered_by,
        encoder_version=encoder_version,
    )
    return candidate


def _finish_adapter(
    services: Services, report: UpdateReport, verdict: Verdict, *, trained: TrainedCandidate
) -> UpdateReport:
    """Finishes the candidate's adapter row with the decision and the report up to it (promoted: the aliases
    move in the same transaction)."""
    decision = verdict.decision
    report = replace(report, adapter_status=decision.status, decision=decision)
    services.adapter_store.finish(
        trained.version,
        status=decision.status,
        audit=services.audit,
        actor=report.triggered_by,
        metrics=_headline(verdict.candidate_metrics),
        report=report.to_json(),
        artifact_sha256=trained.checksum,
        artifact=trained.archive,
        promote_reason=decision.reason,
    )
    return report


def _finish_run(services: Services, report: UpdateReport, *, started: float) -> UpdateReport:
    """Stamps the report's duration and peak memory and finishes the run row with it."""
    report = replace(
        report,
        metrics=report.metrics or {"candidate": None, "champion": None},
        seconds=round(time.perf_counter() - started, 2),
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    )
    services.adapter_store.finish_run(
        report.run_id,
        status=report.status or "failed",
        reason=report.reason or "",
        adapter_version=report.adapter_version,
        report=report.to_json(),
    )
    return report


def _headline(metrics: dict) -> dict:
    return {k: metrics[k] for k in ("accuracy", "macro_f1", "ece", "nll", "cases") if k in metrics}
