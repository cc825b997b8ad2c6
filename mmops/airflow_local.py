"""The project's own Airflow: the environment it runs in, its CLI, and `mmops airflow` (a local
`airflow standalone` with the project's DAGs, which prints where to log in).

Everything stays inside the project: AIRFLOW_HOME is var/airflow, the DAGs folder is dags/, examples are off,
the metadata DB is SQLite there (a deployment's own AIRFLOW__* settings win: docs/scaling.md).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from mmops.config import Settings
from mmops.errors import MmopsError

PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"  # written by Airflow's simple auth manager


def airflow_env(settings: Settings, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the project's Airflow runs in (what `make` exports; a deployment's own settings win)."""
    env = {**os.environ, "MMOPS_HOME": str(settings.root), **(extra or {})}
    env.setdefault("AIRFLOW_HOME", str(settings.var_dir / "airflow"))
    env.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(settings.root / "dags"))
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    # `airflow standalone` starts its components as `airflow ...` from PATH: this environment's, first
    bin_dir = str(Path(sys.executable).parent)
    if env.get("PATH", "").split(os.pathsep)[0] != bin_dir:
        env["PATH"] = os.pathsep.join([bin_dir, *filter(None, [env.get("PATH")])])
    return env


@dataclass
class Airflow:
    """The project's Airflow through its CLI; every command's output is appended to `log_path`."""

    env: dict[str, str]
    log_path: Path
    cwd: Path

    def run(self, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
        cmd = [str(Path(sys.executable).parent / "airflow"), *args]
        proc = subprocess.run(cmd, env=self.env, cwd=self.cwd, capture_output=True, text=True, timeout=timeout)
        with self.log_path.open("a", encoding="utf-8") as log:
            log.write(f"\n$ airflow {' '.join(args)}  (exit {proc.returncode})\n{proc.stdout}{proc.stderr}")
        return proc

    def prepare(self) -> None:
        from mmops.orchestration import TRAINING_POOL

        for args in (("db", "migrate"), ("pools", "set", TRAINING_POOL, "1", "mmops training runs at once"),
                     ("dags", "reserialize")):
            proc = self.run(*args)
            if proc.returncode != 0:
                raise MmopsError(f"airflow {' '.join(args)} failed (exit {proc.returncode}); see {self.log_path}")

    def test_dag(self, dag_id: str, conf: dict[str, Any] | None = None) -> None:
        proc = self.run("dags", "test", dag_id, *(["-c", json.dumps(conf)] if conf else []))
        if proc.returncode != 0:
            raise MmopsError(f"airflow dags test {dag_id} failed (exit {proc.returncode}); see {self.log_path}")

    def state(self, domain: str, consume: bool = False) -> dict[str, Any]:
        code = ("import json, sys\nfrom mmops.orchestration import loop_state\n"
                "print('STATE' + json.dumps(loop_state(sys.argv[1], sys.argv[2] == '1'), default=str))")
        proc = subprocess.run([sys.executable, "-c", code, domain, "1" if consume else "0"], env=self.env,
                              cwd=self.cwd, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0 or "STATE" not in proc.stdout:
            raise MmopsError(f"reading Airflow's state failed: {proc.stderr[-1500:]}")
        state: dict[str, Any] = json.loads(proc.stdout.rsplit("STATE", 1)[1])
        return state


def login(env: dict[str, str]) -> tuple[str, str] | None:
    """The admin login that Airflow's simple auth manager generated (user, password), once it has."""
    path = Path(env["AIRFLOW_HOME"]) / PASSWORDS_FILE
    try:
        users = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(users, dict) or not users:
        return None
    user = "admin" if "admin" in users else next(iter(users))
    return user, str(users[user])


def standalone(settings: Settings, port: int, host: str, console: Console, training_slots: int = 1) -> int:
    """Run `airflow standalone` for the project until interrupted: migrate the metadata DB, create the
    training pool, start scheduler + DAG processor + API server (the UI), print the URL and the login."""
    from mmops.orchestration import TRAINING_POOL
    from mmops.processes import stop_group
    from mmops.serving.client import wait_ready

    url = f"http://{host}:{port}"
    env = airflow_env(settings, {"AIRFLOW__API__PORT": str(port), "AIRFLOW__API__HOST": host,
                                 "AIRFLOW__API__BASE_URL": url})
    log_path = settings.var_dir / "logs" / "airflow-standalone.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    airflow = Airflow(env, settings.var_dir / "logs" / "airflow.log", settings.root)
    for args in (("db", "migrate"),
                 ("pools", "set", TRAINING_POOL, str(training_slots), "mmops training runs at once (one per GPU)")):
        if airflow.run(*args).returncode != 0:
            raise MmopsError(f"airflow {' '.join(args)} failed; see {airflow.log_path}")
    console.print(f"starting Airflow for {settings.root} (AIRFLOW_HOME={env['AIRFLOW_HOME']}); log: {log_path}",
                  highlight=False)
    # A SIGTERM to this process (a supervisor, `kill`) stops Airflow as Ctrl-C does: through `finally`.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    with log_path.open("ab") as log:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "airflow"), "standalone"], env=env,
                                cwd=settings.root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(url, proc, timeout=300, path="/api/v2/monitor/health", name="airflow standalone")
        who = login(env)
        console.print(f"[bold]Airflow UI[/bold] {url}   login [bold]{who[0]}[/bold] / [bold]{who[1]}[/bold]"
                      if who else f"[bold]Airflow UI[/bold] {url}   (login: see {env['AIRFLOW_HOME']}/{PASSWORDS_FILE})",
                      highlight=False, soft_wrap=True)
        console.print("DAGs start paused: switch one on in the UI (or `airflow dags unpause <id>`). Ctrl-C stops.",
                      highlight=False)
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        # Airflow runs in a process group of its own (a terminal's Ctrl-C reaches this process first): all of
        # it is stopped, not only `airflow standalone`, whose scheduler, API server and workers outlive it.
        console.print("stopping Airflow...", highlight=False)
        stopped = stop_group(proc, grace=60)
        console.print(str(stopped), highlight=False, soft_wrap=True)
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
