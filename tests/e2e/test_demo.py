"""The README's main command, end to end on the bundled data of all seven domains (fast training), with
a case full of protected health information landed beside the real ones: none of it may reach the catalog,
data/, logs, reports, the model store or the monitoring store."""

import io
import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from mmops.processes import stop_group
from tests.conftest import HANG_S, catalog_backend, catalog_sql, free_port, make_project, mmops_env, venv_bin

pytestmark = pytest.mark.slow

DOMAINS = {"medical": "medical-cxr", "security": "security-faces", "industrial": "industrial-imu",
           "surveillance": "surveillance-av",  # and the anomaly task (fitted on normal records) in each deployment
           "cardiac": "cardiac-ecg", "watch": "watch-av", "inspection": "inspection-brick"}


# PHI of a made-up patient: distinctive, so that a hit anywhere is this case and nothing else
PHI = ["Quackenbush", "Zebulon", "ZQ-7731920", "555-201-3344", "Wintergreen", "07/04/1961", "q.zebulon@mail.example",
       "St Elsewhere General", "MRN88123X"]
REPORT = ("Patient: Zebulon Quackenbush, MRN: ZQ-7731920, DOB 07/04/1961, phone 555-201-3344, "
          "q.zebulon@mail.example. Read by Dr. Ophelia Wintergreen. Heart size normal. No acute disease.")


def _land_phi_case(root: Path) -> None:
    import pydicom
    from pydicom.data import get_testdata_file

    land = root / "landing" / "medical"
    for d in ("report", "fundus"):
        (land / d).mkdir(parents=True, exist_ok=True)
    (land / "report" / "phi_case.txt").write_text(REPORT)
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
    ds.PatientName, ds.PatientID, ds.InstitutionName = "Quackenbush^Zebulon", "MRN88123X", "St Elsewhere General"
    ds.ReferringPhysicianName = "Wintergreen^Ophelia"
    buf = io.BytesIO()
    ds.save_as(buf)
    (land / "fundus" / "phi_case.dcm").write_bytes(buf.getvalue())


