"""De-identification: identifiers become typed placeholders; clinical content stays."""

from __future__ import annotations

from kbservice.ingest.deid import scrub

NOTE = (
    "Patient name: John Smith. MRN: 4829301. Seen on 03/14/2021 and again on March 3, 2022 by Dr. Alvarez. "
    "Lives at 12 Elm Street, Boston, MA 02118. Phone (617) 555-0142, fax 617-555-0199, "
    "email john.smith@example.org, portal https://portal.example.org/p/77 from 10.2.3.4. "
    "She is a 93-year-old woman. MEDICATIONS:, 1. Coumadin 5 mg daily. 2. Lasix 40 mg p.o. b.i.d. "
    "Chest X-ray shows right lower lobe consolidation; started amoxicillin 1 g three times daily for 5 days."
)


def test_identifiers_are_replaced_by_typed_placeholders() -> None:
    result = scrub(NOTE)
    text = result.text
    for identifier in (
        "John Smith",
        "4829301",
        "03/14/2021",
        "March 3, 2022",
        "Alvarez",
        "12 Elm Street",
        "02118",
        "(617) 555-0142",
        "617-555-0199",
        "john.smith@example.org",
        "https://portal.example.org/p/77",
        "10.2.3.4",
        "93-year-old",
    ):
        assert identifier not in text, identifier
    for placeholder in (
        "[NAME]",
        "[ID]",
        "[DATE]",
        "[ADDRESS]",
        "[ZIP]",
        "[PHONE]",
        "[EMAIL]",
        "[URL]",
        "[IP]",
        "[AGE>89]",
    ):
        assert placeholder in text, placeholder
    assert result.replaced["[PHONE]"] == 2 and result.replaced["[DATE]"] == 2


def test_clinical_content_survives() -> None:
    text = scrub(NOTE).text
    for clinical in (
        "Coumadin 5 mg daily",
        "Lasix 40 mg p.o. b.i.d.",
        "right lower lobe consolidation",
        "amoxicillin 1 g three times daily for 5 days",
        "Chest X-ray",
        "Dr. ",
    ):
        assert clinical in text, clinical


def test_a_name_before_a_number_or_bracket_is_still_a_name() -> None:
    text = scrub("Discussed with Maria Gonzalez 617-555-0100 and Peter Novak (brother) today.").text
    assert "Gonzalez" not in text and "Novak" not in text


def test_ages_up_to_89_and_durations_are_kept() -> None:
    text = scrub("A 67-year-old man with cough for two weeks, worse since last summer; aged 89.").text
    assert text == "A 67-year-old man with cough for two weeks, worse since last summer; aged 89."


def test_an_address_without_commas_loses_its_city_too() -> None:
    # Issue 15, defect 4: "17 Baker Road Boston MA 02115" was stored as "[ADDRESS] Boston MA [ZIP]".
    for text in ("17 Baker Road Boston MA 02115", "Lives at 4 Elm Street Salt Lake City UT 84101 with her son."):
        scrubbed = scrub(text).text
        assert "Boston" not in scrubbed and "Salt Lake" not in scrubbed, scrubbed
        assert "[ADDRESS]" in scrubbed and "[ZIP]" in scrubbed
    assert scrub("Lives in Boston.").text == "Lives in [LOCATION]."
    assert "Denver" not in scrub("Records sent to Denver, CO 80202 last week.").text


def test_a_drug_after_a_treatment_header_stays_a_drug() -> None:
    # Issue 15, defect 4: "Treatment: Amoxicillin; ..." became "[LOCATION]; ..." (a drug lost).
    for text in (
        "Treatment: Amoxicillin; paracetamol for fever.",
        "Diagnosis: otitis media. Treatment: Amoxicillin; analgesia.",
        "Treatment: Doxycycline; Azithromycin if allergic.",
        "Plan reviewed; started Ciprofloxacin and Omeprazole.",
        "Started Methadone yesterday.",
        "She was started on Hydralazine.",
    ):
        assert scrub(text).text == text
    assert "Smith" not in scrub("Treatment: amoxicillin; discussed with Dr. Smith.").text
