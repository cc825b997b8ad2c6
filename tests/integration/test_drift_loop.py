"""The whole monitoring loop on a served model (`mmops drift-demo`): normal traffic triggers nothing; shifted
traffic drifts, emits the drift Asset, which makes the training DAG due (the scheduler's own query); the
training DAG runs (`airflow dags test`), evaluates a challenger and the registry records its decision."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from mmops.processes import stop_group
from tests.conftest import HANG_S, catalog_sql, free_port, make_project, venv_bin

pytestmark = [pytest.mark.airflow, pytest.mark.slow]


@pytest.fixture(scope="module")
def served_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """industrial taken to a packaged champion, in a project of its own (the loop retrains it)."""
    root = make_project(tmp_path_factory.mktemp("loop") / "proj", {"industrial": "industrial-imu"}, with_code=True)
    env = {**os.environ, "MMOPS_HOME": str(root)}
    subprocess.run([venv_bin("mmops"), "run", "--domain", "industrial"], env=env, check=True, capture_output=True,
                   timeout=HANG_S)
    return root


def test_drift_demo_closes_the_loop_and_no_drift_triggers_nothing(served_project: Path) -> None:
    root = served_project
    env = {**os.environ, "MMOPS_HOME": str(root), "AIRFLOW_HOME": str(root / "var" / "airflow"),
           "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    proc = subprocess.run([venv_bin("mmops"), "drift-demo", "--domain", "industrial"], env=env, cwd=root,
                          capture_output=True, text=True, timeout=HANG_S)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    summary = json.loads((root / "artifacts" / "industrial" / "drift_demo.json").read_text())

    normal, shifted = summary["normal"], summary["shifted"]
    # 1. held-out traffic: no drift, the signal task skipped, no asset event, the training DAG not queued
    assert normal["drifted"] is False
    assert normal["monitor_tasks"]["signal_drift_industrial"] == "skipped"
    assert normal["new_asset_events"] == [] and normal["train_queued_by"] == [] and normal["train_due"] is False
    # the held-out labels came in later and were joined with the log by record id
    assert normal["performance"]["n_labeled"] == normal["sent"] > 0
    assert normal["performance"]["accuracy"] is not None and normal["performance"]["degraded"] is False
    # and before they came in, every answer gave an estimate (CBPE): a share, within its band of a share
    perf = normal["performance"]
    assert perf["n_estimated"] >= perf["n_labeled"] and 0 < perf["estimated_accuracy"] <= 1, perf
    assert 0 < perf["estimated_accuracy_labeled"] <= 1 and perf["estimated_band"] > 0, perf
    assert perf["estimate_holds"] is True  # no drift: the answers are as calibrated as on validation

    # 2. a miscalibrated IMU: both sensors drift; one asset event carrying the verdict queues the training DAG
    assert shifted["drifted"] is True and set(shifted["drifted_groups"]) == {"accel", "gyro"}
    assert shifted["monitor_tasks"]["signal_drift_industrial"] == "success"
    [event] = shifted["new_asset_events"]
    assert event["source"] == "mmops_monitor.signal_drift_industrial"
    assert set(event["extra"]["drifted_groups"]) == {"accel", "gyro"}
    assert shifted["train_queued_by"] == ["mmops_industrial_drift"] and shifted["train_due"] is True
    assert shifted["performance"]["estimate_holds"] is False  # drifted inputs: the estimate is not to be trusted
    # the check's reports for people: Evidently's embedding drift per sensor, on samples of both sides
    report = json.loads((root / "artifacts" / "industrial" / "drift" / "drift_report.json").read_text())
    for sensor in ("accel", "gyro"):
        rendered = report["evidently_embeddings"][sensor]
        assert rendered["n_current"] == shifted["sent"] and Path(rendered["html"]).stat().st_size > 0, rendered

    # 3. the training DAG ran on the field's landed captures, evaluated a challenger, recorded the decision
    tasks = summary["training"]["tasks"]
    assert all(tasks[t] == "success" for t in ("gather", "validate", "build", "train", "evaluate", "package"))
    decision = summary["decision"]
    assert decision["action"] in ("promoted", "rejected") and decision["version"] == 2
    assert decision["previous_champion"] == 1 and decision["challenger"] is not None
    if decision["action"] == "promoted":  # the champion Asset event; the deploy DAG swapped it into the service
        assert tasks["champion"] == "success" and summary["training"]["deploy"] == {"deploy": "success"}
        assert summary["served_after"] != summary["served_before"]
    else:
        assert tasks["champion"] == "skipped" and "deploy" not in summary["training"]
        assert summary["served_after"] == summary["served_before"]

    # the challenger's dataset holds the field's captures, labeled by the ground truth that came in
    [(captured,)] = catalog_sql(root, "select count(*) from samples where domain='industrial' and sample_key like "
                                      "'shifted-%'")
    assert captured == shifted["sent"] == 80
    [(labeled,)] = catalog_sql(root, "select count(*) from labels where source like 'file:ground_truth/%'")
    assert labeled >= 80
    reports = catalog_sql(root, "select drifted from drift_reports where domain='industrial' and "
                                "current_source='log' order by id")
    assert [bool(r[0]) for r in reports] == [False, True]

    # the scheduler's queue entry was consumed by the run: nothing left to trigger
    adrq = sqlite3.connect(root / "var" / "airflow" / "airflow.db").execute(
        "select count(*) from asset_dag_run_queue").fetchone()[0]
    assert adrq == 0


def _rendered(url: str, profile: Path) -> str:
    """The page's DOM after Chromium ran its scripts (headless, no network beyond localhost)."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is needed for the dashboard test: `make test` installs it "
                    "(apt-get install chromium)")
    proc = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={profile}", "--virtual-time-budget=20000", "--dump-dom", url],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_the_dashboard_renders_every_panel_with_the_checks(served_project: Path, tmp_path: Path) -> None:
    """After the loop (two monitoring checks), `mmops dashboard` serves the domain's project and a real
    browser renders each panel with a point or bar per check."""
    root = served_project
    if not (root / "monitoring" / "workspace").is_dir():
        pytest.skip("needs the drift demo's checks (run with the loop test)")
    port = free_port()
    env = {**os.environ, "MMOPS_HOME": str(root)}
    proc = subprocess.Popen([venv_bin("mmops"), "dashboard", "--port", str(port)], env=env, cwd=root,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        projects = None
        while time.monotonic() < deadline and projects is None:
            try:
                projects = httpx.get(f"{base}/api/projects", timeout=5).json()
            except httpx.HTTPError:
                time.sleep(0.5)
        assert projects is not None, "the dashboard did not answer within 90 s"
        [project] = [p for p in projects if p["name"] == "mmops industrial"]
        dom = _rendered(f"{base}/projects/{project['id']}", tmp_path / "chromium")
    finally:
        stop_group(proc)

    panels = {re.sub(r"&gt;", ">", m.group(1)): m.start() for m in re.finditer(r"<h5[^>]*>([^<]+)</h5>", dom)}
    starts = sorted(panels.values()) + [len(dom)]

    def body(title: str) -> str:
        at = panels[title]
        return dom[at : starts[starts.index(at) + 1]]

    lines = ["Drift share over time", "Embedding drift (distance / no-drift 95th percentile)",
             "Performance: estimated without labels, and on delayed ground truth"]
    bars = ["Drifted features per modality", "Per-feature drift (>= 1: past its test's threshold)",
            "Prediction distribution"]
    assert set(lines + bars + ["Drift share (latest check)", "Labeled records (latest check)"]) <= set(panels), panels
    for title in lines:  # one line per series, a mark per check (the normal one and the drifted one)
        assert body(title).count("MuiLineElement-root") >= 2, title
        assert body(title).count("MuiMarkElement-root") >= 4, title
    for title in bars:
        assert body(title).count("MuiBarElement-root") >= 4, title
    # the latest check drifted: its drift share, past the threshold, is what the counter shows
    latest = json.loads((root / "artifacts" / "industrial" / "drift" / "drift_report.json").read_text())
    counter = re.sub(r"<[^>]+>", " ", body("Drift share (latest check)"))
    assert f"{latest['drift_share']:.2f}".rstrip("0") in counter, counter[:500]
