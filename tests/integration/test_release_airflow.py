"""The release path end to end, on a real Airflow server (`mmops airflow`) and a real `bentoml serve`, while a
client keeps sending records: the training DAG, triggered over the REST API, retrains; its challenger passes
the gate against a champion gone bad, and the training DAG's release task announces it (the challenger Asset).
It runs in shadow, waits for a person, who approves it over the REST API (Airflow's Human-in-the-loop); it runs
as a canary, becomes champion, and the champion Asset starts the deploy DAG, which swaps it into the service. A
second challenger is rejected over the REST API: nothing is released, the registry and the ledger say who and
why; then `mmops rollback` restores the champion before the release in the registry and the service."""

import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from mmops.processes import stop_group
from tests.conftest import free_port, make_project, mmops_env, venv_bin
from tests.integration.test_airflow_ui import _wait_for_line
from tests.integration.test_serve import _another_version, _records, _register_version, _serving

pytestmark = [pytest.mark.slow, pytest.mark.serve]

DOMAIN = "industrial"


def _challenger(root: Path, name: str, nudge: float, score: float) -> tuple[str, int]:
    """A version that passed the gate in the staged domain (better stored metrics, no champion re-score): the
    registry leaves it to the release DAG. (model tag, version)."""
    tag, reg = _register_version(root, _another_version(root, name, nudge=nudge), name, {"macro_f1": score},
                                 staged=True)
    assert reg.release and not reg.promoted, reg
    return tag, reg.version


@pytest.fixture
def released(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str, Any, str]]:
    """A staged, approval-requiring industrial project whose champion (v2, gone bad) is served, and `mmops
    airflow` running with the service's URL: (project, service url, REST client, airflow log)."""
    from mmops import pipeline

    root = make_project(tmp_path / "proj", {DOMAIN: "industrial-imu"}, with_code=True)
    params = yaml.safe_load((root / "params.yaml").read_text())
    # the champion gone bad (below) answers nearly one class: the retrained model's answers differ from its by
    # design, so this drill does not bound the canary's label shift (tests/unit/test_canary.py does)
    params["release"].update(staged=[DOMAIN], approval=[DOMAIN], shadow_records=20, shadow_minutes=5,
                             canary_share=0.5, canary_records=30, canary_minutes=5, max_prediction_shift=1.0)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.setenv("MMOPS_HOME", str(root))
    pipeline.pull_domain(DOMAIN)
    for stage in ("ingest", "label", "validate", "build", "train", "evaluate", "package"):
        pipeline.STAGES[stage](DOMAIN)
    # the champion goes bad: a version whose weights are noise, made champion (its stored figures claim more
    # than it does); the gate re-scores it on the holdout, so a retrained model passes the gate against it
    bad_tag, bad = _register_version(root, _another_version(root, "gone-bad", gone_bad=True), "gone-bad",
                                     {"macro_f1": 2.0})
    assert bad.promoted, bad
    with _serving(root, DOMAIN, "serve-release.log", MMOPS_MODEL_TAG=bad_tag) as url:
        port = free_port()
        out = root / "var" / "logs" / "mmops-airflow.out"
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("wb") as fh:
            proc = subprocess.Popen(
                [venv_bin("mmops"), "airflow", "--port", str(port)], cwd=root, stdout=fh, stderr=subprocess.STDOUT,
                start_new_session=True,
                env=mmops_env(root, COLUMNS="200", AIRFLOW_HOME=str(root / "var" / "airflow"),
                              AIRFLOW__CORE__DAGS_FOLDER=str(root / "dags"),
                              **{f"MMOPS_SERVICE_URL_{DOMAIN.upper()}": url}))
        try:
            found = _wait_for_line(out, r"Airflow UI (\S+)\s+login (\S+) / (\S+)", proc, timeout=420)
            base, user, password = found.groups()
            token = httpx.post(f"{base}/auth/token", json={"username": user, "password": password},
                               timeout=30).json()["access_token"]
            api = httpx.Client(base_url=f"{base}/api/v2", headers={"Authorization": f"Bearer {token}"}, timeout=30)
            for _ in range(180):
                dags = {d["dag_id"] for d in api.get("/dags", params={"limit": 100}).json()["dags"]}
                if {f"mmops_train_{DOMAIN}", f"mmops_release_{DOMAIN}", f"mmops_deploy_{DOMAIN}"} <= dags:
                    break
                time.sleep(1)
            for dag_id in (f"mmops_train_{DOMAIN}", f"mmops_release_{DOMAIN}", f"mmops_deploy_{DOMAIN}"):
                assert api.patch(f"/dags/{dag_id}", json={"is_paused": False}).status_code == 200
            yield root, url, api, str(out)
        finally:
            stop_group(proc, grace=120, sig=signal.SIGINT)


