"""The PS3.15 Basic Profile: a dataset carrying every attribute the profile lists keeps none of its values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from kbservice.imaging import deid
from tests.imaging.images import write_dicom

SECRET = b"s" * 32
MARK = "IDENT"  # every identifying text value carries it


def _value(vr: str, tag: int):  # type: ignore[no-untyped-def]
    """A value of the attribute's type that is recognisably identifying."""
    if vr == "SQ":
        item = Dataset()
        item.PatientName = f"{MARK}^Nested"
        item.ReferencedSOPInstanceUID = "1.2.3.4.5.6"
        return Sequence([item])
    if vr == "DA":
        return "20240115"
    if vr == "DT":
        return "20240115101010"
    if vr == "TM":
        return "101010"
    if vr == "UI":
        return f"1.2.3.{tag}"
    if vr in ("US", "SS", "UL", "SL", "UV", "SV"):
        return 7
    if vr in ("FL", "FD"):
        return 7.5
    if vr == "IS":
        return "7"
    if vr == "DS":
        return "7.5"
    if vr == "AT":
        return 0x00100010
    if vr in ("OB", "OW", "OF", "OD", "OL", "OV", "UN"):
        return MARK.encode() * 2
    if vr == "CS":
        return MARK
    if vr == "AS":
        return "042Y"
    return f"{MARK} {tag:08X}"[:16] if vr == "SH" else f"{MARK} {tag:08X}"


def _every_listed_attribute() -> tuple[Dataset, dict[int, object]]:
    ds = Dataset()
    originals: dict[int, object] = {}
    for tag in deid.listed_tags():
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            continue  # a repeating-group base the dictionary spells differently; covered by its mask below
        vr = vr.split(" or ")[0]
        value = _value(vr, tag)
        ds.add_new(tag, vr, value)
        originals[tag] = value
    return ds, originals


def test_no_listed_attribute_keeps_its_value() -> None:
    ds, originals = _every_listed_attribute()
    assert len(originals) > 500  # the standard's table, not a handful
    ds.add_new(0x00091010, "LO", f"{MARK} private")  # a private tag
    ds.add_new(0x00090010, "LO", "ACME private creator")
    deid.deidentify_dataset(ds, secret=SECRET)
    survivors = []
    for tag, original in originals.items():
        if tag not in ds:
            continue
        element = ds[tag]
        value = element.value
        if element.VR == "SQ":
            if any(MARK in str(item) for item in value):
                survivors.append(keyword_for_tag(tag))
        else:
            kept = value not in (None, "", b"", [], 0) and value == original
            if kept or (isinstance(value, str | bytes) and MARK in str(value)):
                survivors.append(keyword_for_tag(tag))
    assert survivors == []
    assert not any(element.tag.is_private for element in ds)
    assert ds.PatientIdentityRemoved == "YES"
    assert "Basic Profile" in ds.DeidentificationMethod
    assert {item.CodeValue for item in ds.DeidentificationMethodCodeSequence} == {"113100", "113107"}
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, False
    write_dataset(out, ds)  # the table lists command-set (group 0000) attributes too: no file meta here
    assert MARK.encode() not in out.getvalue()


def test_uids_and_dates_are_replaced_consistently_per_patient(tmp_path: Path) -> None:
    pixels = np.zeros((4, 4), dtype=np.uint16)
    first = pydicom.dcmread(write_dicom(tmp_path / "a.dcm", pixels, study_date="20240115"))
    second = pydicom.dcmread(write_dicom(tmp_path / "b.dcm", pixels, study_date="20240125"))
    other = pydicom.dcmread(write_dicom(tmp_path / "c.dcm", pixels, patient_id="MRN-999", study_date="20240115"))
    keys = [deid.deidentify_dataset(ds, secret=SECRET) for ds in (first, second, other)]
    assert first.StudyInstanceUID == second.StudyInstanceUID != "1.2.826.0.1.3680043.8.498.1"
    assert first.StudyInstanceUID.startswith("2.25.")
    assert first.SOPInstanceUID != second.SOPInstanceUID
    assert first.file_meta.MediaStorageSOPInstanceUID == first.SOPInstanceUID
    assert first.PatientID == second.PatientID != other.PatientID
    assert "MRN" not in first.PatientID and "Doe" not in str(first.PatientName)
    # Ten days apart before, ten days apart after; another patient is shifted by another amount.
    from datetime import date

    def day(text: str) -> date:
        return date(int(text[:4]), int(text[4:6]), int(text[6:8]))

    assert (day(second.StudyDate) - day(first.StudyDate)).days == 10
    assert first.StudyDate != "20240115" and keys[0].shift_days == keys[1].shift_days != keys[2].shift_days
    assert "InstitutionName" not in first and not first.get("ReferringPhysicianName")


@pytest.mark.parametrize("secret", [b"a" * 32, b"b" * 32])
def test_the_replacements_depend_on_the_installation_secret(tmp_path: Path, secret: bytes) -> None:
    ds = pydicom.dcmread(write_dicom(tmp_path / "a.dcm", np.zeros((2, 2), dtype=np.uint16)))
    deid.deidentify_dataset(ds, secret=secret)
    other = pydicom.dcmread(write_dicom(tmp_path / "b.dcm", np.zeros((2, 2), dtype=np.uint16)))
    deid.deidentify_dataset(other, secret=b"c" * 32)
    assert ds.StudyInstanceUID != other.StudyInstanceUID
