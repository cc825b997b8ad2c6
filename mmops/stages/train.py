"""Training as a stage: a run recorded in the catalog around mmops.training, on one process or under
torchrun (several workers, several nodes)."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mmops import audit
from mmops.catalog import DatasetVersion, TrainingRun, session_scope
from mmops.config import Settings
from mmops.context import artifacts, load_manifest
from mmops.errors import ConfigError, MmopsError, ValidationFailedError
from mmops.provenance import git_commit
from mmops.stages.common import Progress, jsonable, one_at_a_time, resolve
from mmops.stages.results import Trained


@dataclass(frozen=True)
class Nodes:
    """Where a distributed training runs: `nnodes` machines of `nproc` workers each, meeting at `master`
    (host:port of node 0, which records the run and writes the model). One machine: Nodes(nproc=N)."""

    nproc: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master: str | None = None

    def __post_init__(self) -> None:
        if self.nproc < 1 or self.nnodes < 1 or not 0 <= self.node_rank < self.nnodes:
            raise ConfigError(f"--node-rank {self.node_rank} of --nnodes {self.nnodes} (and --nproc >= 1) is not a "
                              "place in the cluster")
        if self.nnodes > 1:
            host, _, port = (self.master or "").rpartition(":")
            if not host or not port.isdigit():
                raise ConfigError("several nodes need --master host:port (node 0's address, the same on every node)")

    @property
    def distributed(self) -> bool:
        return self.nproc * self.nnodes > 1

    def torchrun_args(self) -> list[str]:
        if self.nnodes == 1:
            return ["--standalone", f"--nproc-per-node={self.nproc}"]
        host, _, port = (self.master or "").rpartition(":")
        # static rendezvous: node r's workers are global ranks r*nproc .. r*nproc+nproc-1, so rank 0 (the one
        # that writes) is on node 0, where the run is recorded
        return [f"--nnodes={self.nnodes}", f"--node-rank={self.node_rank}", f"--nproc-per-node={self.nproc}",
                f"--master-addr={host}", f"--master-port={port}"]


@one_at_a_time
def train(domain: str, progress: Progress = None, resume: bool | str = False,
          nodes: Nodes | None = None, dataset_version: str | None = None) -> Trained:
    """Train on a dataset version: the one named (build's `dataset_version`, as the training DAG hands it
    on), else the current one.

    resume: continue from the last epoch checkpoint of the same run ("auto": if there is one of this dataset
    and these params, else start over, as a task's retry does). nodes: distributed data parallel over
    `nodes.nproc` torchrun workers (gloo on CPU, NCCL on GPUs), on several machines with this one as node 0
    (the others run `join_training`); default one process."""
    from mmops.tasks import task_of
    from mmops.training import TrainResult

    nodes = nodes or Nodes()
    if nodes.node_rank != 0:
        raise ConfigError("only node 0 records a training run; the other nodes join it (join_training)")
    settings, params, pack = resolve(domain)
    manifest = load_manifest(domain, settings, dataset_version)
    with session_scope(settings.catalog_url) as session:
        dv = session.get(DatasetVersion, manifest.id)
        if dv is None or dv.validation_run_id is None:
            raise ValidationFailedError(f"dataset {manifest.id} is not in the catalog with a passed gate; "
                                        f"run `mmops build --domain {domain}`")
        run = TrainingRun(domain=domain, dataset_version_id=manifest.id, params=params.train.model_dump(),
                          params_hash="", git_commit=git_commit(settings.root), device="?", status="running")
        session.add(run)
    out = artifacts(domain, settings) / "model"
    try:
        if nodes.distributed:
            result = TrainResult(**_train_distributed(domain, nodes, resume, settings, manifest.id))
        else:
            result = task_of(pack.task).train(pack, manifest, settings.data_dir, params.train, params.seed, out,
                                              progress, resume=resume)
    except BaseException as exc:
        with session_scope(settings.catalog_url) as session:
            session.get(TrainingRun, run.id).status = "failed"  # type: ignore[union-attr]
            audit.record(session, "training_failed", domain, f"training_run:{run.id}", dataset_version=manifest.id,
                         error=f"{type(exc).__name__}: {exc}"[:500])
        raise
    with session_scope(settings.catalog_url) as session:
        row = session.get(TrainingRun, run.id)
        assert row is not None
        row.status, row.device, row.metrics = "finished", result.device, result.val_metrics
        row.params_hash, row.checkpoint_sha256 = result.params_hash, result.checkpoint_sha256
        row.checkpoint_path, row.finished_at = str(result.model_dir), datetime.now(UTC)
        audit.record(session, "trained", domain, f"training_run:{run.id}", dataset_version=manifest.id,
                     checkpoint_sha256=result.checkpoint_sha256, device=result.device, params_hash=result.params_hash,
                     git_commit=row.git_commit, workers=nodes.nproc * nodes.nnodes, nodes=nodes.nnodes)
    return Trained(training_run=run.id, dataset_version=manifest.id, **jsonable(result))


def _train_distributed(domain: str, nodes: Nodes, resume: bool | str, settings: Settings,
                       dataset_version: str | None = None) -> dict[str, Any]:
    """Run the trainer under torchrun; rank 0 hands its TrainResult back through a JSON file."""
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="mmops-ddp-") as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", *nodes.torchrun_args(),
               "-m", "mmops.training", "--domain", domain, "--result", str(result)] + (
                   ["--resume", "auto"] if resume == "auto" else ["--resume"] if resume else []) + (
                   ["--dataset", dataset_version] if dataset_version else [])
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        proc = subprocess.run(cmd, cwd=settings.root, env=env)
        if nodes.node_rank != 0:
            if proc.returncode != 0:
                raise MmopsError(f"this node's training workers failed (torchrun exit {proc.returncode}); see the "
                                 "log above and node 0's")
            return {}
        if proc.returncode != 0 or not result.exists():
            raise MmopsError(f"distributed training failed (torchrun exit {proc.returncode}); see the log above")
        raw: dict[str, Any] = json.loads(result.read_text(encoding="utf-8"))
    raw["model_dir"] = Path(raw["model_dir"])
    return raw


def join_training(domain: str, nodes: Nodes, resume: bool = False, dataset_version: str | None = None) -> dict[str, Any]:
    """Node 1.. of a multi-node training: run this machine's workers until node 0's run ends. They read this
    machine's copy of the dataset (`dvc pull`, or a shared filesystem) and write nothing: node 0 records the
    run and writes the model. Every rank checks that all hold the same dataset version and parameters."""
    if nodes.node_rank == 0 or nodes.nnodes < 2:
        raise ConfigError("join_training is for nodes 1.. of a multi-node run; node 0 runs `mmops train`")
    settings, _, _ = resolve(domain)
    load_manifest(domain, settings, dataset_version)  # no dataset here: say so before the others wait for this node
    _train_distributed(domain, nodes, resume, settings, dataset_version)
    return {"domain": domain, "node_rank": nodes.node_rank, "nnodes": nodes.nnodes, "workers": nodes.nproc}
