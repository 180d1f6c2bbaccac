"""`classifiers list|show`: the case classifier versions the update cycle trained, with their gate reports.

A classifier serves through a calibration (the fusion weights fitted with it), so it changes with the
calibration a request uses: the newest one for the serving adapter, which a promotion writes."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from kbservice.cli.app import JsonFlag, classifiers_app, out, print_json, state


def _json_row(row: dict[str, Any], aliases: dict[str, str | None]) -> dict[str, Any]:
    row = dict(row)
    row["aliases"] = [name for name, version in aliases.items() if version == row["version"]]
    for key in ("created_at", "finished_at"):
        row[key] = row[key].isoformat() if row[key] else None
    row["train_cases"] = len(row.pop("train_case_ids") or [])
    row["heldout_cases"] = len(row.pop("heldout_case_ids") or [])
    return row


@classifiers_app.command("list")
def classifiers_list(as_json: JsonFlag = False) -> None:
    """Every classifier version with its status, aliases, training size and held-out gate metrics."""
    store = state.services.classifier_store
    aliases = store.aliases()
    rows = [{k: v for k, v in _json_row(r, aliases).items() if k != "report"} for r in store.all()]
    if as_json:
        print_json(rows)
        return
    if not rows:
        out.print(
            "no case classifier yet: the update cycle trains one once "
            f"{state.settings.learn.min_new_cases} labelled cases exist (`kbservice update run-once`)"
        )
        return
    table = Table("version", "status", "aliases", "parent", "train", "held out", "accuracy", "macro-F1", "created")
    for r in rows:
        m = r["metrics"] or {}
        table.add_row(
            r["version"],
            r["status"],
            ", ".join(r["aliases"]),
            r["parent"] or "-",
            str(r["train_cases"]),
            str(r["heldout_cases"]),
            *(f"{m[key]:.4f}" if isinstance(m.get(key), float) else "–" for key in ("accuracy", "macro_f1")),
            r["created_at"][:19],
        )
    out.print(table)


@classifiers_app.command("show")
def classifiers_show(
    version: Annotated[str, typer.Argument(help="A classifier version, e.g. c1.")],
    as_json: JsonFlag = False,
) -> None:
    """One version: its stage report (training size, chosen regularisation, the gate's checks and metrics of
    the fusion with and without it on the held-out cases) and hyper-parameters."""
    store = state.services.classifier_store
    row = _json_row(store.get(version), store.aliases())
    if as_json:
        print_json(row)
        return
    report = row.get("report") or {}
    out.print(f"classifier {row['version']} ({row['status']}; {', '.join(row['aliases']) or 'no alias'})")
    out.print(f"trained on {row['train_cases']} cases, judged on {row['heldout_cases']} held-out cases")
    out.print(f"embedder {row['embedder']}; regularisation C = {report.get('chosen_c', '–')}")
    for side in ("candidate", "champion"):
        m = (report.get("metrics") or {}).get(side)
        if m:
            out.print(f"  fusion with the {side:<9} accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}")
    gate = report.get("gate") or {}
    out.print("gate: " + ("; ".join(gate.get("reasons") or []) or "passed"))
    if row.get("error"):
        out.print(f"error: {row['error']}")
