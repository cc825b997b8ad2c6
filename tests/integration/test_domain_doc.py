"""docs/adding-a-domain.md, run as written: a fourth domain from configuration alone, landed, gated, trained,
packaged, served and asked about held-out recordings; then the same project through DVC and Airflow."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mmops.processes import stop_group
from tests.conftest import HANG_S, REPO, free_port, make_project, mmops_env, run_mmops, venv_bin

pytestmark = [pytest.mark.slow]

DOC = REPO / "docs" / "adding-a-domain.md"
ARTIFACTS = REPO / "var" / "test-artifacts"
BUNDLED = {"medical": "medical-cxr", "security": "security-faces", "industrial": "industrial-imu"}


def doc_script(text: str) -> tuple[dict[str, str], str]:
    """The page's `# file:` blocks (path -> content) and its bash blocks joined into one script, in order."""
    files: dict[str, str] = {}
    bash: list[str] = []
    for lang, body in re.findall(r"^```(\w+)\n(.*?)^```$", text, re.S | re.M):
        first, _, rest = body.partition("\n")
        if first.startswith("# file: "):
            files[first.removeprefix("# file: ").strip()] = rest
        elif lang == "bash":
            bash.append(body)
    return files, "\n".join(bash)


def test_the_page_has_what_the_test_runs() -> None:
    files, script = doc_script(DOC.read_text())
    assert set(files) == {"land_plaid.py", "domains/appliances.yaml"}
    for step in ("mmops domain add appliances", "mmops run --domain appliances", "mmops serve", "mmops predict",
                 "mmops registry --domain appliances", "train:"):
        assert step in script, step


def test_adding_a_domain_as_the_doc_says(tmp_path: Path) -> None:
    root = make_project(tmp_path / "proj", dict(BUNDLED), with_code=True)
    (root / "params.yaml").write_text((REPO / "params.yaml").read_text())  # as committed: defaults, comments
    for cmd in (["git", "init", "-q"], [venv_bin("dvc"), "init", "-q"]):
        subprocess.run(cmd, cwd=root, check=True, capture_output=True)
    files, script = doc_script(DOC.read_text())
    env = {**mmops_env(root), "PATH": f"{Path(venv_bin('mmops')).parent}{os.pathsep}{os.environ['PATH']}",
           "PORT": str(free_port())}
    proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c", _run_blocks(files, script)], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=HANG_S)
    finally:
        stop_group(proc)  # and a server the page left running
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "adding-a-domain.log").write_text(output)  # what the page printed, for a reader of CI
    assert proc.returncode == 0, output[-6000:]

    # the page's own steps did what it says
    assert "appliances: listed in params.yaml" in output
    assert "appliances: ~" in (root / "params.yaml").read_text()
    assert "# domain -> " in (root / "params.yaml").read_text()  # comments kept
    assert "gate failed: appliances" in output and "n_samples" in output
    metrics = json.loads((root / "artifacts" / "appliances" / "metrics.json").read_text())
    assert metrics["accuracy"] > 2 / 11, metrics  # 11 classes: well above chance
    assert re.search(r"\d+ of 20 as labeled", output), output[-3000:]
    # the pack's own training params made a second version, scored on the same split; the better one is champion
    registry = json.loads(run_mmops(root, "registry", "--domain", "appliances", "--json").stdout)
    versions = {v["version"]: v for v in registry["versions"]}
    assert sorted(versions) == [1, 2] and versions[1]["params_hash"] != versions[2]["params_hash"]
    champion = next(v for v in versions.values() if "champion" in v["aliases"])
    assert champion["metrics"]["macro_f1"] == max(v["metrics"]["macro_f1"] for v in versions.values())

    # the same held-out recordings, answered by the packaged model served once more (JSON for a script)
    port = free_port()
    server = subprocess.Popen([venv_bin("mmops"), "serve", "--domain", "appliances", "--port", str(port)],
                              cwd=root, env=mmops_env(root), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        from mmops.serving.client import wait_ready

        wait_ready(f"http://127.0.0.1:{port}", server)
        answer = run_mmops(root, "predict", "--domain", "appliances", "--url", f"http://127.0.0.1:{port}",
                           "--json", "holdout/appliances")
        assert answer.returncode == 0, answer.stderr
        result = json.loads(answer.stdout)
        assert len(result["predictions"]) == 20 and result["expected"] == 20
        classes = set(yaml_classes(root))
        assert all(p["label"] in classes and p["model_version"] for p in result["predictions"])
        assert result["correct"] >= 4, result["correct"]  # chance: 20 / 11
        assert not stop_group(server).killed  # `mmops serve` is the server: a signal stops all of it
    finally:
        stop_group(server)

    # DVC: the domain's stages run alone; the landing folder (your files) survives `dvc repro`
    landed = sorted((root / "landing" / "appliances").rglob("*.csv"))
    dvc = subprocess.run([venv_bin("dvc"), "repro", "ingest@appliances"], cwd=root, env=env, capture_output=True,
                         text=True, timeout=HANG_S)
    assert dvc.returncode == 0, dvc.stdout[-3000:] + dvc.stderr[-3000:]
    assert "Running stage 'domain@appliances'" in dvc.stdout and "Running stage 'pull@appliances'" in dvc.stdout
    assert "@security" not in dvc.stdout
    assert sorted((root / "landing" / "appliances").rglob("*.csv")) == landed
    pack = json.loads((root / "artifacts" / "appliances" / "domain.json").read_text())
    assert pack["modalities"][0]["length"] == 200 and pack["modalities"][0]["scale"] == "symlog"

    # Airflow: the DAGs take the domain in from params.yaml
    code = ("from airflow.dag_processing.dagbag import DagBag\n"
            f"bag = DagBag({str(root / 'dags')!r})\n"
            "assert not bag.import_errors, bag.import_errors\n"
            "print(sorted(bag.dags))\n"
            "print([t.task_id for t in bag.dags['mmops_retrain_weekly'].tasks if t.task_id.startswith('appl')])")
    dags = subprocess.run([sys.executable, "-c", code], env={**env, "AIRFLOW_HOME": str(root / "var" / "airflow"),
                                                             "AIRFLOW__CORE__LOAD_EXAMPLES": "False"},
                          capture_output=True, text=True, timeout=HANG_S)
    assert dags.returncode == 0, dags.stderr[-3000:]
    for dag_id in ("mmops_ingest_appliances", "mmops_label_appliances", "mmops_train_appliances"):
        assert dag_id in dags.stdout
    assert "appliances.train" in dags.stdout and "appliances.champion" in dags.stdout
    assert "mmops_deploy_appliances" in dags.stdout


def _run_blocks(files: dict[str, str], script: str) -> str:
    """A bash script that writes the page's files, then runs its commands."""
    writes = [f"mkdir -p \"$(dirname {path!r})\"\ncat > {path!r} <<'MMOPS_DOC_EOF'\n{body}MMOPS_DOC_EOF"
              for path, body in files.items()]
    return "\n".join([*writes, script])


def yaml_classes(root: Path) -> list[str]:
    import yaml

    return yaml.safe_load((root / "domains" / "appliances.yaml").read_text())["classes"]
