"""The README's main command, end to end on the bundled real data of all three domains (fast training)."""

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import catalog_sql, free_port, make_project, venv_bin

pytestmark = pytest.mark.slow

DOMAINS = {"medical": "medical-cxr", "security": "security-faces", "industrial": "industrial-imu"}


def test_demo_runs_every_stage_for_every_domain(tmp_path: Path) -> None:
    root = make_project(tmp_path / "proj", DOMAINS, with_code=True)
    corrupt = root / "landing" / "security" / "camera" / "broken_upload.png"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)  # a PNG signature and nothing else

    env = {**os.environ, "MMOPS_HOME": str(root), "COLUMNS": "160"}
    out = subprocess.run([venv_bin("mmops"), "demo", "--port", str(free_port()), "--requests", "12"],
                         cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Where to look" in out.stdout

    for domain in DOMAINS:
        def count(sql: str, d: str = domain) -> int:
            return catalog_sql(root, sql.replace("?", ":d"), d=d)[0][0]

        assert count("select count(*) from samples where domain=?") > 0
        assert count("select count(*) from labels join samples on samples.id=labels.sample_id where domain=?") > 0
        assert count("select count(*) from validation_runs where domain=? and success") == 1
        assert count("select count(*) from dataset_versions where domain=?") == 1
        assert count("select count(*) from training_runs where domain=? and status='finished'") == 1
        assert count("select count(*) from model_versions where domain=? and bento_tag is not null") == 1
        assert count("select count(*) from drift_reports where domain=? and current_source='log' "
                     "and n_current >= 12") == 1
        assert (root / "artifacts" / domain / "drift" / "drift_report.html").exists()

    [reason] = catalog_sql(root, "select reason from files where status='quarantined' and source_path=:p",
                           p="camera/broken_upload.png")
    assert reason and "not a readable image" in reason[0]
    assert (root / "quarantine" / "security").is_dir()
    modalities = {m for (m,) in catalog_sql(root, "select distinct modality from files where domain='medical'")}
    assert modalities == {"report", "ecg", "fundus"}
