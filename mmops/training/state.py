"""The per-epoch checkpoint of a training run (model, optimizer, scheduler, scaler, RNG states, history, the
best weights so far): written after every epoch, so that a run killed mid-epoch and resumed ends with the
same weights and metrics as one that was never interrupted."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmops.errors import ConfigError
from mmops.training.setup import Optimizer

log = logging.getLogger(__name__)

STATE_FILE = "last.pt"


@dataclass
class RunState:
    """Where a run stands: its history, the best epoch so far (validation macro-F1, ties broken by
    validation loss) and its weights, the next epoch, whether it stopped early, and its timings."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_f1: float = -1.0
    best_nll: float = float("inf")
    best_epoch: int = 0
    best_state: dict[str, Any] | None = None
    start: int = 1
    stopped: bool = False
    data_s: float = 0.0  # wall time getting batches ready
    step_s: float = 0.0  # wall time of whole steps (on CUDA: approximate, async)

    def consider(self, epoch: int, f1: float, nll: float, model: Any, patience: int) -> None:
        """Keep this epoch's weights if they are the best so far; stop after `patience` epochs without.
        Small validation sets tie often, and the first epoch to reach a score is usually the least
        confident one: ties go to the lower validation loss."""
        if f1 > self.best_f1 + 1e-9 or (f1 > self.best_f1 - 1e-9 and nll < self.best_nll - 1e-4):
            self.best_f1, self.best_nll, self.best_epoch = f1, nll, epoch
            self.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        elif epoch - self.best_epoch >= patience:
            log.info("early stop at epoch %d (best %d)", epoch, self.best_epoch)
            self.stopped = True


def save(path: Path, key: str, epoch: int, model: Any, optim: Optimizer, gen: np.random.Generator,
         state: RunState, cuda_device: str | None) -> None:
    import torch

    from mmops.atomic import temp_path

    payload = {
        "key": key, "epoch": epoch, "model": model.state_dict(), "opt": optim.opt.state_dict(),
        "sched": optim.sched.state_dict(), "scaler": optim.scaler.state_dict(),
        "np_gen": json.dumps(gen.bit_generator.state), "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(cuda_device) if cuda_device else None,
        "history": json.dumps(state.history), "best_f1": state.best_f1, "best_nll": state.best_nll,
        "best_epoch": state.best_epoch, "best_state": state.best_state, "stopped": state.stopped,
        "data_s": state.data_s, "step_s": state.step_s}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    torch.save(payload, tmp)
    os.replace(tmp, path)


def restore(path: Path, key: str, resume: bool | str, model: Any, optim: Optimizer, gen: np.random.Generator,
            cuda_device: str | None, name: str) -> RunState:
    """The run's state: from the checkpoint when resuming one of the same run (`key`), else a fresh one.
    resume="auto" (a task's retry) starts over, saying so, when the checkpoint is another run's."""
    import torch

    st = torch.load(path, map_location="cpu", weights_only=True) if resume and path.exists() else None
    if st is not None and st["key"] != key:
        if resume != "auto":
            raise ConfigError(f"{path} belongs to another run (dataset, params or world size changed); "
                              "train without --resume to start over")
        log.warning("%s belongs to another run (dataset, params or world size changed): starting from scratch",
                    path)
        st = None
    if st is None:
        if resume and not path.exists():
            log.info("no checkpoint at %s: starting from scratch", path)
        return RunState()
    model.load_state_dict(st["model"])
    optim.opt.load_state_dict(st["opt"])
    optim.sched.load_state_dict(st["sched"])
    optim.scaler.load_state_dict(st["scaler"])
    gen.bit_generator.state = json.loads(st["np_gen"])
    torch.set_rng_state(st["torch_rng"])
    if cuda_device and st.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(st["cuda_rng"], device=cuda_device)
    log.info("resuming %s from epoch %d", name, st["epoch"])
    return RunState(json.loads(st["history"]), st["best_f1"], st["best_nll"], st["best_epoch"], st["best_state"],
                    st["epoch"] + 1, st["stopped"], st["data_s"], st["step_s"])
