"""PACS commands: is the configured PACS reachable, and which studies does it hold for a patient."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from kbservice.cli.app import JsonFlag, out, pacs_app, print_json, state


@pacs_app.command("ping")
def pacs_ping(as_json: JsonFlag = False) -> None:
    """Whether the PACS in [pacs] url answers a DICOMweb study search (exit 1 when it does not)."""
    from kbservice.imaging.dicomweb import PacsClient

    result = PacsClient(state.settings.pacs).ping()
    if as_json:
        print_json(result)
        return
    out.print(f"{result['url']}: reachable (QIDO-RS answered)")


@pacs_app.command("find")
def pacs_find(
    patient_id: Annotated[str | None, typer.Option("--patient-id", help="The patient id the PACS files under.")] = None,
    accession: Annotated[str | None, typer.Option("--accession", help="An accession number.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """The studies of a patient or an accession number: study and series UIDs, modalities, instance counts
    and the study date shifted as de-identification will shift it. Never a name or other identifier, and
    the patient id you typed is not printed back. Ingest one with an images entry `dicomweb:STUDY_UID`."""
    from kbservice.imaging import deid
    from kbservice.imaging.dicomweb import PacsClient, study_summary

    if (patient_id is None) == (accession is None):
        raise typer.BadParameter("give exactly one of --patient-id and --accession")
    studies = PacsClient(state.settings.pacs).find_studies(patient_id=patient_id, accession=accession)
    secret = state.services.deid_key() if studies else b""

    def shift(date: str, patient: str) -> str:
        return deid.shifted_date(date, secret=secret, patient_key=patient)

    found = [study_summary(study, shift_date=shift) for study in studies]
    if as_json:
        print_json(found)
        return
    if not found:
        out.print("the PACS holds no study for that query")
        return
    table = Table("study (ingest as dicomweb:UID)", "date (shifted)", "modalities", "instances", "series")
    for study in found:
        series = "\n".join(f"{s['series_uid']} {s['modality'] or '?'} ({s['instances']})" for s in study["series"])
        table.add_row(
            study["study_uid"],
            study["study_date_shifted"] or "-",
            ", ".join(study["modalities"]),
            str(study["instances"]),
            series,
        )
    out.print(table)
