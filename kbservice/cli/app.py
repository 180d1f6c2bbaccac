"""The Typer apps, the global state (settings, services, --quiet) and the output helpers every command
module shares. Command modules register themselves on these apps; none imports another."""

from __future__ import annotations

import getpass
import json
import socket
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from kbservice.config import Settings, load_settings
from kbservice.errors import IngestError, KBError
from kbservice.progress import NoProgress, Progress
from kbservice.services import Services, build_services

app = typer.Typer(
    help="kbservice: a versioned medical knowledge base with hybrid search and cited, calibrated, audited "
    "diagnosis and treatment recommendations (demonstration software, not a medical device).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
ingest_app = typer.Typer(
    help="Add knowledge: guideline files (Markdown, text, HTML, PDF, JSONL) or labelled cases (JSONL, CSV).",
    no_args_is_help=True,
)
index_app = typer.Typer(
    help="Check, rebuild or compact the vector and lexical indexes (a projection of SQL).", no_args_is_help=True
)
bench_app = typer.Typer(help="Measure ingest throughput, search latency and candidate scoring.", no_args_is_help=True)
eval_app = typer.Typer(
    help="Measure quality on real data: retrieval, de-identification, diagnosis, treatment.", no_args_is_help=True
)
audit_app = typer.Typer(
    help="The hash-chained audit log of knowledge changes and recommendations; show and replay.", no_args_is_help=True
)
models_app = typer.Typer(help="The local language model (base model files and checksum).", no_args_is_help=True)
update_app = typer.Typer(
    help="Run an update cycle: train a LoRA candidate on new cases and gate it.", no_args_is_help=True
)
adapters_app = typer.Typer(
    help="LoRA adapter versions: list, inspect, promote, roll back, compare; the frozen evaluation set.",
    no_args_is_help=True,
)
images_app = typer.Typer(help="Stored case images: metadata and similar prior images.", no_args_is_help=True)
encoders_app = typer.Typer(
    help="Image encoder versions (trained by the update cycle), like adapter versions.", no_args_is_help=True
)
classifiers_app = typer.Typer(
    help="Case classifier versions (trained by the update cycle; one evidence group of the fusion).",
    no_args_is_help=True,
)
pacs_app = typer.Typer(
    help="A PACS over DICOMweb ([pacs] in the configuration): reachability and study search.", no_args_is_help=True
)
keys_app = typer.Typer(
    help="API keys for `kbservice serve`: create (shown once, stored hashed), list, revoke.", no_args_is_help=True
)
for sub_app, name in (
    (ingest_app, "ingest"),
    (index_app, "index"),
    (bench_app, "bench"),
    (eval_app, "eval"),
    (models_app, "models"),
    (audit_app, "audit"),
    (images_app, "images"),
    (encoders_app, "encoders"),
    (update_app, "update"),
    (adapters_app, "adapters"),
    (classifiers_app, "classifiers"),
    (pacs_app, "pacs"),
    (keys_app, "keys"),
):
    app.add_typer(sub_app, name=name)

# Piped output (files, tests, other programs) gets wide tables instead of rich's 80-column default.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON (documented in the README).")]
ModeOption = Annotated[
    str, typer.Option("--mode", help="rag (retrieval + model + similar cases) | no-rag (model alone)")
]
ImageOption = Annotated[
    list[Path], typer.Option("--image", help="An image: DICOM, PNG, JPEG or NIfTI (repeat for several).")
]


class CliState:
    """What the global options set up, and the services built once per command on first use."""

    settings: Settings
    quiet: bool = False
    _services: Services | None = None

    @property
    def services(self) -> Services:
        if self._services is None:
            self._services = build_services(self.settings)
        return self._services

    def close(self) -> None:
        if self._services is not None:
            self._services.close()
            self._services = None


state = CliState()


class RichProgress:
    """Progress bars on stderr; used only when stderr is a terminal and --quiet is off."""

    @contextmanager
    def task(self, description: str, *, total: int):  # type: ignore[no-untyped-def]
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        columns = ("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=err, transient=True) as bar:
            task_id = bar.add_task(description, total=total)

            def advance(n: int, status: str | None = None) -> None:
                if status:
                    bar.update(task_id, description=f"{description} [dim]{status}[/]")
                bar.advance(task_id, n)

            yield advance


def progress() -> Progress:
    """Progress bars for long work, unless --quiet or stderr is not a terminal."""
    return RichProgress() if not state.quiet and sys.stderr.isatty() else NoProgress()


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str, ensure_ascii=False))


