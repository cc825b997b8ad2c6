"""The per-epoch checkpoint of a training run (the weights, optimizer, scheduler, scaler, RNG states, history, the
best weights so far): written after every epoch, so that a run killed mid-epoch and resumed ends with the
same weights and metrics as one that was never interrupted.

A checkpoint holds what the run changed, not the whole model: the weights the run started from (pretrained
encoders, often frozen, and the seeded initialisation of the rest) are kept once in memory (Baseline), and a
tensor still equal to its start is named by its sha256 instead of being written again every epoch. A resume
rebuilds the same start (same seed, same pretrained files), checks each named tensor's hash, and loads the
stored ones over it. Checkpoints of the earlier layout (every tensor stored) still resume."""

from __future__ import annotations

import hashlib
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
LAYOUT = 2  # 2: changed tensors and the hashes of the rest; (absent) 1: every tensor


class Baseline:
    """The model's tensors as the run started them, on the CPU, and their sha256 (computed when first named)."""

    def __init__(self, model: Any) -> None:
        self.tensors = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        self._digests: dict[str, str] = {}

    def digest(self, name: str) -> str:
        import torch

        if name not in self._digests:
            raw = self.tensors[name].contiguous().reshape(-1).view(torch.uint8).numpy()
            self._digests[name] = hashlib.sha256(raw.data).hexdigest()
        return self._digests[name]

    def changed(self, state: dict[str, Any]) -> dict[str, Any]:
        """CPU copies of the tensors of `state` that differ from the start (all of those not in it)."""
        import torch

        out = {}
        for k, v in state.items():
            here = v.detach() if v.device.type == "cpu" else v.detach().to("cpu")
            start = self.tensors.get(k)
            if start is None or start.shape != here.shape or start.dtype != here.dtype or not torch.equal(start, here):
                out[k] = here.clone() if here.data_ptr() == v.data_ptr() else here
        return out

    def full(self, changed: dict[str, Any]) -> dict[str, Any]:
        """A whole state dict: the start with `changed` over it."""
        return {**self.tensors, **changed}

    def names(self, *changed: dict[str, Any]) -> dict[str, str]:
        """The sha256 of every start tensor one of `changed` leaves out (what a checkpoint refers to)."""
        return {k: self.digest(k) for k in self.tensors if any(k not in c for c in changed)}

    def check(self, named: dict[str, str], path: Path) -> None:
        """Refuse a checkpoint whose named tensors are not this start's (other pretrained weights, other code)."""
        differ = [k for k, d in named.items() if k not in self.tensors or self.digest(k) != d]
        if differ:
            raise ConfigError(f"{path} was written over other starting weights ({len(differ)} tensors differ, e.g. "
                              f"{differ[0]}): the pretrained weights or the model's code changed; train without "
                              "--resume to start over")


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
    baseline: Baseline | None = None  # the start best_state is relative to (None: best_state is whole)

    def best_weights(self) -> dict[str, Any]:
        """The best epoch's whole state dict."""
        assert self.best_state is not None
        return self.baseline.full(self.best_state) if self.baseline is not None else self.best_state

    def consider(self, epoch: int, f1: float, nll: float, model: Any, patience: int) -> None:
        """Keep this epoch's weights if they are the best so far; stop after `patience` epochs without.
        Small validation sets tie often, and the first epoch to reach a score is usually the least
        confident one: ties go to the lower validation loss."""
        if f1 > self.best_f1 + 1e-9 or (f1 > self.best_f1 - 1e-9 and nll < self.best_nll - 1e-4):
            self.best_f1, self.best_nll, self.best_epoch = f1, nll, epoch
            self.best_state = (self.baseline.changed(model.state_dict()) if self.baseline is not None else
                               {k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
        elif epoch - self.best_epoch >= patience:
            log.info("early stop at epoch %d (best %d)", epoch, self.best_epoch)
            self.stopped = True


def save(path: Path, key: str, epoch: int, model: Any, optim: Optimizer, gen: np.random.Generator,
         state: RunState, cuda_device: str | None, compact: bool = True) -> None:
    """Write the run's state atomically. compact (with state.baseline): only the tensors the run changed, and
    the hashes of the rest; off: every tensor (the earlier layout, kept for the benchmark's comparison)."""
    import torch

    from mmops.atomic import temp_path

    base = state.baseline
    if compact and base is not None:
        weights, best = base.changed(model.state_dict()), state.best_state
        layout: dict[str, Any] = {"layout": LAYOUT, "baseline": base.names(weights, *([best] if best else []))}
    else:
        weights, layout = model.state_dict(), {}
        best = state.best_weights() if state.best_state is not None else None
    payload = {
        "key": key, "epoch": epoch, "model": weights, "opt": optim.opt.state_dict(),
        "sched": optim.sched.state_dict(), "scaler": optim.scaler.state_dict(),
        "np_gen": json.dumps(gen.bit_generator.state), "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(cuda_device) if cuda_device else None,
        "history": json.dumps(state.history), "best_f1": state.best_f1, "best_nll": state.best_nll,
        "best_epoch": state.best_epoch, "best_state": best, "stopped": state.stopped,
        "data_s": state.data_s, "step_s": state.step_s, **layout}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    torch.save(payload, tmp)
    os.replace(tmp, path)


def restore(path: Path, key: str, resume: bool | str, model: Any, optim: Optimizer, gen: np.random.Generator,
            cuda_device: str | None, name: str) -> RunState:
    """The run's state: from the checkpoint when resuming one of the same run (`key`), else a fresh one.
    resume="auto" (a task's retry) starts over, saying so, when the checkpoint is another run's."""
    import torch

    baseline = Baseline(model)  # before anything is loaded: the start this run shares with its checkpoint
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
        return RunState(baseline=baseline)
    if st.get("layout") == LAYOUT:
        baseline.check(st["baseline"], path)
        model.load_state_dict(baseline.full(st["model"]))
        best = st["best_state"]
    else:  # the earlier layout: every tensor stored
        model.load_state_dict(st["model"])
        best = baseline.changed(st["best_state"]) if st["best_state"] is not None else None
    optim.opt.load_state_dict(st["opt"])
    optim.sched.load_state_dict(st["sched"])
    optim.scaler.load_state_dict(st["scaler"])
    gen.bit_generator.state = json.loads(st["np_gen"])
    torch.set_rng_state(st["torch_rng"])
    if cuda_device and st.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(st["cuda_rng"], device=cuda_device)
    log.info("resuming %s from epoch %d", name, st["epoch"])
    return RunState(json.loads(st["history"]), st["best_f1"], st["best_nll"], st["best_epoch"], best,
                    st["epoch"] + 1, st["stopped"], st["data_s"], st["step_s"], baseline)
