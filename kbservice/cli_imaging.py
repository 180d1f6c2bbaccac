"""CLI commands for medical images: similar images, stored image metadata, encoder versions, describe.

Registered on the Typer apps of kbservice.cli (imported there).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from kbservice.cli import JsonFlag, _author, _print_json, _progress, app, bench_app, eval_app, out, state

if TYPE_CHECKING:
    from kbservice.recommend.request import RequestImage

images_app = typer.Typer(help="Stored case images: metadata and similar prior images.", no_args_is_help=True)
encoders_app = typer.Typer(
    help="Image encoder versions (trained by the update cycle), like adapter versions.", no_args_is_help=True
)
app.add_typer(images_app, name="images")
app.add_typer(encoders_app, name="encoders")

ImageOption = Annotated[
    list[Path], typer.Option("--image", help="An image: DICOM, PNG, JPEG or NIfTI (repeat for several).")
]


def request_images(paths: list[Path]) -> tuple[RequestImage, ...]:
    """The images of a request, read and normalised (ImageReadError names a bad file)."""
    from kbservice.imaging.prepare import request_pixels
    from kbservice.recommend.request import RequestImage

    return tuple(RequestImage.of(request_pixels(path, settings=state.settings.imaging)) for path in paths)


@images_app.command("similar")
def images_similar(
    image: ImageOption,
    k: Annotated[int, typer.Option("--k", min=1, max=100, help="How many similar prior cases.")] = 5,
    as_of: Annotated[int | None, typer.Option("--as-of", help="Cases valid at this version (default: newest).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Prior cases whose images are most similar (champion encoder's image index), one row per case."""
    from kbservice.imaging.similar_cases import similar_cases

    if not image:
        raise typer.BadParameter("give at least one --image", param_hint="--image")
    found = similar_cases(state.services, request_images(image), k=k, as_of=as_of)
    if as_json:
        _print_json(found)
        return
    if found["note"]:
        out.print(found["note"])
        return
    table = Table("score", "image_id", "case_id", "case", "diagnosis")
    for hit in found["similar"]:
        table.add_row(
            f"{hit['score']:.4f}", str(hit["image_id"]), str(hit["case_id"]), hit["case"], "; ".join(hit["diagnosis"])
        )
    out.print(f"encoder {found['encoder_version']} · knowledge v{found['knowledge_version']}")
    out.print(table)


@images_app.command("show")
def images_show(
    image_id: Annotated[int, typer.Argument(help="A stored image id (`kbservice cases --json` lists image_ids).")],
    as_json: JsonFlag = False,
) -> None:
    """A stored image's metadata; for DICOM, every header element as stored (after de-identification)."""
    row = state.services.image_store.get(image_id)
    shown = _image_json(row, state.settings.images_dir)
    if as_json:
        _print_json(shown)
        return
    for key in (
        "id",
        "case_id",
        "case_external_id",
        "format",
        "modality",
        "source_shape",
        "sha256",
        "stored_file",
        "deidentified",
        "deid_method",
        "created_at",
    ):
        out.print(f"[bold]{key}[/bold]: {shown[key]}")
    if isinstance(shown["header"], list):
        out.print("[bold]header[/bold]:")
        for element in shown["header"]:
            value = element.get("value", f"<sequence of {len(element.get('items', []))} item(s)>")
            out.print(f"  {element['tag']} {element['keyword'] or '(unknown)'} {element['vr']}: {str(value)[:100]}")
    else:
        out.print(f"[bold]header[/bold]: {shown['header']}")


def _image_json(row: dict[str, Any], images_dir: Path) -> dict[str, Any]:
    return {
        "id": row["id"],
        "case_id": row["case_id"],
        "case_external_id": row["case_external_id"],
        "ordinal": row["ordinal"],
        "format": row["format"],
        "modality": row["modality"],
        "source_shape": row["source_shape"],
        "pixel_size": row["pixel_size"],
        "sha256": row["sha256"],
        "stored_file": str(images_dir / row["stored_path"]),
        "deidentified": row["deidentified"],
        "deid_method": row["deid_method"],
        "created_at": row["created_at"].isoformat() if row["created_at"] else None,
        "header": row["header"],
    }


