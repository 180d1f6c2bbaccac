"""CLI commands for the HTTP service: `serve`, API `keys`, and the API load benchmark.

Registered on the Typer apps of kbservice.cli (imported there); kept apart so each file stays readable.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from kbservice.cli import JsonFlag, _author, _print_json, app, bench_app, err, out, state
from kbservice.keys import ROLES, create_key, revoke_key
from kbservice.services import initialise

keys_app = typer.Typer(
    help="API keys for `kbservice serve`: create (shown once, stored hashed), list, revoke.", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")


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
        timeout_graceful_shutdown=30,
    )


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help=f"One of: {', '.join(ROLES)}.")],
    name: Annotated[str, typer.Option(help="A unique name; the audit log records it (never the key).")],
    as_json: JsonFlag = False,
) -> None:
    """Create an API key. The key is printed once and stored only as a hash: keep it safe."""
    initialise(state.settings)
    record, key = create_key(state.services, name=name, role=role, actor=_author(None))
    if as_json:
        _print_json({"name": record.name, "role": record.role, "key": key})
        return
    out.print(f"key {record.name} ({record.role}): {key}")
    err.print("[yellow]shown once: store it now (only its hash is kept)[/yellow]")


@keys_app.command("list")
def keys_list(as_json: JsonFlag = False) -> None:
    """List keys by name and role (never the keys themselves)."""
    records = state.services.key_store.all()
    if as_json:
        _print_json([r.to_json() for r in records])
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
    record = revoke_key(state.services, name=name, actor=_author(None))
    out.print(f"key {record.name} revoked")


@bench_app.command("api")
def bench_api(
    url: Annotated[str, typer.Option(help="The running service, e.g. http://127.0.0.1:8000.")],
    key: Annotated[str, typer.Option(envvar="KB_API_KEY", help="An API key with the clinician role or above.")],
    clients: Annotated[str, typer.Option(help="Comma-separated concurrency levels.")] = "1,4,16",
    seconds: Annotated[float, typer.Option(help="Duration of each level.")] = 20.0,
    kind: Annotated[str, typer.Option(help="search | recommend")] = "search",
    queries: Annotated[Path, typer.Option(help="MedQuAD JSONL: its questions are the queries.")] = Path(
        "../shared/data/medquad/medquad_answered.jsonl"
    ),
    as_json: JsonFlag = False,
) -> None:
    """Closed-loop load from this process against a running service: throughput, latency p50/p95/p99 and
    errors for each concurrency level."""
    from kbservice.api.loadtest import run_load

    if kind not in ("search", "recommend"):
        raise typer.BadParameter("kind must be search or recommend", param_hint="--kind")
    levels = [int(c) for c in clients.split(",") if c.strip()]
    result = run_load(url=url, key=key, kind=kind, levels=levels, seconds=seconds, queries_file=queries)
    if as_json:
        _print_json(result)
        return
    table = Table("clients", "requests", "errors", "req/s", "p50 ms", "p95 ms", "p99 ms")
    for row in result["levels"]:
        table.add_row(
            str(row["clients"]),
            str(row["requests"]),
            str(row["errors"]),
            f"{row['throughput']:.1f}",
            f"{row['p50_ms']:.1f}",
            f"{row['p95_ms']:.1f}",
            f"{row['p99_ms']:.1f}",
        )
    out.print(f"{kind} against {url}")
    out.print(table)
