"""Image commands: similar prior images, stored image metadata, image encoder versions, and `describe`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from kbservice.cli.app import (
    ImageOption,
    JsonFlag,
    app,
    author_or_user,
    check_version,
    encoders_app,
    images_app,
    out,
    print_json,
    state,
)


@images_app.command("similar")
def images_similar(
    image: ImageOption,
    k: Annotated[int, typer.Option("--k", min=1, max=100, help="How many similar prior cases.")] = 5,
    as_of: Annotated[
        int | None,
        typer.Option("--as-of", callback=check_version, help="Cases valid at this version (default: newest)."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Prior cases whose images are most similar (champion encoder's image index), one row per case."""
    from kbservice.imaging.prepare import request_images
    from kbservice.recommend.similar_cases import similar_cases

    if not image:
        raise typer.BadParameter("give at least one --image", param_hint="--image")
    found = similar_cases(state.services, request_images(image, settings=state.settings.imaging), k=k, as_of=as_of)
    if as_json:
        print_json(found)
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
        print_json(shown)
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
    from kbservice.imaging.metadata import image_metadata

    return image_metadata(row) | {"stored_file": str(images_dir / row["stored_path"])}


@encoders_app.command("list")
def encoders_list(as_json: JsonFlag = False) -> None:
    """Every image encoder version with its status, aliases, parent and image-case gate metrics."""
    rows = state.services.encoders.list()
    if as_json:
        print_json(rows)
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
    old, new = state.services.encoder_store.rollback(
        audit=state.services.audit, actor=author_or_user(actor), reason=reason
    )
    out.print(f"encoder champion: {old or 'none'} -> {new or 'none'}")


@app.command()
def describe(
    image: ImageOption,
    as_json: JsonFlag = False,
) -> None:
    """A draft findings text for an image, written by the language model conditioned on the image and on
    the similar prior cases it cites (demonstration software, not a report)."""
    from kbservice.imaging.prepare import request_images
    from kbservice.recommend.describe import describe_images

    if not image:
        raise typer.BadParameter("give at least one --image", param_hint="--image")
    result = describe_images(
        state.services, request_images(image, settings=state.settings.imaging), actor=author_or_user(None)
    )
    if as_json:
        print_json(result)
        return
    out.print("[yellow]draft for review, not a report[/yellow]")
    out.print(result["draft"] or result["note"])
    for source in result["sources"]:
        out.print(
            f"  [{source['id']}] {source['title']} (diagnosis: {'; '.join(source['diagnosis'])}) {source['score']:.3f}"
        )
