import os
import subprocess
from pathlib import Path

import pytest

from mmops import pipeline
from mmops.catalog import session_scope
from mmops.quarantine import list_quarantined, purge, release
from tests.conftest import venv_bin

pytestmark = pytest.mark.catalog  # the PostgreSQL pass runs these too (conftest)


def _land_bad(project: Path) -> Path:
    pipeline.pull_domain("security")
    cam = project / "landing" / "security" / "camera"
    good = (cam / "lfw000.png").read_bytes()
    (cam / "late.png").write_bytes(good[:40])  # an upload cut off mid-transfer
    (cam / "junk.png").write_bytes(b"not an image")
    return cam


def test_release_gives_a_fixed_file_another_ingest(project: Path) -> None:
    cam = _land_bad(project)
    pipeline.ingest("security")
    with session_scope() as s:
        rows = {r.source_path: r for r in list_quarantined(s, "security")}
    assert set(rows) == {"camera/late.png", "camera/junk.png"}

    (cam / "late.png").write_bytes((cam / "lfw001.png").read_bytes())  # the sender re-uploads it whole
    with session_scope() as s:
        assert release(s, [rows["camera/late.png"].id], project / "landing", project / "quarantine") == [
            "security/camera/late.png"]
    summary = pipeline.ingest("security")
    assert summary.ingested == 1 and summary.quarantined == 0
    with session_scope() as s:
        assert [r.source_path for r in list_quarantined(s)] == ["camera/junk.png"]


def test_released_file_that_is_still_bad_returns_to_quarantine(project: Path) -> None:
    cam = _land_bad(project)
    pipeline.ingest("security")
    (cam / "junk.png").unlink()  # the landing copy is gone: release puts the quarantined bytes back
    with session_scope() as s:
        junk = next(r for r in list_quarantined(s) if r.source_path == "camera/junk.png")
        release(s, [junk.id], project / "landing", project / "quarantine")
    assert (cam / "junk.png").read_bytes() == b"not an image"
    assert pipeline.ingest("security").quarantined == 1


def test_purge_keeps_the_decision_on_record(project: Path) -> None:
    _land_bad(project)
    pipeline.ingest("security")
    with session_scope() as s:
        assert purge(s, None, project / "quarantine", "security") == 2
        assert list_quarantined(s) == []
    assert list((project / "quarantine" / "security").iterdir()) == []
    assert pipeline.ingest("security").skipped == 202  # purged files are not ingested again
    purged = [e for e in pipeline.audit_log("security") if e["action"] == "quarantine_purged"]
    assert sorted(e["detail"]["source_path"] for e in purged) == ["camera/junk.png", "camera/late.png"]
    assert all("not a readable image" in e["detail"]["reason"] for e in purged)


def test_quarantine_cli(project: Path) -> None:
    _land_bad(project)
    pipeline.ingest("security")
    out = subprocess.run([venv_bin("mmops"), "quarantine", "list", "--domain", "security"], cwd=project,
                         capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert out.returncode == 0 and "junk.png" in out.stdout and "not a readable image" in out.stdout
    refused = subprocess.run([venv_bin("mmops"), "quarantine", "purge"], cwd=project, capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode == 1 and "--yes" in refused.stderr
    missing = subprocess.run([venv_bin("mmops"), "quarantine", "release", "99999"], cwd=project,
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and "no quarantined file with id 99999" in missing.stderr
