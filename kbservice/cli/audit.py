"""Audit commands: the hash-chained log (list, verify) and stored recommendations (show, replay)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from kbservice.cli.app import (
    JsonFlag,
    audit_app,
    author_or_user,
    check_version,
    out,
    print_json,
    print_recommendation,
    state,
)


@audit_app.command("list")
def audit_list(
    limit: Annotated[int, typer.Option(min=1, help="At most this many entries, oldest first.")] = 100,
    after: Annotated[int, typer.Option(callback=check_version, help="Start after this sequence number.")] = 0,
    as_json: JsonFlag = False,
) -> None:
    """List audit entries (seq, time, kind, actor, payload, hashes)."""
    entries = list(state.services.audit.store.entries(after_seq=after, limit=limit))
    if as_json:
        print_json([entry.to_json() for entry in entries])
        return
    table = Table("seq", "time", "kind", "actor", "payload", "hash")
    for entry in entries:
        table.add_row(
            str(entry.seq), entry.created_at[:19], entry.kind, entry.actor, entry.payload[:80], entry.hash[:12]
        )
    out.print(table if entries else "no audit entries")


@audit_app.command("verify")
def audit_verify(as_json: JsonFlag = False) -> None:
    """Recompute the audit hash chain; exit 1 if any entry was altered, removed or reordered."""
    result = state.services.audit.verify()
    if as_json:
        print_json(result.to_json())
    elif result.ok:
        out.print(f"audit log ok: {result.entries} entries, chain intact")
    else:
        out.print(f"[red]audit log NOT OK[/red] at entry {result.first_bad_seq}: {result.problem}")
    if not result.ok:
        raise typer.Exit(1)


@audit_app.command("show")
def audit_show(
    recommendation_id: Annotated[str, typer.Argument(help="A recommendation id (rec-...).")], as_json: JsonFlag = False
) -> None:
    """A stored recommendation: its request, answer, provenance, cited passages and audit row."""
    from kbservice.recommend.answer import show

    shown = show(state.services, recommendation_id)
    if as_json:
        print_json(shown.to_json())
        return
    out.print(
        f"audit row {shown.audit_seq}, created {shown.created_at}, "
        f"{'intact' if shown.intact else '[red]DOES NOT MATCH ITS AUDITED HASH[/red]'}"
    )
    out.print(f"request: {shown.request}")
    print_recommendation(shown.response)


@audit_app.command("replay")
def audit_replay(
    recommendation_id: Annotated[str, typer.Argument(help="A recommendation id (rec-...).")],
    as_json: JsonFlag = False,
) -> None:
    """Re-run a recommendation from its provenance (knowledge version, adapter, calibration, prompt version);
    exit 1 if the output differs."""
    from kbservice.recommend.answer import replay

    result = replay(state.services, recommendation_id, actor=author_or_user(None))
    if as_json:
        print_json(result.to_json())
    elif result.identical:
        out.print(f"replay of {recommendation_id}: identical output")
    else:
        out.print(f"[red]replay of {recommendation_id} differs[/red]")
        for line in result.differences[:20]:
            out.print(f"  {line}")
    if not result.identical:
        raise typer.Exit(1)
