"""Protected health information (PHI): removed before anything is stored, logged or embedded.

Two tools, both applied at the boundary (ingest and the prediction API), so that nothing downstream ever
sees the original:

- `redact_text`: rule-based redaction of free text (names after a title or a field label, dates, record and
  account numbers, phone numbers, email addresses, US social security numbers). It is a pattern matcher,
  not a named-entity model: a bare name with no title or label in front of it ("seen with John") is not
  caught. Reports in the bundled pack were de-identified at the source ("XXXX") and pass through unchanged.
- `deidentify_dicom`: the DICOM PS3.15 basic application-level confidentiality profile, in the form most
  sites use it: identifying attributes are emptied, patient ID and UIDs are replaced by keyed pseudonyms
  (the same patient keeps the same pseudonym, so that records still group), private tags and all dates and
  times are removed; patient sex, age, size and weight are retained (the "retain patient characteristics"
  option), because models use them. The dataset is marked `PatientIdentityRemoved = YES`.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import re
from collections.abc import Callable
from typing import Any

from mmops.errors import BadInputError

# --- free text ------------------------------------------------------------------------------------------

_MONTH = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
          r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)")
_NAME = r"[A-Z][a-zA-Z'\-]+(?:\s+[A-Z]\.)?(?:\s+[A-Z][a-zA-Z'\-]+){0,2}"
_RULES: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("email", re.compile(r"[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+"), "[EMAIL]"),
    ("ssn", re.compile(r"\b\d{3}-\d{2}-\d{4}\b"), "[ID]"),
    ("phone", re.compile(r"(?<!\w)(?:\+?\d{1,3}[\s.\-])?\(?\d{3}\)?[\s.\-]\d{3}[\s.\-]\d{4}\b"), "[PHONE]"),
    ("record_number", re.compile(
        r"(?i)\b(MRN|MR\s?#|medical record(?: number| no\.?)?|record(?: number| no\.?| #)|patient id|"
        r"account(?: number| no\.?)?|acct|accession(?: number| no\.?)?|encounter)\s*[:#]?\s*[A-Z0-9][A-Z0-9\-]{3,}"),
     r"\1 [ID]"),
    ("date", re.compile(
        rf"(?i)\b(?:\d{{4}}-\d{{1,2}}-\d{{1,2}}|\d{{1,2}}[/.\-]\d{{1,2}}[/.\-]\d{{2,4}}|"
        rf"{_MONTH}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}|\d{{1,2}}\s+{_MONTH}\.?,?\s+\d{{4}}|"
        rf"{_MONTH}\.?\s+\d{{4}})\b"), "[DATE]"),
    ("name_title", re.compile(rf"\b(Mr|Mrs|Ms|Miss|Dr|Prof)\.?\s+{_NAME}"), r"\1. [NAME]"),
    ("name_field", re.compile(
        rf"(?i:\b(patient(?: name)?|name|physician|attending|referring(?: physician)?|signed by|dictated by|"
        rf"transcribed by|reported by|electronically signed by))\s*:\s*{_NAME}"), r"\1: [NAME]"),
)


_DIGIT = re.compile(r"\d")
# What each rule cannot match without: a rule whose text lacks it is not run (most reports have no "@", and
# many no digit; each rule's scan costs 5-30 us on a report of ~300 characters)
_NEEDS: dict[str, Callable[[str], bool]] = {
    "email": lambda text: "@" in text,
    "ssn": lambda text: "-" in text and _DIGIT.search(text) is not None,
    "phone": lambda text: _DIGIT.search(text) is not None,
    "date": lambda text: _DIGIT.search(text) is not None,
}


def redact_text(text: str) -> tuple[str, dict[str, int]]:
    """-> (redacted text, count of replacements per kind)."""
    counts: dict[str, int] = {}
    for kind, pattern, replacement in _RULES:
        needs = _NEEDS.get(kind)
        if needs is not None and not needs(text):
            continue
        text, n = pattern.subn(replacement, text)
        if n:
            counts[kind] = n
    return text, counts


# --- DICOM ----------------------------------------------------------------------------------------------

# Emptied (type 2 attributes keep an empty value; optional ones are deleted).
_REMOVE = (
    "PatientName", "PatientBirthDate", "PatientBirthTime", "PatientAddress", "PatientTelephoneNumbers",
    "OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames", "PatientMotherBirthName",
    "PatientBirthName", "MilitaryRank", "EthnicGroup", "Occupation", "AdditionalPatientHistory",
    "PatientComments", "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
    "ReferringPhysicianName", "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers",
    "PerformingPhysicianName", "OperatorsName", "PhysiciansOfRecord", "NameOfPhysiciansReadingStudy",
    "RequestingPhysician", "AccessionNumber", "StudyID", "StationName", "DeviceSerialNumber",
    "IssuerOfPatientID", "MedicalRecordLocator", "RequestAttributesSequence", "ImageComments",
    "StudyDescription", "SeriesDescription", "ProtocolName", "FrameComments",
)
_PSEUDONYMISED_UIDS = (
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID",
    "ReferencedSOPInstanceUID", "MediaStorageSOPInstanceUID",
)
_TYPE2 = {"PatientName", "PatientBirthDate", "ReferringPhysicianName", "AccessionNumber", "StudyID"}


def pseudonym(key: bytes, value: str, length: int = 16) -> str:
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:length]


def _pseudo_uid(key: bytes, uid: str) -> str:
    # 2.25.<decimal integer> is the UUID-derived root any site may use (PS3.5 B.2)
    return "2.25." + str(int(hmac.new(key, uid.encode(), hashlib.sha256).hexdigest()[:30], 16))


def deidentify_dicom(dataset: Any, key: bytes) -> dict[str, int]:
    """De-identify a pydicom Dataset in place; -> counts of what was done."""
    done = {"removed": 0, "dates": 0, "uids": 0, "private": 0}

    def scrub(ds: Any, elem: Any) -> None:
        name = elem.keyword
        if elem.VR in ("DA", "DT", "TM") and elem.value not in (None, ""):
            elem.value = ""
            done["dates"] += 1
        elif name in _PSEUDONYMISED_UIDS and elem.value:
            elem.value = _pseudo_uid(key, str(elem.value))
            done["uids"] += 1
        elif name in _REMOVE and elem.value not in (None, ""):
            if name in _TYPE2:
                elem.value = ""
            else:
                del ds[elem.tag]
            done["removed"] += 1
        elif elem.VR == "PN" and elem.value not in (None, ""):  # any other person name
            elem.value = ""
            done["removed"] += 1

    n_private = sum(1 for e in dataset.iterall() if e.tag.is_private)
    dataset.remove_private_tags()
    done["private"] = n_private
    dataset.walk(scrub)
    if "PatientID" in dataset and dataset.PatientID:
        dataset.PatientID = "anon-" + pseudonym(key, str(dataset.PatientID))
        done["uids"] += 1
    meta = getattr(dataset, "file_meta", None)
    if meta is not None and "MediaStorageSOPInstanceUID" in meta and "SOPInstanceUID" in dataset:
        meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.PatientIdentityRemoved = "YES"
    dataset.DeidentificationMethod = "mmops: basic profile, retain patient characteristics"
    return done


def read_dicom(data: bytes) -> Any:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(io.BytesIO(data), force=False)
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, OSError) as exc:
        raise BadInputError(f"not a readable DICOM file: {exc}") from None


def write_dicom(dataset: Any) -> bytes:
    buf = io.BytesIO()
    dataset.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def is_dicom(data: bytes) -> bool:
    return len(data) >= 132 and data[128:132] == b"DICM"