def print_measures(result: dict[str, Any]) -> None:
    """A benchmark's figures as a two-column table."""
    table = Table("measure", "value")
    for key, value in result.items():
        table.add_row(key, str(value))
    out.print(table)


def author_or_user(given: str | None) -> str:
    """Who a change is recorded as: the --author/--actor given, else the user name."""
    if given:
        return given
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def machine_actor() -> str:
    """Who runs a learning-loop command, for the audit log and the update lease: user and host."""
    return f"cli:{author_or_user(None)}@{socket.gethostname()}"


MAX_VERSION = 2**63 - 1  # knowledge versions and audit sequence numbers are 64-bit integers in both databases


def check_version(value: int | None) -> int | None:
    """Typer callback for a knowledge version or sequence number: one no database can hold is a usage error
    (one line, exit 1), not an OverflowError traceback from the driver."""
    if value is not None and not 0 <= value <= MAX_VERSION:
        raise KBError(f"{value} is out of range: versions and sequence numbers are whole numbers 0..{MAX_VERSION}")
    return value


def check_mode(mode: str) -> str:
    if mode not in ("rag", "no-rag"):
        raise typer.BadParameter("mode must be rag or no-rag", param_hint="--mode")
    return mode


def print_recommendation(response: dict) -> None:
    """A recommendation (its JSON form) for people: provenance, differential, plan and sources."""
    provenance = response["provenance"]
    out.print(
        f"[bold]{response['id']}[/bold]  [dim]knowledge v{provenance['knowledge_version']} · "
        f"{provenance['base_model']} · adapter {provenance['adapter_version'] or 'none'} · "
        f"calibration {provenance['calibration_id'] or 'default (uncalibrated)'}[/dim]"
    )
    out.print("[yellow]demonstration output, not clinical advice[/yellow]")
    if response["abstained"]:
        out.print(f"[red]abstained:[/red] {response['reason']}")
    if response["images"]["note"]:
        out.print(f"[yellow]{response['images']['note']}[/yellow]")
    out.print("\n[bold]Differential diagnosis[/bold]")
    for entry in response["differential"]:
        cites = ", ".join(entry["citations"][:6]) or "no supporting source"
        out.print(f"  {entry['probability']:6.1%}  {entry['diagnosis']}  [dim][{cites}][/dim]")
    treatment = response["treatment"]
    out.print("\n[bold]Treatment plan[/bold]")
    out.print(f"  {treatment['plan'] or treatment.get('note') or '-'}")
    out.print("\n[bold]Sources[/bold]")
    for source in response["sources"]:
        label = source["title"] + (
            f" (diagnosis: {'; '.join(source['diagnosis'])})" if source["kind"] == "case" else ""
        )
        out.print(f"  [{source['id']}] {source['kind']:<9} {label[:100]}")


@app.callback()
def _global(
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", envvar="KB_DATA_DIR", help="Data directory (default: ~/.local/share/kbservice)."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    state.settings = load_settings(data_dir=data_dir)
    state.quiet = quiet


def main() -> None:
    """The `kbservice` entry point: errors a user can act on print their message and exit 1."""
    try:
        app()
    except IngestError as exc:
        err.print(f"[red]error:[/red] {exc}", markup=True)
        sys.exit(1)
    except KBError as exc:
        err.print(f"[red]error:[/red] {exc}")
        sys.exit(1)
    finally:
        state.close()
