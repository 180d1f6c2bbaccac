"""DICOM de-identification: PS3.15 Basic Application Level Confidentiality Profile, with modified dates.

The attribute list is the standard's Table E.1-1 (NEMA 2026c edition, as packaged by dicom-anonymizer);
the actions are applied here, recursively through sequences:

- X (remove) and the compound X/Z, X/D, X/Z/D: removed, the strictest choice the profile allows;
- Z (empty) and D (dummy): emptied or given a dummy of the right type; a patient's name and id become a
  stable pseudonym, so one patient's files still group together;
- U and X/Z/U*: every UID replaced by a keyed hash ("2.25.<integer>"), so references between files of
  one study stay consistent while the originals cannot be recovered without the installation's secret;
- dates (DA, DT) that remain are shifted back by a per-patient number of days (Retain Longitudinal
  Temporal Information with Modified Dates Option): intervals within one patient are kept;
- every private tag is removed, and any person name the table might miss is replaced;
- the result records Patient Identity Removed = YES and the method (text and coded, CID 7050).

Pixels are not inspected: text burned into the image itself is out of scope (see the README).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

METHOD = "DICOM PS3.15 Basic Profile, Modified Dates Option"  # LO: at most 64 characters; the codes say more
# CID 7050 codes for the profile and the option.
METHOD_CODES = (
    ("113100", "Basic Application Confidentiality Profile"),
    ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
)
MAX_SHIFT_DAYS = 3650
PATIENT_NAME, PATIENT_ID = 0x00100010, 0x00100020
_NUMERIC_VRS = {"US", "SS", "UL", "SL", "FL", "FD", "IS", "DS", "UV", "SV", "AT"}
_BINARY_VRS = {"OB", "OW", "OF", "OD", "OL", "OV", "UN"}


def _load_table() -> tuple[dict[int, str], list[tuple[int, int, str]]]:
    """(exact tag -> action, [(tag value, tag mask, action)] for repeating groups such as overlays)."""
    from dicomanonymizer.dicom_anonymization_databases import dicomfields_2026c as table

    strongest = {
        "D_TAGS": "D",
        "Z_TAGS": "Z",
        "X_TAGS": "X",
        "U_TAGS": "U",
        "Z_D_TAGS": "D",
        "X_Z_TAGS": "X",
        "X_D_TAGS": "X",
        "X_Z_D_TAGS": "X",
        "X_Z_U_STAR_TAGS": "U",
    }
    exact: dict[int, str] = {}
    masked: list[tuple[int, int, str]] = []
    for name, code in strongest.items():
        for entry in getattr(table, name):
            if len(entry) == 2:
                exact[(entry[0] << 16) | entry[1]] = code
            else:
                group, element, group_mask, element_mask = entry
                mask = (group_mask << 16) | element_mask
                masked.append(((group << 16) | element, mask, code))
    return exact, masked


_EXACT, _MASKED = _load_table()


def profile_action(tag: int) -> str | None:
    """The profile's action for an attribute tag, or None when the profile keeps it."""
    if tag in _EXACT:
        return _EXACT[tag]
    for value, mask, code in _MASKED:
        if tag & mask == value & mask:
            return code
    return None


def listed_tags() -> list[int]:
    """Every exact attribute tag the profile lists (repeating-group entries at their base group)."""
    return sorted(set(_EXACT) | {value for value, _, _ in _MASKED})


@dataclass(frozen=True)
class Keys:
    """What makes replacements consistent: the installation secret and, per patient, a pseudonym and shift."""

    secret: bytes
    pseudonym: str
    shift_days: int

    @classmethod
    def for_patient(cls, secret: bytes, patient_key: str) -> Keys:
        digest = hmac.new(secret, b"patient:" + patient_key.encode(), hashlib.sha256).digest()
        return cls(
            secret=secret,
            pseudonym="ANON-" + digest[:6].hex().upper(),
            shift_days=1 + int.from_bytes(digest[6:10], "big") % MAX_SHIFT_DAYS,
        )

    def uid(self, original: str) -> str:
        digest = hmac.new(self.secret, b"uid:" + original.encode(), hashlib.sha256).digest()
        return "2.25." + str(int.from_bytes(digest[:16], "big"))


