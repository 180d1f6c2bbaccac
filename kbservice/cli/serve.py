"""Service commands: `serve` (the HTTP API and the auditors' web page) and its API keys."""

from __future__ import annotations

import os
import shutil
from typing import Annotated

import typer
from rich.table import Table

from kbservice.cli.app import JsonFlag, app, author_or_user, err, keys_app, out, print_json, state
from kbservice.keys import ROLES, create_key, revoke_key
from kbservice.services import initialise


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes (each loads the models).")] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the HTTP API under /v1 (OpenAPI at /docs) and the auditors' web page at /. Workers share the
    database (SQLite in WAL mode, or PostgreSQL); create keys first with `kbservice keys create`."""
    import uvicorn

    initialise(state.settings)
    # A replica whose de-identification key disagrees with the one the others share must not start: it would
    # give the same patient other pseudonyms, UIDs and date shifts.
    state.services.deid_key()
    # Every worker reads its settings from the environment: carry --data-dir there.
    os.environ["KB_DATA_DIR"] = str(state.settings.data_dir)
    # Prometheus counters of all workers are summed through files in this folder (emptied at start).
    metrics_dir = state.settings.data_dir / "run" / "prometheus"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    # Each worker's torch would otherwise start one thread per core: N workers would oversubscribe the cores.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
    err.print(f"serving {state.settings.data_dir} on http://{host}:{port} with {workers} worker(s)")
    uvicorn.run(
        "kbservice.api.app:create_app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        # Access lines would carry query strings (search text may quote a patient note); every request is
        # recorded instead in the audit log (key name, route template, status, duration) and the metrics.
        access_log=False,
        # SIGTERM stops accepting at once and lets requests and streams in flight finish within the grace.
        timeout_graceful_shutdown=state.settings.api.shutdown_grace_s,
    )


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help=f"One of: {', '.join(ROLES)}.")],
    name: Annotated[str, typer.Option(help="A unique name; the audit log records it (never the key).")],
    as_json: JsonFlag = False,
) -> None:
    """Create an API key. The key is printed once and stored only as a hash: keep it safe."""
    initialise(state.settings)
    record, key = create_key(state.services, name=name, role=role, actor=author_or_user(None))
    if as_json:
        print_json({"name": record.name, "role": record.role, "key": key})
        return
    out.print(f"key {record.name} ({record.role}): {key}")
    err.print("[yellow]shown once: store it now (only its hash is kept)[/yellow]")


@keys_app.command("list")
def keys_list(as_json: JsonFlag = False) -> None:
    """List keys by name and role (never the keys themselves)."""
    records = state.services.key_store.all()
    if as_json:
        print_json([r.to_json() for r in records])
        return
    table = Table("name", "role", "created", "by", "revoked")
    for r in records:
        table.add_row(
            r.name,
            r.role,
            r.created_at.strftime("%Y-%m-%d %H:%M"),
            r.created_by,
            r.revoked_at.strftime("%Y-%m-%d %H:%M") if r.revoked_at else "-",
        )
    out.print(table if records else "no keys: create one with `kbservice keys create --role admin --name NAME`")


@keys_app.command("revoke")
def keys_revoke(name: Annotated[str, typer.Argument(help="The key's name.")]) -> None:
    """Revoke a key: every worker refuses it from its next request."""
    record = revoke_key(state.services, name=name, actor=author_or_user(None))
    out.print(f"key {record.name} revoked")
