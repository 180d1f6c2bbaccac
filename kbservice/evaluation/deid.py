"""`eval deid`: real MTSamples notes seeded with synthetic identifiers, scrubbed by ingest's de-identifier.

Recall: the share of seeded identifier values that no longer appear in the scrubbed note. Clinical
preservation: the share of clinical terms present in the original note (WHO essential-medicine names,
doses, anatomy words) that are still present after scrubbing.
"""

from __future__ import annotations

import csv
import random
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

from kbservice.errors import KBError
from kbservice.ingest.deid import scrub

FIRST = [
    "James",
    "Mary",
    "Robert",
    "Patricia",
    "John",
    "Jennifer",
    "Michael",
    "Linda",
    "David",
    "Elizabeth",
    "William",
    "Susan",
    "Richard",
    "Jessica",
    "Joseph",
    "Sarah",
    "Thomas",
    "Karen",
    "Charles",
    "Lisa",
    "Christopher",
    "Nancy",
    "Daniel",
    "Betty",
    "Matthew",
    "Margaret",
    "Anthony",
    "Sandra",
    "Mark",
    "Ashley",
    "Donald",
    "Kimberly",
    "Steven",
    "Emily",
    "Paul",
    "Donna",
    "Andrew",
    "Michelle",
    "Joshua",
    "Carol",
    "Kenneth",
    "Amanda",
    "Kevin",
    "Dorothy",
    "Brian",
    "Melissa",
    "Aisha",
    "Wei",
    "Olusegun",
    "Priya",
    "Mateo",
    "Sofia",
    "Hiroshi",
    "Fatima",
    "Dmitri",
    "Ingrid",
]
LAST = [
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Torres",
    "Nguyen",
    "Hill",
    "Flores",
    "Okafor",
    "Chen",
    "Patel",
    "Kowalski",
    "Novak",
    "Haddad",
    "Lindqvist",
    "Moreau",
    "Rossi",
    "Tanaka",
]
STREETS = [
    "Oak",
    "Maple",
    "Cedar",
    "Elm",
    "Pine",
    "Washington",
    "Lincoln",
    "Park",
    "Lake",
    "Hill",
    "River",
    "Sunset",
    "Highland",
    "Church",
    "Mill",
]
SUFFIXES = ["Street", "Avenue", "Road", "Lane", "Drive", "Boulevard", "Court"]
CITIES = [
    ("Boston", "MA"),
    ("Denver", "CO"),
    ("Austin", "TX"),
    ("Seattle", "WA"),
    ("Columbus", "OH"),
    ("Portland", "OR"),
    ("Nashville", "TN"),
    ("Phoenix", "AZ"),
    ("Madison", "WI"),
    ("Raleigh", "NC"),
]
ANATOMY = [
    "heart",
    "lung",
    "lungs",
    "liver",
    "kidney",
    "kidneys",
    "abdomen",
    "chest",
    "knee",
    "shoulder",
    "spine",
    "brain",
    "colon",
    "stomach",
    "bladder",
    "skin",
    "breast",
    "thyroid",
    "hip",
    "ankle",
    "wrist",
    "pelvis",
    "artery",
    "vein",
]
DOSE = re.compile(r"\b\d+(?:\.\d+)?\s?(?:mg|mcg|g|mL|ml|units?)\b")


def _synthetic(rng: random.Random) -> dict[str, str]:
    city, state = rng.choice(CITIES)
    return {
        "name": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
        "doctor": rng.choice(LAST),
        "date": f"{rng.randint(1, 12):02d}/{rng.randint(1, 28):02d}/{rng.randint(1950, 2024)}",
        "date_words": f"{rng.choice(['January', 'March', 'June', 'August', 'October', 'December'])} "
        f"{rng.randint(1, 28)}, {rng.randint(1990, 2024)}",
        "phone": f"({rng.randint(201, 989)}) {rng.randint(200, 999)}-{rng.randint(0, 9999):04d}",
        "fax": f"{rng.randint(201, 989)}-{rng.randint(200, 999)}-{rng.randint(0, 9999):04d}",
        "email": f"{rng.choice(FIRST).lower()}.{rng.choice(LAST).lower()}{rng.randint(1, 99)}@example.org",
        "street": f"{rng.randint(10, 9999)} {rng.choice(STREETS)} {rng.choice(SUFFIXES)}",
        "city": city,
        "zip": f"{rng.randint(10000, 99999)}",
        "state": state,
        "mrn": f"{rng.randint(1000000, 9999999)}",
        "account": f"AC{rng.randint(100000, 999999)}",
        "age": str(rng.randint(90, 104)),
        "url": f"https://portal.example-health.org/patients/{rng.randint(1000, 9999)}",
        "ip": f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
    }