@encoders_app.command("list")
def encoders_list(as_json: JsonFlag = False) -> None:
    """Every image encoder version with its status, aliases, parent and image-case gate metrics."""
    rows = state.services.encoders.list()
    if as_json:
        _print_json(rows)
        return
    if not rows:
        out.print(
            "no image encoder yet: images are not used until the update cycle trains one "
            f"(it needs {state.settings.imaging.min_new_image_cases} labelled image cases)"
        )
        return
    table = Table("version", "status", "kind", "aliases", "parent", "accuracy", "macro-F1", "AUC", "images", "created")
    for r in rows:
        m = r["metrics"] or {}
        table.add_row(
            r["version"],
            r["status"],
            r["kind"],
            ", ".join(r["aliases"]),
            r["parent"] or "-",
            *(f"{m[key]:.4f}" if isinstance(m.get(key), float) else "–" for key in ("accuracy", "macro_f1", "auc")),
            str(len(r["train_case_ids"])),
            (r["created_at"] or "")[:19],
        )
    out.print(table)


@encoders_app.command("rollback")
def encoders_rollback(
    reason: Annotated[str, typer.Option("--reason", help="Why, for the audit log.")],
    actor: Annotated[str | None, typer.Option(help="Who, for the audit log (default: your user name).")] = None,
) -> None:
    """champion <- previous encoder; the image index of that version answers from the next request."""
    old, new = state.services.encoder_store.rollback(audit=state.services.audit, actor=_author(actor), reason=reason)
    out.print(f"encoder champion: {old or 'none'} -> {new or 'none'}")


@app.command()
def describe(
    image: ImageOption,
    as_json: JsonFlag = False,
) -> None:
    """A draft findings text for an image, written by the language model conditioned on the image and on
    the similar prior cases it cites (demonstration software, not a report)."""
    from kbservice.imaging.describe import describe_images

    if not image:
        raise typer.BadParameter("give at least one --image", param_hint="--image")
    result = describe_images(state.services, request_images(image), actor=_author(None))
    if as_json:
        _print_json(result)
        return
    out.print("[yellow]draft for review, not a report[/yellow]")
    out.print(result["draft"] or result["note"])
    for source in result["sources"]:
        out.print(
            f"  [{source['id']}] {source['title']} (diagnosis: {'; '.join(source['diagnosis'])}) {source['score']:.3f}"
        )


@bench_app.command("images")
def bench_images(
    data: Annotated[Path, typer.Option("--data", help="pneumoniamnist.npz (train/val/test splits).")],
    as_json: JsonFlag = False,
) -> None:
    """The image encoder the update cycle trains, on PneumoniaMNIST as given: train split as image-only cases,
    validation split as the frozen evaluation set, test split untouched; accuracy and ROC AUC on test, training
    time, and image ingest throughput. Runs on a temporary data directory."""
    import tempfile

    from kbservice.cli_recommend import _temporary_services
    from kbservice.imaging.bench import pneumonia_benchmark

    with _temporary_services() as (services, _), tempfile.TemporaryDirectory(prefix="kbservice-images-") as work:
        result = pneumonia_benchmark(services, data, Path(work), progress=_progress())
    if as_json:
        _print_json(result)
        return
    _print_bench_table(result)


@eval_app.command("image-fusion")
def eval_image_fusion(
    data: Annotated[Path, typer.Option("--data", help="The covid_chestxray folder (metadata CSV + images256/).")],
    test_fraction: Annotated[float, typer.Option("--test-fraction", min=0.1, max=0.5)] = 0.3,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    features_out: Annotated[
        Path | None, typer.Option("--features-out", help="Also write every case's features (pickle), for analysis.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Text alone, image alone and text + image on COVID-19 chest X-rays with clinical notes (three classes,
    patient-level split): the update cycle trains the encoder and the adapter with its image projector on
    the training patients; each condition's fusion is fitted on the cycle's held-out cases; macro-F1 and
    accuracy on the test patients, and `recommend` latency with an image."""
    import tempfile

    from kbservice.cli_recommend import _temporary_services
    from kbservice.imaging.bench import fusion_benchmark

    with _temporary_services() as (services, _), tempfile.TemporaryDirectory(prefix="kbservice-fusion-") as work:
        result = fusion_benchmark(
            services,
            data,
            Path(work),
            test_fraction=test_fraction,
            seed=seed,
            progress=_progress(),
            features_out=features_out,
        )
    if as_json:
        _print_json(result)
        return
    table = Table("condition", "accuracy", "macro-F1", "ECE")
    for condition, metrics in result["conditions"].items():
        table.add_row(condition, f"{metrics['accuracy']:.4f}", f"{metrics['macro_f1']:.4f}", f"{metrics['ece']:.4f}")
    out.print(table)
    _print_bench_table({k: v for k, v in result.items() if k != "conditions"})


def _print_bench_table(result: dict[str, Any]) -> None:
    table = Table("measure", "value")
    for key, value in result.items():
        table.add_row(key, str(value))
    out.print(table)
