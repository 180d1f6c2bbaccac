"""Audit commands: the hash-chained log (list, checkpoint, verify) and stored recommendations (show, replay)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from kbservice.audit.checkpoints import CHECKPOINT_KEY_NAME, make_checkpoint, read_checkpoints, trusted_public_key
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


def _checkpoint_key_path(key: Path | None) -> Path:
    return key if key is not None else state.services.settings.data_dir / CHECKPOINT_KEY_NAME


KeyOption = Annotated[
    Path | None,
    typer.Option(
        "--key",
        help=f"Ed25519 signing key (raw, owner-only); default <data dir>/{CHECKPOINT_KEY_NAME}, created on first use.",
    ),
]


@audit_app.command("checkpoint")
def audit_checkpoint(
    output: Annotated[
        Path | None,
        typer.Option("--out", help="Append the checkpoint to this file (one JSON line); default: print it."),
    ] = None,
    key: KeyOption = None,
) -> None:
    """Sign the audit chain's head (sequence, hash, time) with an Ed25519 key and print it or append it to a
    file. Keep checkpoints outside the database (an append-only file, a ticket, another system): `audit verify
    --checkpoint` then notices rows cut off the chain's end, which the chain alone cannot."""
    checkpoint = make_checkpoint(state.services.audit.store, key_path=_checkpoint_key_path(key))
    line = json.dumps(checkpoint.to_json(), sort_keys=True)
    if output is None:
        print(line)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    out.print(f"checkpoint at row {checkpoint.seq} appended to {output} (public key {checkpoint.public_key})")


@audit_app.command("verify")
def audit_verify(
    checkpoint: Annotated[
        list[Path] | None,
        typer.Option("--checkpoint", help="A file of checkpoints from `audit checkpoint` (repeatable)."),
    ] = None,
    public_key: Annotated[
        str | None,
        typer.Option(help="Trust checkpoints signed by this Ed25519 public key (hex); default: --key's."),
    ] = None,
    key: KeyOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Recompute the audit hash chain, compare every knowledge-version row with its audit entry, and check that
    the chain still reaches each given checkpoint; exit 1 if any entry or version row was altered, removed,
    reordered or cut off."""
    services = state.services
    checkpoints = read_checkpoints(checkpoint) if checkpoint else []
    trusted = public_key or (trusted_public_key(_checkpoint_key_path(key)) if checkpoints else None)
    result = services.audit.verify(versions=services.store.versions(), checkpoints=checkpoints, trusted_key=trusted)
    if as_json:
        print_json(result.to_json())
    elif result.ok:
        reached = f", reaches {result.checkpoints} checkpoint(s)" if result.checkpoints else ""
        out.print(
            f"audit log ok: {result.entries} entries, chain intact, {result.versions} version rows match{reached}"
        )
    else:
        where = f" at entry {result.first_bad_seq}" if result.first_bad_seq is not None else ""
        out.print(f"[red]audit log NOT OK[/red]{where}: {result.problem}")
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
