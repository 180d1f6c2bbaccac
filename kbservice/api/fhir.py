"""A recommendation as a FHIR R5 GuidanceResponse (plain JSON; tests validate it with fhir.resources).

The GuidanceResponse carries the differential as its reasons (each with its probability), points its
result at a contained CarePlan (the treatment plan, one note per cited sentence) and contains a Device
(the knowledge version, model and adapter that produced it) and a Provenance naming that Device as the
agent and the retrieved passages as its sources. A recommendation made with images also contains one
DocumentReference per image, de-identified (identified by its pixel checksum, never by a file name), and
one per similar stored image it drew on (pointing at that image's de-identified preview); the Provenance
lists them among its sources.
"""

from __future__ import annotations

from typing import Any

FHIR_MEDIA_TYPE = "application/fhir+json"
SYSTEM = "https://kbservice.dev/fhir"
PROBABILITY_EXTENSION = f"{SYSTEM}/StructureDefinition/diagnosis-probability"
CITATION_EXTENSION = f"{SYSTEM}/StructureDefinition/citation"


def _text_concept(text: str) -> dict[str, Any]:
    return {"text": text}


def _device(provenance: dict[str, Any]) -> dict[str, Any]:
    versions = [
        ("knowledge-version", str(provenance["knowledge_version"])),
        ("index-build", provenance["index_build"]),
        ("base-model-sha256", provenance["base_model_sha256"]),
        ("adapter-version", provenance["adapter_version"] or "none"),
        ("prompt-version", provenance["prompt_version"]),
        ("calibration-id", str(provenance["calibration_id"] or "default")),
    ]
    return {
        "resourceType": "Device",
        "id": "kbservice",
        "name": [{"value": f"kbservice ({provenance['base_model']})", "type": "user-friendly-name"}],
        "version": [{"type": _text_concept(kind), "value": value} for kind, value in versions],
    }


def _care_plan(response: dict[str, Any]) -> dict[str, Any]:
    treatment = response["treatment"]
    top = response["differential"][0]["diagnosis"] if response["differential"] else None
    plan: dict[str, Any] = {
        "resourceType": "CarePlan",
        "id": "treatment",
        "status": "draft",  # a suggestion for a clinician to review, never an active order
        "intent": "proposal",
        "subject": {"display": "the patient of the request (not identified)"},
        "title": f"Suggested treatment for {top}" if top else "Suggested treatment",
        "description": treatment["plan"] or treatment.get("note") or "no treatment plan",
        "note": [
            {
                "text": sentence["text"],
                "extension": [{"url": CITATION_EXTENSION, "valueString": c} for c in sentence["citations"]],
            }
            for sentence in treatment["sentences"]
        ],
    }
    if top:
        plan["addresses"] = [{"concept": _text_concept(top)}]
    if not plan["note"]:
        del plan["note"]
    return plan


def _image_documents(response: dict[str, Any]) -> list[dict[str, Any]]:
    """A DocumentReference per request image and per similar stored image among the sources."""
    images = response.get("images") or {}
    documents = [
        {
            "resourceType": "DocumentReference",
            "id": f"request-image-{number}",
            "status": "current",
            "identifier": [{"system": f"{SYSTEM}/image-sha256", "value": digest}],
            "description": f"Request image {number}, as normalised and de-identified for the model",
            "content": [{"attachment": {"contentType": "image/png", "title": f"request image {number}"}}],
        }
        for number, digest in enumerate(images.get("sha256") or [], start=1)
    ]
    documents += [
        {
            "resourceType": "DocumentReference",
            "id": f"similar-image-{source['image_id']}",
            "status": "current",
            "identifier": [{"system": f"{SYSTEM}/image", "value": str(source["image_id"])}],
            "description": f"[{source['id']}] stored image of prior case {source.get('case_id')} (similar image)",
            "content": [
                {
                    "attachment": {
                        "contentType": "image/png",
                        "url": f"v1/images/{source['image_id']}/preview",
                        "title": f"image {source['image_id']} (de-identified preview)",
                    }
                }
            ],
        }
        for source in response["sources"]
        if source["kind"] == "image_case" and source.get("image_id") is not None
    ]
    return list({document["id"]: document for document in documents}.values())


def _provenance(response: dict[str, Any], images: list[dict[str, Any]]) -> dict[str, Any]:
    provenance = response["provenance"]
    entities = [
        {
            "role": "source",
            "what": {
                "identifier": {"system": f"{SYSTEM}/chunk", "value": str(source["chunk_id"])},
                "display": f"[{source['id']}] {source['kind']} {source['title'][:80]} "
                f"(sha256 {source['content_hash'][:12]})",
            },
        }
        for source in response["sources"]
    ] + [{"role": "source", "what": {"reference": f"#{document['id']}"}} for document in images]
    resource: dict[str, Any] = {
        "resourceType": "Provenance",
        "id": "provenance",
        "target": [{"reference": "#"}, {"reference": "#treatment"}],
        "recorded": provenance["created_at"],
        "agent": [{"type": _text_concept("assembler"), "who": {"reference": "#kbservice"}}],
    }
    if entities:
        resource["entity"] = entities
    return resource


def guidance_response(response: dict[str, Any]) -> dict[str, Any]:
    """The FHIR R5 GuidanceResponse for a recommendation response (as `recommend --json` prints it)."""
    provenance = response["provenance"]
    images = _image_documents(response)
    reasons = [
        {
            "concept": _text_concept(entry["diagnosis"]),
            "extension": [{"url": PROBABILITY_EXTENSION, "valueDecimal": entry["probability"]}]
            + [{"url": CITATION_EXTENSION, "valueString": c} for c in entry["citations"]],
        }
        for entry in response["differential"]
    ]
    notes = [{"text": "Demonstration output, not clinical advice."}]
    if response["abstained"]:
        notes.append({"text": f"Abstained: {response['reason']}"})
    return {
        "resourceType": "GuidanceResponse",
        "id": response["id"],
        "identifier": [{"system": f"{SYSTEM}/recommendation", "value": response["id"]}],
        "moduleUri": f"{SYSTEM}/recommend/{provenance['prompt_version']}",
        "status": "success",
        "occurrenceDateTime": provenance["created_at"],
        "performer": {"reference": "#kbservice"},
        "reason": reasons,
        "result": [{"reference": "#treatment"}],
        "note": notes,
        "contained": [_device(provenance), _care_plan(response), _provenance(response, images), *images],
    }