def deidentify_dataset(dataset: Any, *, secret: bytes) -> Keys:
    """De-identifies the pydicom `dataset` in place and returns the keys used (for the audit: the pseudonym
    and shift only; never the original identity)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    patient_key = str(dataset.get("PatientID", "") or dataset.get("PatientName", "") or "unknown")
    keys = Keys.for_patient(secret, patient_key)
    dataset.remove_private_tags()
    _apply(dataset, keys)
    dataset.PatientIdentityRemoved = "YES"
    dataset.DeidentificationMethod = METHOD
    codes = Sequence()
    for value, meaning in METHOD_CODES:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
        codes.append(item)
    dataset.DeidentificationMethodCodeSequence = codes
    dataset.LongitudinalTemporalInformationModified = "MODIFIED"
    meta = getattr(dataset, "file_meta", None)
    if meta is not None and "SOPInstanceUID" in dataset:
        meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    return keys


def _apply(dataset: Any, keys: Keys) -> None:
    for element in list(dataset):
        tag = int(element.tag)
        action = profile_action(tag)
        if action == "X":
            del dataset[element.tag]
            continue
        if element.VR == "SQ":
            for item in element.value or []:
                _apply(item, keys)
            if action in ("Z", "D"):
                element.value = []
            continue
        if action == "U" or (element.VR == "UI" and action is not None):
            _replace_uids(element, keys)
        elif action in ("Z", "D"):
            _blank(element, tag, keys, dummy=action == "D")
        elif element.VR == "PN":  # a person name the table does not list (e.g. a new attribute)
            element.value = "ANONYMIZED"
        if element.VR in ("DA", "DT") and element.value:
            element.value = _shift(element.value, element.VR, keys.shift_days)


def _replace_uids(element: Any, keys: Keys) -> None:
    from pydicom.multival import MultiValue

    if isinstance(element.value, MultiValue | list):
        element.value = [keys.uid(str(v)) for v in element.value]
    elif element.value:
        element.value = keys.uid(str(element.value))


def _blank(element: Any, tag: int, keys: Keys, *, dummy: bool) -> None:
    if element.VR in ("DA", "DT"):
        return  # kept and shifted (the modified-dates option)
    if tag in (PATIENT_NAME, PATIENT_ID):
        element.value = keys.pseudonym
    elif element.VR == "TM":
        element.value = "000000" if dummy else ""
    elif element.VR == "UI":
        _replace_uids(element, keys)
    elif element.VR in _NUMERIC_VRS:
        element.value = 0 if dummy and element.VR != "AT" else None
    elif element.VR in _BINARY_VRS:
        element.value = b""
    elif element.VR == "AS":  # an age string has a fixed form: nnnD/W/M/Y
        element.value = "000Y" if dummy else ""
    else:
        element.value = "ANONYMIZED" if dummy else ""


def _shift(value: Any, vr: str, days: int) -> Any:
    from pydicom.multival import MultiValue

    if isinstance(value, MultiValue | list):
        return [_shift(v, vr, days) for v in value]
    text = str(value)
    try:
        if vr == "DA":
            return (datetime.strptime(text[:8], "%Y%m%d").date() - timedelta(days=days)).strftime("%Y%m%d")
        day = datetime.strptime(text[:8], "%Y%m%d").date() - timedelta(days=days)
        return day.strftime("%Y%m%d") + text[8:]
    except ValueError:
        return ""  # not a parseable date: an unshiftable date is removed rather than kept


def header_elements(dataset: Any) -> list[dict[str, Any]]:
    """Every header element as stored (pixel data and other bulk values summarised by size)."""
    out = []
    for element in dataset:
        tag = f"({element.tag.group:04X},{element.tag.element:04X})"
        entry: dict[str, Any] = {"tag": tag, "keyword": element.keyword or "", "vr": element.VR}
        if element.VR == "SQ":
            entry["items"] = [header_elements(item) for item in element.value or []]
        elif element.VR in _BINARY_VRS or element.keyword == "PixelData":
            entry["value"] = f"<{len(element.value or b'')} bytes>"
        else:
            from pydicom.multival import MultiValue

            value = element.value
            if isinstance(value, MultiValue | list | tuple):
                entry["value"] = [str(v) for v in value]
            else:
                entry["value"] = "" if value is None else str(value)
        out.append(entry)
    return out


def shifted_date(value: str, *, secret: bytes, patient_key: str) -> str:
    """A DA value as de-identification stores it for the patient `patient_key` (their PatientID, else
    PatientName): shifted back by the same per-patient number of days; "" when it is not a date."""
    return _shift(value, "DA", Keys.for_patient(secret, patient_key).shift_days)