# Each template seeds identifiers; the keys name which values must disappear.
TEMPLATES: list[tuple[str, tuple[str, ...]]] = [
    ("Patient name: {name}.", ("name",)),
    ("Date of birth: {date}.", ("date",)),
    ("He was seen in clinic on {date_words} by Dr. {doctor}.", ("date_words", "doctor")),
    ("Contact phone {phone}, fax {fax}.", ("phone", "fax")),
    ("E-mail: {email}.", ("email",)),
    ("Home address: {street}, {city}, {state} {zip}.", ("street", "city", "zip")),
    ("MRN: {mrn}. Account number {account}.", ("mrn", "account")),
    ("The patient is a {age}-year-old with the findings below.", ("age",)),
    ("Records were uploaded to {url} from {ip}.", ("url", "ip")),
    ("Her daughter, {name}, accompanied her.", ("name",)),
    # Shapes an adversarial pass found (issue 15): an address without commas, a city on its own.
    ("Lives at {street} {city} {state} {zip}.", ("street", "city", "zip")),
    ("She lives in {city} with her husband.", ("city",)),
]
# Clinical sentences seeded beside the identifiers: the drug (capitalised, as transcribed) must survive.
CLINICAL_TEMPLATES = ["Treatment: {drug}; review in two weeks.", "Started {drug} yesterday."]


def _clinical_terms(text: str, drugs: list[str]) -> list[str]:
    lower = text.lower()
    terms = [d for d in drugs if re.search(rf"\b{re.escape(d)}\b", lower)]
    terms += [a for a in ANATOMY if re.search(rf"\b{a}\b", lower)]
    terms += DOSE.findall(text)
    return terms


def evaluate_deid(*, notes_csv: Path, drugs_csv: Path, notes: int, seed: int = 7) -> dict[str, Any]:
    """Seeds `notes` random MTSamples notes and measures recall and clinical preservation of `scrub`."""
    if not notes_csv.exists():
        raise KBError(f"{notes_csv} not found (../shared/data/mtsamples/mtsamples.csv)")
    with notes_csv.open(encoding="utf-8") as handle:
        rows = [row["transcription"] for row in csv.DictReader(handle) if len(row["transcription"] or "") > 400]
    with drugs_csv.open(encoding="utf-8") as handle:
        drugs = sorted(
            {
                row["active_component"].strip().lower()
                for row in csv.DictReader(handle)
                if len(row["active_component"].strip()) > 4 and " " not in row["active_component"].strip()
            }
        )
    rng = random.Random(seed)
    seeded = caught = 0
    by_type: Counter = Counter()
    missed_by_type: Counter = Counter()
    clinical_total = clinical_kept = 0
    lost_terms: Counter = Counter()
    started = time.perf_counter()
    for note in rng.sample(rows, notes):
        values = _synthetic(rng)
        sentences = re.split(r"(?<=[.!?])\s+", note.strip())
        inserted: list[tuple[str, str]] = []
        for template, keys in rng.sample(TEMPLATES, 5):
            position = rng.randint(0, len(sentences))
            sentences.insert(position, template.format(**values))
            # An age is checked as "<age>-year-old": the bare number often occurs in the note (e.g. a pulse of 99).
            inserted += [(key, f"{values[key]}-year-old" if key == "age" else values[key]) for key in keys]
        drug = rng.choice(drugs).capitalize()
        sentences.insert(rng.randint(0, len(sentences)), rng.choice(CLINICAL_TEMPLATES).format(drug=drug))
        seeded_note = " ".join(sentences)
        result = scrub(seeded_note).text
        for key, value in inserted:
            seeded += 1
            by_type[key] += 1
            if value in result:
                missed_by_type[key] += 1
            else:
                caught += 1
        original_terms = Counter(_clinical_terms(seeded_note, drugs))
        scrubbed_terms = Counter(_clinical_terms(result, drugs))
        for term, count in original_terms.items():
            clinical_total += count
            kept = min(count, scrubbed_terms.get(term, 0))
            clinical_kept += kept
            if kept < count:
                lost_terms[term] += count - kept
    return {
        "notes": notes,
        "seeded_identifiers": seeded,
        "recall": round(caught / seeded, 4),
        "recall_by_type": {k: round(1 - missed_by_type[k] / n, 4) for k, n in sorted(by_type.items())},
        "clinical_terms": clinical_total,
        "clinical_preserved": round(clinical_kept / clinical_total, 4) if clinical_total else 1.0,
        "clinical_terms_lost": dict(lost_terms.most_common(15)),
        "seconds_per_note": round((time.perf_counter() - started) / notes, 3),
    }