def _serve_phi_text(root: Path) -> None:
    """A client sends the report with its PHI to the served medical model; the log must hold none of it."""
    from mmops.serving.client import wait_logged, wait_ready

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = mmops_env(root, COLUMNS="160")
    with (root / "var" / "logs" / "serve-phi.log").open("wb") as log:
        proc = subprocess.Popen([venv_bin("mmops"), "serve", "--domain", "medical", "--port", str(port)], cwd=root,
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_ready(url, proc)
            resp = httpx.post(f"{url}/predict", json={"records": [{"id": "phi-request", "inputs": {"report": REPORT}}]},
                              timeout=60)
            assert resp.status_code == 200, resp.text
            assert any("PHI redacted" in w for w in resp.json()[0]["warnings"])
            assert wait_logged(url, 1)["written"] == 1
        finally:
            stop_group(proc)
    mon = subprocess.run([venv_bin("mmops"), "monitor", "--domain", "medical"], cwd=root, env=env,
                         capture_output=True, text=True, timeout=HANG_S)
    assert mon.returncode == 0, mon.stdout + mon.stderr


def _phi_hits(root: Path, output: str) -> list[str]:
    """Every place under the project (but the landing area and quarantine, which hold files as they came)
    and every catalog table where a PHI string of the planted case appears."""
    hits = [f"demo output: {p}" for p in PHI if p in output]
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if rel.parts[0] in ("landing", "quarantine", "mmops", "dags", "expectations") or not path.is_file() \
                or path.is_symlink():
            continue
        data = path.read_bytes()
        hits += [f"{rel}: {p}" for p in PHI if p.encode() in data or p.encode("utf-16-le") in data]
    tables = ("select table_name from information_schema.tables where table_schema = 'public'"
              if catalog_backend() == "postgresql" else "select name from sqlite_master where type = 'table'")
    for (table,) in catalog_sql(root, tables):
        text = repr(catalog_sql(root, f'select * from "{table}"'))
        hits += [f"catalog {table}: {p}" for p in PHI if p in text]
    return hits


def _behaviour_in_every_card(root: Path) -> None:
    """Every model's card holds its behaviour on the test split (mmops.behaviour), for every modality kind:
    a nudge of any one modality keeps its answers, the field's shift changes at least as many; a classifier
    answers most of its clearest cases right (fast training: more than half, where chance is a third or
    less); a detector scores a normal record blended into an anomalous one higher at the end than at the
    start."""
    for domain in DOMAINS:
        card = json.loads((root / "artifacts" / domain / "card" / "card.json").read_text())
        b = card["behaviour"]
        assert set(b["invariance"]) == set(b["nudges"]) == set(card["modalities"]), (domain, b)
        assert min(b["invariance"].values()) >= 0.9 and b["shift_kept"] <= min(b["invariance"].values()), (domain, b)
        if card["task"] == "anomaly":
            assert b["direction"] is not None and b["direction"][-1] > b["direction"][0], (domain, b)
        else:
            assert b["clear_cases"] == 3 * len(card["classes"]) and b["clear_right"] > b["clear_cases"] / 2, (domain, b)


def test_demo_runs_every_stage_for_every_domain(tmp_path: Path) -> None:
    root = make_project(tmp_path / "proj", DOMAINS, with_code=True)
    _land_phi_case(root)
    corrupt = root / "landing" / "security" / "camera" / "broken_upload.png"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)  # a PNG signature and nothing else

    env = {**os.environ, "MMOPS_HOME": str(root), "COLUMNS": "160"}
    # port 0: each domain's service on a port free at its start (one fixed port, free between domains, can be
    # taken meanwhile by another test's server)
    out = subprocess.run([venv_bin("mmops"), "demo", "--port", "0", "--requests", "12"],
                         cwd=root, env=env, capture_output=True, text=True, timeout=HANG_S)
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

    for domain in ("cardiac", "watch", "inspection"):  # the detectors: registered on AUROC, and their
        # pre-labels (flagged or normal) contradict few of the file labels, whatever kind of anomaly those name
        [(metrics,)] = catalog_sql(root, "select metrics from model_versions where domain=:d", d=domain)
        metrics = json.loads(metrics) if isinstance(metrics, str) else metrics
        assert metrics["auroc"] > 0.9 and metrics["fpr"] <= 0.1, (domain, metrics)
        conflicts = json.loads((root / "artifacts" / domain / "label_conflicts.json").read_text())
        n = catalog_sql(root, "select count(*) from samples where domain=:d", d=domain)[0][0]
        assert len(conflicts["disagreements"]) <= 0.1 * n, (domain, len(conflicts["disagreements"]), n)

    _behaviour_in_every_card(root)
    [reason] = catalog_sql(root, "select reason from files where status='quarantined' and source_path=:p",
                           p="camera/broken_upload.png")
    assert reason and "not a readable image" in reason[0]
    assert (root / "quarantine" / "security").is_dir()
    modalities = {m for (m,) in catalog_sql(root, "select distinct modality from files where domain='medical'")}
    assert modalities == {"report", "ecg", "fundus"}
    modalities = {m for (m,) in catalog_sql(root, "select distinct modality from files where domain='surveillance'")}
    assert modalities == {"camera", "microphone"}  # a clip and its sound, decoded and checked

    # PHI end to end: the planted case was ingested (redacted, de-identified), pre-labeled and exported for
    # annotators; its report was sent to the service; the monitor read the log. None of its PHI is anywhere.
    assert catalog_sql(root, "select count(*) from files f join samples s on s.id = f.sample_id "
                             "where s.sample_key = 'phi_case' and f.status = 'ok'")[0][0] == 2
    _serve_phi_text(root)
    assert _phi_hits(root, out.stdout + out.stderr) == []
