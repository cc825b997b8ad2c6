"""The trainer as users run it, in separate processes: killed with SIGKILL mid-epoch and resumed (same weights
as a run never interrupted), and distributed data parallel over two torchrun workers with gloo on CPU."""

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import HANG_S, catalog_sql, free_port, make_project, mmops_env, run_mmops, venv_bin

pytestmark = pytest.mark.slow

TRAIN = {"epochs": 6, "batch_size": 16, "patience": 6, "align_weight": 0.1, "fusion": "attention",
         "sensor_encoder": "cnn_gru", "grad_accum": 2}


def _mmops(root: Path, *args: str, fault: str | None = None) -> subprocess.CompletedProcess:
    return run_mmops(root, *args, fault=fault, OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The industrial pack (accelerometer + gyroscope) up to a dataset version."""
    root = make_project(tmp_path_factory.mktemp("train") / "proj", {"industrial": "industrial-imu"}, TRAIN)
    for stage in (("data", "pull"), ("ingest",), ("label",), ("validate",), ("build",)):
        proc = _mmops(root, *stage, "--domain", "industrial")
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return root


def _train(root: Path, *args: str, fault: str | None = None) -> dict:
    proc = _mmops(root, "train", "--domain", "industrial", "--json", *args, fault=fault)
    if fault:
        assert proc.returncode == -9, proc.stdout + proc.stderr  # SIGKILL, as kill -9 would
        return {}
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout[proc.stdout.index("{"):])


def test_a_run_killed_mid_epoch_resumes_to_the_same_model(built: Path) -> None:
    proc = _mmops(built, "train", "--domain", "industrial", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    clean = json.loads(proc.stdout[proc.stdout.index("{"):])
    history = (built / "artifacts" / "industrial" / "history.csv").read_text()
    # output piped (a CI log, a file): a line per epoch on stderr instead of a progress bar, never silence
    epochs = re.findall(r"^train industrial val_f1=\S+ train_loss=\S+ val_loss=\S+ epoch (\d+)/(\d+)$",
                        proc.stderr, re.M)
    assert [int(e) for e, _ in epochs] == list(range(1, len(history.splitlines()))), proc.stderr[-2000:]
    # 48 training records, batches of 16: 3 steps an epoch; step 11 is in the middle of epoch 4
    _train(built, fault="train.step:11")
    state = built / "artifacts" / "industrial" / "train_state" / "last.pt"
    assert state.exists()
    resumed = _train(built, "--resume")
    assert resumed["resumed_from_epoch"] == 3
    assert resumed["checkpoint_sha256"] == clean["checkpoint_sha256"]  # bit-identical weights
    assert resumed["val_metrics"] == clean["val_metrics"]
    assert (built / "artifacts" / "industrial" / "history.csv").read_text() == history

    # a checkpoint from other params is refused, not silently mixed in
    params = yaml.safe_load((built / "params.yaml").read_text())
    params["train"]["lr"] = 0.001
    (built / "params.yaml").write_text(yaml.safe_dump(params))
    try:
        proc = _mmops(built, "train", "--domain", "industrial", "--resume")
        assert proc.returncode != 0 and "belongs to another run" in proc.stdout + proc.stderr
    finally:
        params["train"]["lr"] = TRAIN.get("lr", 0.003)
        (built / "params.yaml").write_text(yaml.safe_dump(params))


def test_an_airflow_retry_of_a_killed_training_resumes_it(built: Path) -> None:
    """The training task's worker dies mid-epoch; Airflow retries the task (try 2): the retry continues from the
    last epoch checkpoint and ends with the weights of a run never interrupted. A first try never resumes."""
    import sys

    def task_body(try_number: int) -> dict:
        code = ("import json\nfrom mmops import orchestration\n"
                f"orchestration._try_number = lambda: {try_number}\n"
                "print('RESULT' + json.dumps(orchestration.run_stage_named('train')('industrial'), default=str))")
        proc = subprocess.run([sys.executable, "-c", code], cwd=built, env=mmops_env(built, OMP_NUM_THREADS="1"),
                              capture_output=True, text=True, timeout=HANG_S)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.split("RESULT", 1)[1])

    clean = _train(built)
    _train(built, fault="train.step:11")
    retried = task_body(2)
    assert retried["resumed_from_epoch"] == 3 and retried["checkpoint_sha256"] == clean["checkpoint_sha256"]
    _train(built, fault="train.step:11")
    first = task_body(1)
    assert first["resumed_from_epoch"] == 0 and first["checkpoint_sha256"] == clean["checkpoint_sha256"]


def test_a_build_killed_before_its_commit_reruns_to_the_same_version(tmp_path: Path) -> None:
    """kill -9 after the manifest is written, before the dataset version is committed: training refuses the
    uncommitted version with a clear message, and the rerun commits exactly the version a clean build makes."""
    root = make_project(tmp_path / "proj", {"industrial": "industrial-imu"}, TRAIN)
    for stage in (("data", "pull"), ("ingest",), ("label",), ("validate",)):
        proc = _mmops(root, *stage, "--domain", "industrial")
        assert proc.returncode == 0, proc.stdout + proc.stderr
    killed = _mmops(root, "build", "--domain", "industrial", fault="build.before_commit:1")
    assert killed.returncode == -9, killed.stdout + killed.stderr
    manifest = root / "artifacts" / "industrial" / "dataset" / "manifest.json"
    written = manifest.read_bytes()  # whole (written atomically), but not in the catalog
    assert catalog_sql(root, "select count(*) from dataset_versions") == [(0,)]
    refused = _mmops(root, "train", "--domain", "industrial")
    assert refused.returncode != 0 and "is not in the catalog with a passed gate" in refused.stdout + refused.stderr
    rerun = _mmops(root, "build", "--domain", "industrial", "--json")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    version = json.loads(rerun.stdout[rerun.stdout.index("{"):])["dataset_version"]
    assert catalog_sql(root, "select id from dataset_versions") == [(version,)]
    assert manifest.read_bytes() == written and not list(manifest.parent.glob(".*.tmp"))
    again = _mmops(root, "build", "--domain", "industrial")  # and once more: nothing changes
    assert again.returncode == 0 and catalog_sql(root, "select id from dataset_versions") == [(version,)]


def test_ddp_on_two_gloo_workers(built: Path) -> None:
    single = _train(built)
    ddp = _train(built, "--nproc", "2")
    assert ddp["world_size"] == 2 and ddp["device"] == "cpu"
    card = json.loads((built / "artifacts" / "industrial" / "model" / "model_card.json").read_text())
    assert card["world_size"] == 2 and card["checkpoint_sha256"] == ddp["checkpoint_sha256"]
    # the same global batch split over two ranks learns as well as one process does
    assert ddp["val_metrics"]["accuracy"] >= single["val_metrics"]["accuracy"] - 0.15
    assert ddp["val_metrics"]["accuracy"] >= 0.7
    ev = _mmops(built, "evaluate", "--domain", "industrial", "--json")
    assert ev.returncode == 0, ev.stdout + ev.stderr


def _node(root: Path, rank: int, port: int, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([venv_bin("mmops"), "train", "--domain", "industrial", "--json", "--nproc", "1",
                             "--nnodes", "2", "--node-rank", str(rank), "--master", f"127.0.0.1:{port}", *extra],
                            cwd=root, env=mmops_env(root, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_ddp_across_two_nodes_trains_what_one_node_with_two_workers_does(built: Path, tmp_path: Path) -> None:
    """Two machines of one worker each (two torchrun launchers meeting at node 0's address, each reading its
    own project folder, as after `dvc pull` on each) train the same weights as one machine with two workers;
    a node whose params differ makes every node refuse to start."""
    import shutil

    one_node = _train(built, "--nproc", "2")
    other = tmp_path / "node1"  # the second machine: its own copy of the project
    shutil.copytree(built, other, ignore=shutil.ignore_patterns("model", "train_state", "locks"))
    port = free_port()
    worker = _node(other, 1, port)
    head = _node(built, 0, port)
    out, err = head.communicate(timeout=HANG_S)
    w_out, w_err = worker.communicate(timeout=120)
    assert head.returncode == 0 and worker.returncode == 0, err[-3000:] + w_err[-3000:]
    two_nodes = json.loads(out[out.index("{"):])
    assert two_nodes["world_size"] == 2
    assert two_nodes["checkpoint_sha256"] == one_node["checkpoint_sha256"]
    assert json.loads(w_out[w_out.index("{"):]) == {"domain": "industrial", "node_rank": 1, "nnodes": 2, "workers": 1}
    assert not (other / "artifacts" / "industrial" / "model").exists()  # only node 0 writes the model
    [(workers, nodes)] = [(e["detail"]["workers"], e["detail"]["nodes"]) for e in json.loads(
        _mmops(built, "audit", "--domain", "industrial", "--limit", "1", "--json").stdout)]
    assert (workers, nodes) == (2, 2)

    params = yaml.safe_load((other / "params.yaml").read_text())
    params["train"]["lr"] = 0.0123
    (other / "params.yaml").write_text(yaml.safe_dump(params))
    port = free_port()
    worker, head = _node(other, 1, port), _node(built, 0, port)
    _, err = head.communicate(timeout=HANG_S)
    _, w_err = worker.communicate(timeout=120)
    assert head.returncode != 0 and worker.returncode != 0
    assert "the ranks do not train the same thing" in err + w_err
    bad = _mmops(built, "train", "--domain", "industrial", "--nnodes", "2")
    assert bad.returncode == 1 and "--master host:port" in bad.stderr and "Traceback" not in bad.stderr


def test_challenger_meets_the_champion_on_the_same_holdout(built: Path) -> None:
    """A second model is compared with the champion re-scored on the current test split; both decisions and a
    manual rollback are in the audit log, with lineage in the registry listing."""
    _train(built)
    first = _mmops(built, "evaluate", "--domain", "industrial", "--json")
    assert first.returncode == 0, first.stdout + first.stderr
    params = yaml.safe_load((built / "params.yaml").read_text())
    params["train"]["sensor_encoder"] = "cnn"
    (built / "params.yaml").write_text(yaml.safe_dump(params))
    try:
        _train(built)
    finally:
        params["train"]["sensor_encoder"] = TRAIN["sensor_encoder"]
        (built / "params.yaml").write_text(yaml.safe_dump(params))
    second = _mmops(built, "evaluate", "--domain", "industrial", "--json")
    assert second.returncode == 0, second.stdout + second.stderr
    reason = json.loads(second.stdout[second.stdout.index("{"):])["reason"]
    assert "both on the test split of industrial-" in reason
    listing = json.loads(_mmops(built, "registry", "--domain", "industrial", "--json").stdout)
    versions = {v["version"]: v for v in listing["versions"]}
    assert len(versions) >= 2
    assert all(v["dataset_version"].startswith("industrial-") and len(v["params_hash"]) == 64 for v in versions.values())
    assert sum("champion" in v["aliases"] for v in versions.values()) == 1
    proc = run_mmops(built, "promote", "--domain", "industrial", "--version", "1", "--reason", "rollback drill",
                     MMOPS_ACTOR="oncall@plant-7")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log = json.loads(_mmops(built, "registry", "--domain", "industrial", "--json").stdout)["audit_log"]
    assert log[0]["action"] == "manual" and log[0]["reason"] == "rollback drill" and log[0]["version"] == 1
    assert log[0]["actor"] == "oncall@plant-7"
    assert {e["action"] for e in log[1:]} <= {"promoted", "rejected"} and len(log) >= 3

    # the audit log: every stage that changed the project, in order, with who ran it
    events = json.loads(_mmops(built, "audit", "--domain", "industrial", "--limit", "500", "--json").stdout)
    actions = [e["action"] for e in events]
    assert actions[:4] == ["ingested", "labeled", "dataset_built", "trained"], actions
    ingest = json.loads((built / "artifacts" / "industrial" / "ingest.json").read_text())
    assert events[0]["detail"]["ingested"] == ingest["ingested"] > 0
    assert events[2]["subject"] == "dataset:" + json.loads(
        (built / "artifacts" / "industrial" / "dataset" / "manifest.json").read_text())["id"]
    trained = [e for e in events if e["action"] == "trained"]
    registered = [e for e in events if e["action"] == "registered"]
    assert len(trained) >= 2 and len(registered) >= 2 and len({e["detail"]["checkpoint_sha256"] for e in trained}) >= 2
    assert {e["detail"]["checkpoint_sha256"] for e in registered} <= {e["detail"]["checkpoint_sha256"] for e in trained}
    assert events[-1]["action"] == "promoted" and events[-1]["actor"] == "oncall@plant-7"
    assert events[-1]["subject"] == "model:v1"
    by_user = {e["actor"] for e in events[:-1]}
    assert len(by_user) == 1 and "@" in next(iter(by_user))  # the operating-system user at this host


@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16"])
def test_the_amp_training_step_runs_autocast_and_the_gradient_scaler(built: Path, dtype_name: str,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    """The CUDA AMP path (autocast; fp16 with a gradient scaler, bf16 without) is device-agnostic code: forced
    on here, on CPU, it must run mixed precision for real, keep fp32 master weights and still learn."""
    import torch
    from safetensors.torch import load_file

    from mmops import pipeline
    from mmops.config import get_settings, load_params
    from mmops.domains import load_domain
    from mmops.training import loop

    monkeypatch.setenv("MMOPS_HOME", str(built))
    dtype = getattr(torch, dtype_name)
    monkeypatch.setattr(loop, "amp_policy", lambda device, wanted: (True, dtype))
    updates: list[tuple[bool, float]] = []
    original = torch.amp.GradScaler.update

    def spy_update(self: torch.amp.GradScaler, *a: object, **kw: object) -> None:
        updates.append((self.is_enabled(), float(self.get_scale())))
        original(self, *a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(torch.amp.GradScaler, "update", spy_update)
    seen: set[torch.dtype] = set()

    def record(module: torch.nn.Module, args: object, out: object) -> None:
        if isinstance(module, torch.nn.Linear) and isinstance(out, torch.Tensor) and torch.is_grad_enabled():
            seen.add(out.dtype)

    hook = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        params = load_params().train.model_copy(update={"epochs": 8, "patience": 8, "device": "cpu"})
        result = loop.train_model(load_domain("industrial"), pipeline.load_manifest("industrial"),
                                  get_settings().data_dir, params, 0, tmp_path / "model")
    finally:
        hook.remove()
    assert dtype in seen  # the layers really ran in reduced precision
    if dtype == torch.float16:  # the scaler scaled every optimizer step (48 records, batch 16, accum 2)
        assert len(updates) == 8 * 2 and all(on and scale >= 1.0 for on, scale in updates)
    else:
        assert updates and not any(on for on, _ in updates)  # bf16 needs no loss scaling
    weights = load_file(str(tmp_path / "model" / "model.safetensors"))
    assert {t.dtype for t in weights.values() if t.is_floating_point()} == {torch.float32}
    assert result.val_metrics["accuracy"] >= 0.5  # 4 classes: chance is 0.25
