"""Learning-loop commands: update cycles (once or on a schedule), adapter versions, the frozen evaluation
set, and the learning report."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from kbservice.cli.app import (
    JsonFlag,
    adapters_app,
    app,
    author_or_user,
    err,
    machine_actor,
    out,
    print_json,
    progress,
    state,
    update_app,
)
from kbservice.errors import KBError

ReasonOption = Annotated[str | None, typer.Option("--reason", help="Why (recorded in the audit log).")]


def _print_run(report: dict[str, Any]) -> None:
    colour = {"promoted": "green", "rejected": "yellow", "skipped": "dim", "failed": "red"}.get(report["status"], "")
    out.print(f"run {report['run_id']}: [{colour}]{report['status']}[/] {report.get('adapter_version') or ''}")
    out.print(f"  {report['reason']}")
    metrics = report.get("metrics") or {}
    if metrics.get("candidate"):
        for who in ("candidate", "champion"):
            m = metrics[who]
            out.print(
                f"  {who:<9} accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}  ECE {m['ece']:.4f}  "
                f"({m['cases']} cases, {m['fitting']})"
            )
    training = report.get("training")
    if training:
        out.print(
            f"  trained on {training['examples']} examples, {training['tokens']} tokens at "
            f"{training['tokens_per_s']} tok/s, loss {training['first_loss']} -> {training['final_loss']}"
        )
    encoder = report.get("encoder") or {}
    if encoder.get("status") in ("promoted", "rejected"):
        m = encoder["metrics"]["candidate"] or {}
        auc = f"  AUC {m['auc']:.4f}" if m.get("auc") is not None else ""
        out.print(
            f"  encoder {encoder['version']}: {encoder['status']} · image-case accuracy {m.get('accuracy', 0):.4f}  "
            f"macro-F1 {m.get('macro_f1', 0):.4f}{auc} ({m.get('cases', 0)} cases; trained "
            f"{encoder['training']['epochs_run']} epochs in {encoder['training']['seconds']:.0f}s)"
        )
        for line in encoder["gate"]["reasons"]:
            out.print(f"    rejected: {line}")
        for line in encoder["gate"].get("not_judged", []):
            out.print(f"    not judged: {line}")
    elif encoder:
        out.print(f"  encoder: {encoder['reason']}")
    classifier = report.get("classifier") or {}
    if classifier.get("status") in ("promoted", "rejected"):
        with_it, without = classifier["metrics"]["candidate"], classifier["metrics"]["champion"]
        out.print(
            f"  classifier {classifier['version']}: {classifier['status']} · fused macro-F1 {with_it['macro_f1']:.4f} "
            f"with it vs {without['macro_f1']:.4f} with the champion's ({classifier['gate_cases']} held-out cases; "
            f"alone: accuracy {with_it['classifier_only_accuracy']:.4f})"
        )
    elif classifier:
        out.print(f"  classifier: {classifier['reason']}")
    language_model = report.get("language_model") or {}
    if language_model:
        own = language_model["model_only_accuracy"]
        out.print(
            f"  language model alone: accuracy {own['candidate']} (champion {own['champion']}); "
            f"{language_model['share_of_fused_score']:.1%} of the fused score"
        )
        if language_model.get("note"):
            out.print(f"  [yellow]{language_model['note']}[/]")
    labels = report.get("labels") or {}
    if labels.get("most_harmful_labeller"):
        out.print(f"  labeller whose labels agree least with the evidence: {labels['most_harmful_labeller']}")


@update_app.command("run-once")
def update_run_once(
    only: Annotated[
        str | None,
        typer.Option(
            "--only",
            help="Run one stage: encoder (image encoder), classifier (case classifier) or adapter (LoRA). "
            "Default: all three, in that order.",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """One update cycle now, under the database lease: new labelled image cases -> a candidate image
    encoder, judged on held-out image cases; labelled cases -> a candidate case classifier, judged by the
    gate on held-out cases; then new labelled cases -> a candidate adapter (starting from the champion) ->
    judged against the champion -> promoted or rejected."""
    from kbservice.learn.scheduler import run_once_with_lease
    from kbservice.learn.update import STAGES

    if only is not None and only not in STAGES:
        raise typer.BadParameter(f"choose one of {', '.join(STAGES)}", param_hint="--only")
    stages = (only,) if only else STAGES
    report = run_once_with_lease(state.services, holder=machine_actor(), progress=progress(), stages=stages)
    if as_json:
        print_json(report.to_json())
    else:
        _print_run(report.to_json())
    if report.status == "failed":
        raise typer.Exit(1)


@app.command("scheduler")
def scheduler_command(
    max_cycles: Annotated[
        int | None, typer.Option("--max-cycles", help="Stop after this many ticks (default: run until stopped).")
    ] = None,
    now: Annotated[bool, typer.Option("--now", help="Run the first cycle at once, then on the schedule.")] = False,
) -> None:
    """Long-running: update cycles on the configured schedule (learn.schedule: interval or cron). Several
    schedulers may share one database: a lease makes sure only one cycle trains at a time."""
    from kbservice.learn.scheduler import run_scheduler

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = state.settings.learn
    when = f"every {settings.interval_minutes:g} min" if settings.schedule == "interval" else f"cron '{settings.cron}'"
    err.print(f"scheduler started: update cycles {when}; Ctrl-C stops it")
    run_scheduler(state.services, max_cycles=max_cycles, run_now=now)


@adapters_app.command("list")
def adapters_list(as_json: JsonFlag = False) -> None:
    """Every adapter version with its status, aliases, parent and gate metrics."""
    rows = state.services.registry.list()
    if as_json:
        print_json(rows)
        return
    if not rows:
        out.print("no adapters yet: the base model serves (run `kbservice update run-once`)")
        return
    table = Table("version", "status", "aliases", "parent", "accuracy", "macro-F1", "ECE", "created")
    for r in rows:
        m = r["metrics"] or {}
        table.add_row(
            r["version"],
            r["status"],
            ", ".join(r["aliases"]),
            r["parent"] or "base",
            *(f"{m[k]:.4f}" if k in m else "–" for k in ("accuracy", "macro_f1", "ece")),
            (r["created_at"] or "")[:19],
        )
    out.print(table)


@adapters_app.command("show")
def adapters_show(
    version: Annotated[str, typer.Argument(help="An adapter version (a1, a2, ...).")], as_json: JsonFlag = False
) -> None:
    """Lineage, configuration, metrics, checksum and the case ids an adapter was trained and judged on."""
    shown = state.services.registry.show(version)
    if as_json:
        print_json(shown)
        return
    for key in (
        "version",
        "status",
        "aliases",
        "parent",
        "created_at",
        "finished_at",
        "knowledge_version",
        "base_model",
        "base_model_sha256",
        "artifact_sha256",
        "triggered_by",
        "error",
        "metrics",
        "hyperparameters",
    ):
        out.print(f"{key:<18} {shown[key]}")
    for key in ("train_case_ids", "heldout_case_ids", "replay_case_ids", "frozen_case_ids"):
        out.print(f"{key:<18} {len(shown[key])} cases")
    selection = ((shown.get("metrics") or {}).get("candidate") or {}).get("selection")
    if selection:
        modality = f" (modality: {selection['modality']})" if selection.get("modality") else ""
        out.print(f"{'evidence groups':<18} {', '.join(selection['groups']) or 'none'}{modality}: {selection['why']}")
    report = shown.get("report") or {}
    if report.get("gate"):
        verdict = "passed" if report["gate"]["passed"] else "failed"
        out.print(f"{'gate':<18} {verdict}: {'; '.join(report['gate']['reasons']) or report['decision']['reason']}")


@adapters_app.command("promote")
def adapters_promote(
    version: Annotated[str, typer.Argument(help="A version that passed the gate.")], reason: ReasonOption = None
) -> None:
    """Make VERSION the champion (the old champion becomes previous). Only versions that passed the gate."""
    state.services.adapter_store.promote(
        version, audit=state.services.audit, actor=machine_actor(), reason=reason or "manual"
    )
    out.print(f"champion is now {version}")


@adapters_app.command("rollback")
def adapters_rollback(reason: ReasonOption = None) -> None:
    """champion <- previous, at once for every serving process (they read the alias per request)."""
    old, new = state.services.adapter_store.rollback(
        audit=state.services.audit, actor=machine_actor(), reason=reason or "manual"
    )
    out.print(f"champion rolled back from {old or 'the base model'} to {new or 'the base model'}")


@adapters_app.command("diff")
def adapters_diff(
    first: Annotated[str, typer.Argument(help="The older version.")],
    second: Annotated[str, typer.Argument(help="The newer version.")],
    as_json: JsonFlag = False,
) -> None:
    """Metric changes, training/held-out/replay case differences and hyper-parameter changes."""
    diff = state.services.registry.diff(first, second)
    if as_json:
        print_json(diff)
        return
    for key, change in diff["metrics"].items():
        out.print(f"{key:<10} {change[first]} -> {change[second]} ({change['change']:+})")
    for key, data in diff["data"].items():
        out.print(
            f"{key:<18} only in {first}: {len(data[f'only_in_{first}'])}, only in {second}: "
            f"{len(data[f'only_in_{second}'])}, shared: {data['shared']}"
        )
    for key, change in diff["hyperparameters"].items():
        out.print(f"{key:<18} {change[first]} -> {change[second]}")


@adapters_app.command("freeze")
def adapters_freeze(
    count: Annotated[int, typer.Option("--count", help="How many labelled cases to add, sampled at random.")] = 0,
    case_ids: Annotated[list[int] | None, typer.Option("--case-id", help="Add this case (repeatable).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sample.")] = 0,
) -> None:
    """Grow the frozen evaluation set (trusted cases every candidate is judged on and none trains on). Only
    cases no adapter has trained on qualify: a case an adapter has seen cannot judge it fairly."""
    import random

    services = state.services
    trained = {i for a in services.adapter_store.all() for i in a["train_case_ids"] + a["replay_case_ids"]}
    chosen = list(case_ids or [])
    seen = sorted(set(chosen) & trained)
    if seen:
        raise KBError(f"case(s) {seen[:10]} were trained on by an adapter and cannot join the frozen evaluation set")
    if count:
        version = services.retriever.resolve_version(None)
        if version is None:
            raise KBError("the knowledge base is empty")
        frozen = set(services.adapter_store.frozen_case_ids())
        pool = [
            c.case_id
            for c in services.case_store.cases(as_of=version)
            if c.diagnosis and c.case_id not in frozen and c.case_id not in trained
        ]
        chosen += random.Random(seed).sample(pool, min(count, len(pool)))
    if not chosen:
        raise KBError(
            "no cases to add: name cases with --case-id or a sample size with --count (only cases no "
            "adapter has trained on qualify)"
        )
    added = services.adapter_store.freeze_cases(chosen, audit=services.audit, actor=author_or_user(None))
    out.print(
        f"added {len(added)} case(s); the frozen evaluation set holds {len(services.adapter_store.frozen_case_ids())}"
    )


@app.command("report")
def report_command(
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for index.html and its PNG charts.")] = Path(
        "kbservice-report"
    ),
) -> None:
    """An HTML page with PNG charts: metrics per adapter version, data growth, knowledge versions over time."""
    from kbservice.learn.report import write_report

    written = write_report(state.services, out_dir)
    out.print(f"wrote {written['html']} ({len(written['charts'])} charts)")