class Traffic:
    """A client sending records (fresh ids) to the service until stopped; every answer must be a 200."""

    def __init__(self, url: str, records: list[dict]) -> None:
        self.url, self.records, self.failures, self.versions = url, records, [], set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            batch = [{**r, "id": f"{r['id']}#{n}-{i}"} for i, r in enumerate(self.records)]
            n += 1
            resp = httpx.post(f"{self.url}/predict", json={"records": batch}, timeout=120)
            if resp.status_code != 200:
                self.failures.append(resp.status_code)
            else:
                self.versions |= {a["model_version"] for a in resp.json()}
            time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)


def _announce(api: Any, version: int) -> str:
    """The challenger Asset event, through the REST API; the release run it starts."""
    dag_id = f"mmops_release_{DOMAIN}"
    before = _runs(api, dag_id)
    [asset] = api.get("/assets", params={"name_pattern": f"mmops_{DOMAIN}_challenger"}).json()["assets"]
    resp = api.post("/assets/events", json={"asset_id": asset["id"], "extra": {"version": version}})
    assert resp.status_code in (200, 201), resp.text
    return _new_run(api, dag_id, before, "the challenger Asset event")


def _runs(api: Any, dag_id: str) -> set[str]:
    return {r["dag_run_id"] for r in api.get(f"/dags/{dag_id}/dagRuns").json()["dag_runs"]}


def _new_run(api: Any, dag_id: str, before: set[str], cause: str) -> str:
    """The run of `dag_id` that `cause` started (one not in `before`)."""
    for _ in range(120):
        runs = _runs(api, dag_id) - before
        if runs:
            return runs.pop()
        time.sleep(1)
    raise AssertionError(f"{cause} started no {dag_id} run")


def _tasks(api: Any, dag_id: str, run_id: str) -> dict[str, str]:
    return {t["task_id"]: t["state"] for t in
            api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances").json()["task_instances"]}


def _task_state(api: Any, dag_id: str, run_id: str, task_id: str) -> str | None:
    return api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}").json().get("state")


