"""`mmops airflow` as an operator uses it: the real Airflow 3 server (scheduler, DAG processor, API server and UI)
on loopback with the project's DAGs. Through its REST API, with the login it prints, the test lists the DAGs,
switches the training DAG on, triggers it with params and waits for success; then headless Chromium, logged in
with the same token, renders the DAG's grid and saves a screenshot (var/test-artifacts/, not committed)."""

import asyncio
import base64
import json
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from mmops.processes import stop_group
from tests.conftest import REPO, free_port, make_project, mmops_env, run_mmops, venv_bin

pytestmark = pytest.mark.slow

ARTIFACTS = REPO / "var" / "test-artifacts"


def _wait_for_line(path: Path, pattern: str, proc: subprocess.Popen, timeout: float) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, path.read_text(errors="replace")) if path.exists() else None
        if found:
            return found
        assert proc.poll() is None, f"mmops airflow exited ({proc.returncode}): {path.read_text()[-3000:]}"
        time.sleep(1)
    raise AssertionError(f"no {pattern!r} within {timeout:.0f} s: {path.read_text()[-3000:]}")


async def _screenshot(url: str, token: str, profile: Path) -> tuple[bytes, str]:
    """Chromium, headless, driven over the DevTools protocol: the login cookie set, the page rendered, its
    text and a PNG back."""
    import websockets

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is needed: `make test` installs it (apt-get install chromium)")
    port = free_port()
    proc = subprocess.Popen([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                             "--disable-background-networking", "--disable-component-update", "--disable-sync",
                             f"--remote-debugging-port={port}", f"--user-data-dir={profile}",
                             "--window-size=1600,1000", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        targets = None
        for _ in range(60):
            try:
                targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
                break
            except httpx.HTTPError:
                await asyncio.sleep(0.5)
        assert targets, "chromium's DevTools endpoint did not answer"
        page = next(t for t in targets if t["type"] == "page")
        async with websockets.connect(page["webSocketDebuggerUrl"], max_size=64 * 2**20) as ws:
            counter = 0

            async def call(method: str, **params: object) -> dict:
                nonlocal counter
                counter += 1
                await ws.send(json.dumps({"id": counter, "method": method, "params": params}))
                while True:
                    msg = json.loads(await ws.recv())
                    if msg.get("id") == counter:
                        assert "error" not in msg, msg
                        return msg.get("result", {})

            await call("Network.enable")
            base = url.rsplit("/dags/", 1)[0]
            await call("Network.setCookie", name="_token", value=token, url=base + "/")
            await call("Page.navigate", url=url)
            text = ""
            for _ in range(90):  # the grid fills in once the UI has fetched the runs
                await asyncio.sleep(1)
                text = (await call("Runtime.evaluate", expression="document.body.innerText",
                                   returnByValue=True))["result"].get("value", "")
                if "gather" in text and "package" in text:
                    break
            await asyncio.sleep(2)
            shot = await call("Page.captureScreenshot", format="png")
            return base64.b64decode(shot["data"]), text
    finally:
        stop_group(proc)


def test_the_airflow_server_runs_the_training_dag_over_its_rest_api(tmp_path: Path) -> None:
    root = make_project(tmp_path / "proj", {"security": "security-faces"}, with_code=True)
    assert run_mmops(root, "data", "pull", "--domain", "security").returncode == 0
    port = free_port()
    out = root / "var" / "logs" / "mmops-airflow.out"
    out.parent.mkdir(parents=True)
    with out.open("wb") as fh:
        proc = subprocess.Popen([venv_bin("mmops"), "airflow", "--port", str(port)], cwd=root,
                                env=mmops_env(root, COLUMNS="200", AIRFLOW_HOME=str(root / "var" / "airflow"),
                                              AIRFLOW__CORE__DAGS_FOLDER=str(root / "dags")),
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        found = _wait_for_line(out, r"Airflow UI (\S+)\s+login (\S+) / (\S+)", proc, timeout=420)
        url, user, password = found.groups()
        assert url == f"http://127.0.0.1:{port}"
        resp = httpx.post(f"{url}/auth/token", json={"username": user, "password": password}, timeout=30)
        assert resp.status_code in (200, 201), resp.text
        token = resp.json()["access_token"]
        api = httpx.Client(base_url=f"{url}/api/v2", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert httpx.get(f"{url}/api/v2/dags", timeout=30).status_code == 401  # no token, no API

        dag_id = "mmops_train_security"
        dags: dict = {}
        for _ in range(120):  # the DAG processor parses the DAGs folder shortly after start
            dags = {d["dag_id"]: d for d in api.get("/dags", params={"limit": 100}).json()["dags"]}
            if {dag_id, "mmops_ingest_security", "mmops_monitor"} <= set(dags):
                break
            time.sleep(1)
        assert {dag_id, "mmops_ingest_security", "mmops_label_security", "mmops_monitor",
                "mmops_retrain_weekly"} <= set(dags), sorted(dags)
        assert dags[dag_id]["is_paused"] and "mmops" in {t["name"] for t in dags[dag_id]["tags"]}
        details = api.get(f"/dags/{dag_id}/details").json()
        assert details["owners"] == ["mmops"] and details["doc_md"] and set(details["params"]) == {"deploy", "resume"}

        assert api.patch(f"/dags/{dag_id}", json={"is_paused": False}).status_code == 200
        run = api.post(f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": {"deploy": False}})
        assert run.status_code in (200, 201), run.text
        run_id = run.json()["dag_run_id"]
        state = None
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            state = api.get(f"/dags/{dag_id}/dagRuns/{run_id}").json()["state"]
            if state in ("success", "failed"):
                break
            time.sleep(3)
        tasks = {t["task_id"]: t["state"] for t in
                 api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances").json()["task_instances"]}
        assert state == "success", (state, tasks, out.read_text()[-3000:])
        assert tasks == {"gather": "success", "validate": "success", "build": "success", "train": "success",
                         "evaluate": "success", "package": "success", "champion": "success",  # the first model
                         "release": "skipped"}  # security is not staged (params.yaml release.staged)
        log = api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/release/logs/1").text  # JSON lines
        assert "nothing to release" in log
        # the alias change is an Asset event, and it carries the run's deploy=false to the deploy DAG
        [asset] = api.get("/assets", params={"name_pattern": "mmops_security_champion"}).json()["assets"]
        [event] = api.get("/assets/events", params={"asset_id": asset["id"]}).json()["asset_events"]
        assert (event["source_dag_id"], event["source_task_id"]) == (dag_id, "champion")
        assert event["extra"] == {"version": 1, "deploy": False}

        png, text = asyncio.run(_screenshot(f"{url}/dags/{dag_id}", token, tmp_path / "chromium"))
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "airflow_grid.png").write_bytes(png)
        assert png.startswith(b"\x89PNG") and len(png) > 20_000
        assert dag_id in text and all(t in text for t in ("gather", "validate", "train", "package")), text[:2000]
    finally:  # Ctrl-C; mmops gives Airflow 60 s before it kills what is left
        stop_group(proc, grace=120, sig=signal.SIGINT)
    for _ in range(30):  # Ctrl-C stops the whole server, not only the mmops process
        if not any("api_server" in p and f"port:{port}" in p for p in _processes()):
            break
        time.sleep(1)
    else:
        raise AssertionError("Airflow's API server kept running after Ctrl-C")


def _processes() -> list[str]:
    return subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines()
