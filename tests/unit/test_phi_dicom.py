"""PHI never reaches data/, the catalog or the logs: DICOM is de-identified and medical text redacted at ingest."""

import io
import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from sqlalchemy import select

from mmops import pipeline
from mmops.catalog import SampleFile, session_scope
from mmops.domains import load_domain
from mmops.modalities import decode
from mmops.phi import redact_text


def _dcm(name: str) -> bytes:
    return Path(get_testdata_file(name, download=False)).read_bytes()


@pytest.mark.parametrize("text,gone,kept", [
    ("Patient: John Smith, MRN: 00123456, seen 03/12/2024.", ["John", "Smith", "00123456", "03/12/2024"], ["MRN"]),
    ("Dictated by Dr. Alice Wong on March 3, 2024; call 555-201-3344.", ["Alice", "Wong", "March 3", "555-201"], []),
    ("Results sent to a.wong@hospital.org (accession # A12345678).", ["a.wong@", "A12345678"], ["accession"]),
    ("Heart size normal. No pleural effusion.", [], ["Heart size normal. No pleural effusion."]),
])
def test_redact_text(text: str, gone: list[str], kept: list[str]) -> None:
    out, counts = redact_text(text)
    for g in gone:
        assert g not in out
    for k in kept:
        assert k in out
    assert bool(counts) == bool(gone)
    assert redact_text(out)[0] == out  # idempotent: safe to apply at every boundary


def test_medical_ingest_deidentifies_dicom_and_redacts_reports(project: Path, caplog: pytest.LogCaptureFixture,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # A fixed key: the replaced UIDs are long runs of decimal digits derived from it, and with a random key one
    # of them now and then contains a short original value ("642341") by chance, which the scan below reports
    monkeypatch.setenv("MMOPS_PSEUDONYM_KEY", "phi-test-key")
    land = project / "landing" / "medical"
    for d in ("report", "ecg", "fundus"):
        (land / d).mkdir(parents=True)
    (land / "fundus" / "case1.dcm").write_bytes(_dcm("CT_small.dcm"))
    (land / "ecg" / "case1.dcm").write_bytes(_dcm("waveform_ecg.dcm"))
    (land / "report" / "case1.txt").write_text(
        "Patient: John Smith MRN: 7731920. Exam 2024-01-19 read by Dr. Jane Doe. No acute findings.")
    (land / "fundus" / "case2.dcm").write_bytes(_dcm("CT_small.dcm")[:2000])  # truncated DICOM
    originals = {n: pydicom.dcmread(io.BytesIO(_dcm(n))) for n in ("CT_small.dcm", "waveform_ecg.dcm")}
    with caplog.at_level(logging.DEBUG):
        summary = pipeline.ingest("medical")
    assert summary.ingested == 3 and summary.quarantined == 1

    with session_scope() as s:
        rows = {r.source_path: r for r in s.scalars(select(SampleFile))}
    assert "DICOM" in rows["fundus/case2.dcm"].reason
    stored = b"".join((project / "data" / r.blob_path).read_bytes() for r in rows.values() if r.blob_path)
    for ds in originals.values():
        for value in (ds.PatientName, ds.PatientID, ds.get("InstitutionName"), ds.get("StudyDate")):
            if value:
                assert str(value).encode() not in stored, value
    for secret in ("John", "Smith", "7731920", "Jane", "2024-01-19"):
        assert secret.encode() not in stored
        assert secret not in caplog.text
    for path, row in rows.items():
        if row.blob_path:  # the stored bytes differ from the landed ones and are addressed by their own hash
            assert row.content_sha256 != row.sha256 and row.content_sha256 in row.blob_path, path

    ct = pydicom.dcmread(io.BytesIO((project / "data" / rows["fundus/case1.dcm"].blob_path).read_bytes()))
    assert ct.PatientIdentityRemoved == "YES" and ct.PatientName == "" and "InstitutionName" not in ct
    assert ct.PatientID.startswith("anon-") and ct.SOPInstanceUID != originals["CT_small.dcm"].SOPInstanceUID
    assert ct.PatientSex == originals["CT_small.dcm"].PatientSex  # patient characteristics are retained
    assert rows["fundus/case1.dcm"].notes["phi_private"] > 0

    ecg = rows["ecg/case1.dcm"]
    assert ecg.notes["resampled_from_hz"] == 1000
    assert ecg.stats["n_samples"] == 3600  # 10 s of lead II at the pack's 360 Hz
    pack = load_domain("medical")
    series = decode((project / "data" / ecg.blob_path).read_bytes(), pack.modality("ecg")).value
    assert series.shape == (3600, 1) and 0.05 < float(series.std()) < 2  # millivolts, not microvolts

    # the same patient keeps the same pseudonym across files (records still group); another key, another one
    mr = decode(_dcm("CT_small.dcm"), pack.modality("fundus"), phi_key=b"another key")
    assert pydicom.dcmread(io.BytesIO(mr.stored)).PatientID != ct.PatientID


def test_dicom_image_windowing_uses_the_files_rescale_and_window() -> None:
    pack = load_domain("security")  # grayscale camera
    mr = decode(_dcm("MR_small.dcm"), pack.modality("camera"))
    assert mr.value.shape == (64, 64, 1) and mr.value.dtype.name == "uint8"
    raw = pydicom.dcmread(io.BytesIO(_dcm("MR_small.dcm"))).pixel_array.astype(float)
    expected = np.clip((raw - (600 - 1600 / 2)) / 1600, 0, 1) * 255  # the file's window: center 600, width 1600
    assert np.abs(mr.value[:, :, 0].astype(float) - expected).max() <= 0.5
    assert mr.stored is None  # without a key (reading stored data back) nothing is rewritten
