import os
from pathlib import Path

import pytest
from sqlalchemy import func, select

from mmops import pipeline
from mmops.catalog import Label, Sample, SampleFile, session_scope

pytestmark = pytest.mark.catalog  # the PostgreSQL pass runs these too (conftest)


def _quarantined(domain: str) -> dict[str, str]:
    with session_scope() as s:
        rows = s.execute(select(SampleFile.source_path, SampleFile.reason)
                         .where(SampleFile.domain == domain, SampleFile.status == "quarantined")).all()
    return dict(rows)


def test_corrupt_files_are_quarantined_and_the_rest_ingested(project: Path, tmp_path: Path) -> None:
    pipeline.pull_domain("security")
    land = project / "landing" / "security"
    good = sorted((land / "camera").iterdir())
    (land / "camera" / "truncated.png").write_bytes(good[0].read_bytes()[:50])
    (land / "camera" / "empty.png").write_bytes(b"")
    (land / "camera" / "notes.txt").write_text("wrong extension")
    (land / "stray.png").write_bytes(good[1].read_bytes())
    secret = tmp_path / "outside.png"
    secret.write_bytes(good[2].read_bytes())
    os.symlink(secret, land / "camera" / "escape.png")

    summary = pipeline.ingest("security")
    assert summary.ingested == 200
    assert summary.quarantined == 5
    reasons = _quarantined("security")
    assert "not a readable image" in reasons["camera/truncated.png"]
    assert "empty file" in reasons["camera/empty.png"]
    assert "extension .txt" in reasons["camera/notes.txt"]
    assert "record pattern" in reasons["stray.png"]
    assert "symbolic link" in reasons["camera/escape.png"]
    # every file that was read is kept in quarantine; a symlink is never followed, so there is nothing to keep
    assert len(list((project / "quarantine" / "security").iterdir())) == 4
    # content-addressed store holds each good file once
    assert len(list((project / "data" / "raw" / "security").rglob("*.png"))) == 200

    again = pipeline.ingest("security")  # idempotent
    assert again.ingested == 0 and again.skipped == 205 and again.quarantined == 0
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(SampleFile)) == 205


def test_same_content_under_two_samples_is_stored_once(project: Path) -> None:
    pipeline.pull_domain("security")
    cam = project / "landing" / "security" / "camera"
    (cam / "copy_of_lfw000.png").write_bytes((cam / "lfw000.png").read_bytes())
    summary = pipeline.ingest("security")
    assert summary.ingested == 201 and summary.duplicates == 1
    assert len(list((project / "data").rglob("*.png"))) == 200
    # the copy, landed later, is the duplicate, although its name comes first in the listing
    with session_scope() as s:
        marked = s.execute(select(SampleFile.source_path, SampleFile.reason)
                           .where(SampleFile.duplicate_of.is_not(None))).all()
    assert marked == [("camera/copy_of_lfw000.png", "same content as camera/lfw000.png")]


def test_labels_import_rejects_unknown_samples_and_classes(project: Path) -> None:
    pipeline.pull_domain("industrial")
    labels = project / "landing" / "industrial" / "labels.csv"
    text = labels.read_text().replace("bm_test_000,standing", "bm_test_000,flying")
    assert "flying" in text
    labels.write_text(text + "ghost_sample,walking\n")
    pipeline.ingest("industrial")
    res = pipeline.label("industrial").files[0]
    assert res["imported"] == 79
    assert "no such record" in res["rejected"]["ghost_sample"]
    assert "not a class" in res["rejected"]["bm_test_000"]
    again = pipeline.label("industrial").files[0]
    assert again["imported"] == 0 and again["unchanged"] == 79
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(Label).where(Label.kind == "file")) == 79
        assert s.scalar(select(func.count()).select_from(Sample)) == 80
