"""Recommendation commands: recommend (text and images), calibrate, and the base language model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from kbservice.types import RequestImage

from kbservice.cli.app import (
    JsonFlag,
    ModeOption,
    app,
    author_or_user,
    check_mode,
    check_version,
    models_app,
    out,
    print_json,
    print_recommendation,
    progress,
    state,
)


@app.command()
def recommend(
    findings: Annotated[
        str,
        typer.Option("--findings", help="The patient's findings, in plain text (optional with --image or --study)."),
    ] = "",
    image: Annotated[
        list[Path] | None,
        typer.Option("--image", help="An X-ray, CT or MRI image (DICOM, PNG, JPEG, NIfTI); repeat for several."),
    ] = None,
    study: Annotated[
        list[str] | None,
        typer.Option(
            "--study", help="A PACS study (STUDY_UID, or STUDY_UID/SERIES_UID) whose instances are the images."
        ),
    ] = None,
    history: Annotated[str | None, typer.Option("--history", help="Relevant history.")] = None,
    age: Annotated[int | None, typer.Option("--age", min=0, max=130, help="Age in years.")] = None,
    sex: Annotated[str | None, typer.Option("--sex", help="F or M.")] = None,
    as_of: Annotated[
        int | None,
        typer.Option("--as-of", callback=check_version, help="Answer from the knowledge valid at this version."),
    ] = None,
    adapter: Annotated[
        str | None, typer.Option("--adapter", help="Adapter version, or `none` for the base model (default: champion).")
    ] = None,
    mode: ModeOption = "rag",
    no_treatment: Annotated[bool, typer.Option("--no-treatment", help="Skip the treatment plan (faster).")] = False,
    actor: Annotated[str | None, typer.Option(help="Who asks, for the audit log (default: your user name).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """A differential diagnosis with calibrated probabilities and a cited treatment plan (demonstration
    software, not a medical device). Every answer is stored and audited; replay it with `audit replay`.
    Images add similar prior cases by image (sources of kind image_case) once an image encoder exists."""
    from kbservice.imaging.prepare import request_images
    from kbservice.recommend.answer import recommend as run_recommend
    from kbservice.recommend.request import RecommendationRequest

    if sex is not None and sex.upper() not in ("F", "M"):
        raise typer.BadParameter("sex must be F or M", param_hint="--sex")
    request = RecommendationRequest(
        findings=findings,
        history=history,
        age=age,
        sex=sex.upper() if sex else None,
        as_of=as_of,
        adapter=adapter,
        mode=check_mode(mode),  # type: ignore[arg-type]
        images=request_images(image or [], settings=state.settings.imaging) + _study_images(study or []),
    )
    response = run_recommend(state.services, request, actor=author_or_user(actor), with_treatment=not no_treatment)
    if as_json:
        print_json(response.to_json())
        return
    print_recommendation(response.to_json())


@app.command()
def calibrate(
    mode: ModeOption = "rag",
    sample: Annotated[
        int | None, typer.Option(help="Held-out cases to fit on (default: recommend.calibration_cases).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    as_json: JsonFlag = False,
) -> None:
    """Fit the probability calibration (fusion weights) on held-out labelled cases of the knowledge base,
    each answered with itself left out of retrieval; stored for this model, adapter and prompt version."""
    from kbservice.recommend.calibrate import calibrate as run_calibrate

    report = run_calibrate(state.services, mode=check_mode(mode), sample=sample, seed=seed, progress=progress())  # type: ignore[arg-type]
    if as_json:
        print_json(report)
        return
    metrics = report["metrics"]
    out.print(
        f"calibration {report['calibration_id']} ({report['mode']}) on {metrics['cases']} held-out cases: "
        f"accuracy {metrics['accuracy']:.3f}, ECE {metrics['ece']:.3f}, NLL {metrics['nll']:.3f}"
    )
    for name, weight in report["weights"].items():
        out.print(f"  {name:<20} {weight:8.3f}")
    selection = metrics.get("selection")
    if selection:
        nll = selection["out_of_fold_nll"]
        out.print(
            f"evidence groups: {', '.join(selection['groups']) or 'none'}"
            + (f", modality {selection['modality']}" if selection.get("modality") else "")
            + (f" (out-of-fold NLL {nll:.4f} per case)" if nll is not None else "")
            + f"; {selection['why']}"
        )


@models_app.command("show")
def models_show(as_json: JsonFlag = False) -> None:
    """The base language model: its directory and sha256 (the packaged GGUF is converted on first use)."""
    from kbservice.llm.model_files import resolve_base_model

    model = resolve_base_model(model_path=state.settings.llm.model_path, cache_dir=state.settings.models_dir)
    if as_json:
        print_json({"name": model.name, "path": str(model.path), "sha256": model.sha256})
    else:
        out.print(f"{model.name}\n  path   {model.path}\n  sha256 {model.sha256}")


def _study_images(studies: list[str]) -> tuple[RequestImage, ...]:
    """Every instance of each PACS study or series (STUDY_UID[/SERIES_UID]) as a request image."""
    from kbservice.imaging.dicomweb import REFERENCE_PREFIX, study_request_images

    found: tuple[RequestImage, ...] = ()
    for study in studies:
        reference = study if study.startswith(REFERENCE_PREFIX) else REFERENCE_PREFIX + study
        found += study_request_images(reference, settings=state.settings)
    return found