def _wait(check: Any, what: str, timeout: float, log: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(2)
    raise AssertionError(f"{what} not within {timeout:.0f} s: {Path(log).read_text()[-3000:]}")


def _answer(api: Any, run_id: str, option: str, reason: str, log: str) -> dict:
    """Wait for the approval request, check what it shows, answer it as a person would over REST."""
    dag_id, path = f"mmops_release_{DOMAIN}", f"/dags/mmops_release_{DOMAIN}/dagRuns/{run_id}/taskInstances/approve/-1"
    _wait(lambda: _task_state(api, dag_id, run_id, "approve") == "awaiting_input", "the approval request", 600, log)
    # A person reads before answering. An answer within a second of the task parking can race the executor's
    # report of that first try (the scheduler then sees the re-queued task "succeed" and fails it: Airflow
    # 3.3.2, LocalExecutor, seen here): give the scheduler a few loops first.
    time.sleep(10)
    asked = api.get(f"{path}/hitlDetails").json()
    assert asked["options"] == ["Approve", "Reject"] and not asked["response_received"], asked
    assert "passed the promotion gate" in asked["body"] and "records mirrored" in asked["body"], asked["body"]
    resp = api.patch(f"{path}/hitlDetails", json={"chosen_options": [option], "params_input": {"reason": reason}})
    assert resp.status_code == 200, resp.text
    return resp.json()


def _run_state(api: Any, dag_id: str, run_id: str) -> str | None:
    state = api.get(f"/dags/{dag_id}/dagRuns/{run_id}").json()["state"]
    return state if state in ("success", "failed") else None


def test_a_retrained_challenger_approved_over_rest_goes_shadow_canary_champion_then_a_rejection_and_a_rollback(
        released: tuple[Path, str, Any, str]) -> None:
    from mmops import pipeline
    from mmops.catalog import ModelVersion, session_scope
    from mmops.registry import describe, get_alias

    root, url, api, log = released
    bad_tag = httpx.get(f"{url}/metadata", timeout=30).json()["model_version"]
    with session_scope() as s:
        bad = get_alias(s, DOMAIN, "champion").version
    _, records = _records(root, 8)
    traffic = Traffic(url, records)
    try:
        # the training DAG, triggered over REST, retrains; its challenger passes the gate against the champion
        # gone bad (both re-scored on the same holdout) and its release task announces it: the release DAG runs
        train_id, dag_id = f"mmops_train_{DOMAIN}", f"mmops_release_{DOMAIN}"
        releases_before = _runs(api, dag_id)
        run = api.post(f"/dags/{train_id}/dagRuns", json={"logical_date": None, "conf": {}})
        assert run.status_code in (200, 201), run.text
        train_run = run.json()["dag_run_id"]
        assert _wait(lambda: _run_state(api, train_id, train_run), "the training run", 900, log) == "success"
        trained = _tasks(api, train_id, train_run)
        assert (trained["champion"], trained["release"]) == ("skipped", "success"), trained  # staged: not promoted
        with session_scope() as s:
            v2, gate = get_alias(s, DOMAIN, "challenger").version, describe(s, DOMAIN)["audit_log"][0]
            assert get_alias(s, DOMAIN, "champion").version == bad != v2
        assert (gate["action"], gate["version"]) == ("passed_gate", v2), gate
        assert f"vs champion v{bad}, both on the test split" in gate["reason"], gate  # re-scored, not its claims
        run_id = _new_run(api, dag_id, releases_before, "the training run's challenger Asset event")

        answered = _answer(api, run_id, "Approve", "shadow agrees with the champion; card reviewed", log)
        assert answered["chosen_options"] == ["Approve"]
        assert _wait(lambda: _run_state(api, dag_id, run_id), "the release run", 600, log) == "success"
        assert _tasks(api, dag_id, run_id) == {"shadow": "success", "approve": "success", "decide": "success",
                                               "canary": "success"}
        # the champion Asset started the deploy DAG, which swapped the retrained model in
        deploy_id = f"mmops_deploy_{DOMAIN}"
        deploy_runs = _wait(lambda: api.get(f"/dags/{deploy_id}/dagRuns").json()["dag_runs"], "a deploy run", 300, log)
        assert _wait(lambda: _run_state(api, deploy_id, deploy_runs[0]["dag_run_id"]), "the deploy run", 300,
                     log) == "success"
        with session_scope() as s:
            champion = get_alias(s, DOMAIN, "champion")
            assert champion.version == v2
            v2_tag = s.get(ModelVersion, champion.id).bento_model_tag
        assert httpx.get(f"{url}/metadata", timeout=30).json()["model_version"] == v2_tag
        events = {e["action"]: e for e in pipeline.audit_log(DOMAIN, limit=60)}
        approved = events["approved"]
        assert approved["actor"].startswith("airflow:") and "card reviewed" in approved["detail"]["reason"]
        assert approved["detail"]["shadow"]["mirrored"] >= 20
        assert {"trained", "registered", "shadow_started", "shadow_stopped", "canary_started",
                "canary_stopped", "promoted", "deployed"} <= set(events), sorted(events)
        # the release's lineage: the gate's decision, then the alias change with the person who approved it
        decisions = pipeline.release(DOMAIN, v2)["decisions"]
        assert [d["action"] for d in decisions if d["made_champion"]][-2:] == ["passed_gate", "released"]
        assert decisions[-1]["by"] == approved["actor"], decisions

        # a second challenger, rejected: nothing released, who and why recorded
        _, v3 = _challenger(root, "release-v3", nudge=0.02, score=3.0)
        run_id = _announce(api, v3)
        _answer(api, run_id, "Reject", "agreement too low for a diagnostic aid", log)
        assert _wait(lambda: _run_state(api, dag_id, run_id), "the rejected release run", 300, log) == "success"
        tasks = _tasks(api, dag_id, run_id)
        assert (tasks["decide"], tasks["canary"]) == ("skipped", "skipped"), tasks
        with session_scope() as s:
            assert get_alias(s, DOMAIN, "champion").version == v2
            decision = describe(s, DOMAIN)["audit_log"][0]
        assert (decision["action"], decision["version"]) == ("rejected", v3)
        assert decision["actor"].startswith("airflow:") and "diagnostic aid" in decision["reason"]
        assert pipeline.audit_log(DOMAIN, limit=1)[0]["action"] == "release_rejected"
        assert httpx.get(f"{url}/metadata", timeout=30).json()["model_version"] == v2_tag

        # and the release rolled back: the champion before it again, in the registry and the service, with the
        # client still sending
        rolled = pipeline.rollback(DOMAIN, "drill after the release", url)
        assert rolled["champion"] == bad and rolled["service"]["model_version"] == bad_tag
        assert pipeline.audit_verify()["ok"]
    finally:
        traffic.stop()
    assert traffic.failures == [] and {bad_tag, v2_tag} <= traffic.versions
