"""`bench soak`: start `serve --workers N` on this data directory, drive mixed traffic at it for a bounded
time, and report errors, p95 per route per window and each worker's memory; the server and its key are
removed afterwards."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.table import Table

from kbservice.cli.app import JsonFlag, author_or_user, bench_app, err, out, print_json, state
from kbservice.errors import KBError
from kbservice.keys import create_key, revoke_key
from kbservice.process_memory import resident_mb
from kbservice.services import initialise

_MEDQUAD = Path("../shared/data/medquad/medquad_answered.jsonl")


@bench_app.command("soak")
def bench_soak(
    minutes: Annotated[float, typer.Option(min=0.5, help="How long the traffic runs.")] = 30.0,
    workers: Annotated[int, typer.Option(min=1, max=16, help="Worker processes of the served API.")] = 2,
    clients: Annotated[int, typer.Option(min=1, max=256, help="Concurrent closed-loop clients.")] = 4,
    window_s: Annotated[float, typer.Option(min=5, help="Latency and memory are reported per window.")] = 60.0,
    warmup_minutes: Annotated[float, typer.Option(min=0, help="Memory growth is measured from here.")] = 3.0,
    update_at_minutes: Annotated[
        float | None,
        typer.Option(min=0, help="When the one update cycle starts (default: a third of the run)."),
    ] = None,
    no_update: Annotated[bool, typer.Option("--no-update", help="Run no update cycle: traffic only.")] = False,
    queries: Annotated[Path, typer.Option(help="MedQuAD JSONL: its questions are the search queries.")] = _MEDQUAD,
    output: Annotated[Path | None, typer.Option("--out", help="Also write the full report (JSON) here.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Soak the HTTP service: mixed search (60%), recommend (25%) and case ingest (15%) from closed-loop
    clients, plus one update cycle, against `serve --workers N` on this data directory (which needs knowledge:
    run `kbservice demo` first). Reports requests and errors (target 0), p95 per route per window, and each
    worker's resident memory after warm-up and at the end (target: growth under 10%)."""
    from kbservice.api.loadtest import load_queries
    from kbservice.api.soak import SoakPlan, run_soak

    if update_at_minutes is not None and (no_update or update_at_minutes >= minutes):
        raise KBError(
            f"--update-at-minutes {update_at_minutes:g} must fall inside the run (--minutes {minutes:g})"
            + (" and cannot be given with --no-update" if no_update else "")
        )
    initialise(state.settings)
    services = state.services
    if services.store.head() is None:
        raise KBError("the knowledge base is empty: run `kbservice demo` (or ingest guidelines and cases) first")
    seconds = minutes * 60
    plan = SoakPlan(
        seconds=seconds,
        clients=clients,
        window_s=min(window_s, seconds),
        warmup_s=min(warmup_minutes * 60, seconds / 2),
        update_at_s=None if no_update else (update_at_minutes * 60 if update_at_minutes is not None else seconds / 3),
        queries=load_queries(queries),
        cases=_case_templates(),
    )
    name = f"soak-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}"
    _, key = create_key(services, name=name, role="trainer", actor=author_or_user(None))
    port = _free_port()
    # The server's log goes to a file: a pipe nobody reads would fill up and stall the server.
    log_path = services.settings.data_dir / "run" / f"{name}-server.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "kbservice", "serve", "--workers", str(workers), "--port", str(port)],
            env={**os.environ, "KB_DATA_DIR": str(services.settings.data_dir)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, server, log_path)
        err.print(f"soaking {url} ({workers} workers) for {minutes:g} min with {clients} clients")
        report = run_soak(url=url, key=key, plan=plan, rss=lambda: _worker_rss_mb(server.pid))
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=120)
        except subprocess.TimeoutExpired:
            server.kill()
        revoke_key(services, name=name, actor=author_or_user(None))
    report["workers"] = workers
    report["server_log"] = str(log_path)
    if output is not None:
        output.write_text(json.dumps(report, indent=2))
    if as_json:
        print_json(report)
        return
    _print_report(report)


def _case_templates() -> list[dict[str, Any]]:
    """The demo's labelled cases (findings and diagnosis only): what the soak ingests and asks about."""
    text = files("kbservice.demo").joinpath("cases.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [{"findings": row["findings"], "diagnosis": row["diagnosis"]} for row in rows]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_ready(url: str, server: subprocess.Popen[bytes], log_path: Path, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise KBError(f"the server exited before it was ready (log {log_path}): {log_path.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise KBError(f"the server was not ready within {timeout_s:.0f} s (log {log_path})")


def _worker_rss_mb(server_pid: int) -> dict[int, float]:
    """Resident memory of each worker process of the server (the server itself when it has one worker)."""
    children = [pid for pid in _children(server_pid) if "resource_tracker" not in _cmdline(pid)]
    return {pid: rss for pid in (children or [server_pid]) if (rss := resident_mb(pid)) is not None}


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return sorted(found)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _print_report(report: dict[str, Any]) -> None:
    out.print(
        f"{report['requests']} requests in {report['seconds']:.0f} s, {report['errors']} errors "
        f"{report['error_kinds'] or ''}; update cycle: {report['update'] or 'not run'}"
    )
    routes = sorted(report["routes"])
    table = Table("window from (s)", *[f"{route} p95 ms (n)" for route in routes], "worker RSS MB")
    for window in report["windows"]:
        cells = []
        for route in routes:
            shown = window["routes"].get(route)
            cells.append(f"{shown['p95_ms']} ({shown['requests']}, {shown['errors']} err)" if shown else "-")
        table.add_row(str(window["started_s"]), *cells, " ".join(str(w["mb"]) for w in window["rss_mb"]))
    out.print(table)
    for worker in report["worker_memory"]:
        growth = worker["rss_growth_pct"]
        out.print(
            f"worker {worker['pid']}: {worker['rss_mb_after_warmup']} MB after warm-up -> "
            f"{worker['rss_mb_end']} MB at the end ({'n/a' if growth is None else f'{growth:+.1f}%'})"
        )
