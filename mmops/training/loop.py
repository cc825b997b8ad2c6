"""The training loop: epochs over the train split (sharded across ranks), validation after each, model
selection and early stopping, a checkpoint per epoch; then the best weights, their cross-modal alignment,
and the output folder (safetensors weights, the model card, the history beside it)."""

from __future__ import annotations

import csv
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmops import __version__, faults
from mmops.card import ModelCard
from mmops.config import TrainParams
from mmops.datasets.build import Manifest
from mmops.datasets.tensors import Batch, Preprocessor, collate, load_split
from mmops.domains import DomainPack
from mmops.evaluation import classification_metrics
from mmops.inference import WEIGHTS, predict_batch, resolve_device, to_device
from mmops.modalities import kind_of
from mmops.training import state as checkpoint
from mmops.training.distributed import DistContext, check_ranks_agree, dist_from_env
from mmops.training.setup import (
    Optimizer,
    amp_policy,
    backbone_features,
    frozen_backbones,
    initial_model,
    model_arch,
    params_hash,
    seed_everything,
)

Progress = Callable[[int, int, dict[str, float]], None] | None


@dataclass
class TrainResult:
    model_dir: Path
    device: str
    epochs_run: int
    best_epoch: int
    val_metrics: dict[str, float | None]
    checkpoint_sha256: str
    params_hash: str
    samples_per_s: float = 0.0  # training steps only (validation excluded)
    data_wait_share: float = 0.0  # share of step time spent getting the batch onto the device
    world_size: int = 1
    resumed_from_epoch: int = 0
    alignment: dict[str, dict[str, float]] = field(default_factory=dict)  # val cross-modal recall@k


@dataclass
class TrainData:
    """Decoded records (modality -> value) and class indices for training and validation."""

    train: list[dict[str, Any]]
    train_y: list[int]
    val: list[dict[str, Any]]
    val_y: list[int]
    dataset_id: str
    split_counts: dict[str, int] = field(default_factory=dict)


def train_model(pack: DomainPack, manifest: Manifest, data_root: Path, params: TrainParams, seed: int,
                out_dir: Path, progress: Progress = None, resume: bool | str = False,
                state_dir: Path | None = None) -> TrainResult:
    """Train on a dataset version's train split, select on its val split."""
    class_index = {c: i for i, c in enumerate(pack.classes)}
    train_rows, val_rows = manifest.split("train"), manifest.split("val")
    data = TrainData(load_split(pack, data_root, train_rows), [class_index[r["label"]] for r in train_rows],
                     load_split(pack, data_root, val_rows), [class_index[r["label"]] for r in val_rows],
                     manifest.id, manifest.split_counts)
    return fit(pack, data, params, seed, out_dir, progress, resume, state_dir)


@dataclass
class _Run:
    """What every epoch of one run uses."""

    pack: DomainPack
    params: TrainParams
    ctx: DistContext
    device: str
    model: Any
    optim: Optimizer
    loss_fn: Any
    gen: np.random.Generator
    use_amp: bool
    amp_dtype: Any
    channels_last: bool
    key: str
    state_path: Path

    @property
    def cuda_device(self) -> str | None:
        return self.device if self.device.startswith("cuda") else None


def fit(pack: DomainPack, data: TrainData, params: TrainParams, seed: int, out_dir: Path, progress: Progress = None,
        resume: bool | str = False, state_dir: Path | None = None) -> TrainResult:
    ctx = dist_from_env()
    seed_everything(seed)
    device = resolve_device(params.device)
    if device == "cuda" and ctx.world > 1:
        device = f"cuda:{ctx.local_rank}"
    arch = model_arch(pack, params)
    prep = Preprocessor(text_encoder=arch["text_encoder"]).fit(
        pack, {m: [r[m] for r in data.train if m in r] for m in pack.modality_names})
    train, val = collate(pack, prep, data.train, data.train_y), collate(pack, prep, data.val, data.val_y)
    assert train.labels is not None and val.labels is not None
    model, init = initial_model(pack, arch, params)
    p_dict = {"seed": seed, **params.model_dump()}
    run = _start(pack, params, ctx, device, model, train, seed,
                 params_hash({"dataset": data.dataset_id, "params": p_dict, "world": ctx.world}),
                 (state_dir or out_dir.parent / "train_state") / checkpoint.STATE_FILE)
    check_ranks_agree(ctx, run.key, data.dataset_id)
    st = checkpoint.restore(run.state_path, run.key, resume, model, run.optim, run.gen, run.cuda_device, pack.name)
    resumed_from = st.start - 1
    cached = _epochs(run, st, train, val, progress)
    best_weights = st.best_weights()
    model.load_state_dict(best_weights)
    alignment = _alignment(model, val, device, cached)
    best = st.history[st.best_epoch - 1]
    val_metrics: dict[str, float | None] = {"accuracy": best["val_accuracy"], "macro_f1": best["val_macro_f1"]}
    temperature, isotonic = _calibrate(model, val, device, cached, val_metrics)
    ckpt_sha = ""
    if ctx.main:
        ckpt_sha = _write_weights(out_dir, best_weights)
        ModelCard(
            mmops_version=__version__, domain=pack.name, intended_use=pack.description, classes=list(pack.classes),
            domain_pack=pack.model_dump(mode="json"),
            input_spec={m.name: m.model_dump(mode="json") for m in pack.modalities}, arch=arch, init=init,
            preprocessor=prep.to_json(), dataset_version=data.dataset_id, dataset_split_counts=data.split_counts,
            params=p_dict, params_hash=params_hash(p_dict), checkpoint_sha256=ckpt_sha, best_epoch=st.best_epoch,
            world_size=ctx.world, val_metrics=val_metrics, val_alignment=alignment, temperature=temperature,
            isotonic=isotonic,
        ).write(out_dir)
        _write_history(out_dir.parent / "history.csv", st.history)
    if ctx.world > 1:
        import torch.distributed as dist

        dist.barrier()
    n_samples = len(train) * (len(st.history) - resumed_from)
    return TrainResult(out_dir, device, len(st.history), st.best_epoch, val_metrics, ckpt_sha, params_hash(p_dict),
                       round(n_samples / st.step_s, 1) if st.step_s else 0.0,
                       round(st.data_s / st.step_s, 4) if st.step_s else 0.0, ctx.world, resumed_from, alignment)


def _start(pack: DomainPack, params: TrainParams, ctx: DistContext, device: str, model: Any, train: Batch, seed: int,
           key: str, state_path: Path) -> _Run:
    """The model on its device, the class-weighted loss, the optimizer, the shuffling generator."""
    import torch

    model.to(device)
    channels_last = params.channels_last and any(kind_of(m).channels_last for m in pack.modalities)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    assert train.labels is not None
    counts = np.bincount(train.labels, minlength=len(pack.classes)).astype(np.float32)
    weights = torch.tensor(counts.sum() / np.maximum(counts, 1) / len(counts), device=device)
    use_amp, amp_dtype = amp_policy(device, params.amp)
    optim = Optimizer.make(model, params, device, use_amp, amp_dtype)
    return _Run(pack, params, ctx, device, model, optim, torch.nn.CrossEntropyLoss(weight=weights),
                np.random.default_rng(seed), use_amp, amp_dtype, channels_last, key, state_path)


def _epochs(run: _Run, st: checkpoint.RunState, train: Batch, val: Batch, progress: Progress) -> tuple[Any, ...]:
    """Train from st.start until the last epoch or an early stop; returns the frozen backbones' cached
    features of the last phase (frozen names, train features, val features)."""
    model, params, ctx = run.model, run.params, run.ctx
    ddp: Any = None
    cached: tuple[list[str], dict[str, Any], dict[str, Any]] = ([], {}, {})
    assert val.labels is not None
    for epoch in range(st.start, params.epochs + 1):
        if st.stopped:
            break
        frozen = frozen_backbones(run.pack, model, params, epoch)
        if frozen != cached[0] or ddp is None:
            for m, enc in dict(model.encoders).items():
                for p in enc.backbone.parameters():
                    p.requires_grad_(m not in frozen)
            cached = (frozen, backbone_features(model, train, frozen, run.device),
                      backbone_features(model, val, frozen, run.device))
            ddp = _wrapped(model, ctx, run.cuda_device is not None)
        train_loss = _train_epoch(run, ddp, st, train, cached[1])
        run.optim.sched.step()
        val_probs, _ = predict_batch(model, val, run.device, cached[2])
        val_m = classification_metrics(val.labels, val_probs, list(run.pack.classes))
        val_nll = float(-np.log(np.clip(val_probs[np.arange(len(val)), val.labels], 1e-7, 1)).mean())
        row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_nll,
               "val_accuracy": val_m["accuracy"], "val_macro_f1": val_m["macro_f1"], "frozen": len(frozen)}
        st.history.append(row)
        if progress and ctx.main:
            progress(epoch, params.epochs, row)
        st.consider(epoch, val_m["macro_f1"], val_nll, model, params.patience)
        if ctx.main:
            checkpoint.save(run.state_path, run.key, epoch, model, run.optim, run.gen, st, run.cuda_device)
        faults.point("train.epoch_end")
    return cached


def _wrapped(model: Any, ctx: DistContext, on_cuda: bool) -> Any:
    """The model as the steps call it: under DDP with several ranks (re-wrapped whenever the trainable set
    changes: DDP registers it at construction)."""
    if ctx.world <= 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[ctx.local_rank] if on_cuda else None)


def _train_epoch(run: _Run, ddp: Any, st: checkpoint.RunState, train: Batch, feats_cache: dict[str, Any]) -> float:
    """One pass over this rank's shard of a shuffled order; returns the mean training loss."""
    import torch

    from mmops.models import alignment_loss

    model, params, ctx, optim = run.model, run.params, run.ctx, run.optim
    model.train()
    order = run.gen.permutation(len(train))
    if ctx.world > 1:  # equal shards: pad by wrapping around, as DistributedSampler does
        total_len = -(-len(order) // ctx.world) * ctx.world
        order = np.concatenate([order, order[: total_len - len(order)]])[ctx.rank :: ctx.world]
    per_rank_bs = -(-params.batch_size // ctx.world)
    batches = [order[i : i + per_rank_bs] for i in range(0, len(order), per_rank_bs)]
    dev_type = torch.device(run.device).type
    total, seen = 0.0, 0
    optim.opt.zero_grad(set_to_none=True)
    for b, idx in enumerate(batches):
        faults.point("train.step")
        started = time.perf_counter()
        inputs, masks, lengths, feats, labels = to_device(train, idx, run.device, run.channels_last, feats_cache)
        ready = time.perf_counter()
        with torch.autocast(device_type=dev_type, dtype=run.amp_dtype, enabled=run.use_amp):
            logits, embs, present = ddp(inputs, masks, lengths, feats, return_embeddings=True)
            loss = run.loss_fn(logits.float(), labels)
            if model.projections is not None and params.align_weight > 0:
                loss = loss + params.align_weight * alignment_loss(model, embs, present, params.temperature)
        optim.scaler.scale(loss / params.grad_accum).backward()
        if (b + 1) % params.grad_accum == 0 or b + 1 == len(batches):
            optim.scaler.unscale_(optim.opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), params.clip_norm)
            optim.scaler.step(optim.opt)
            optim.scaler.update()
            optim.opt.zero_grad(set_to_none=True)
        total += float(loss.detach()) * len(idx)
        seen += len(idx)
        st.data_s += ready - started
        st.step_s += time.perf_counter() - started
    return total / max(seen, 1)


def _alignment(model: Any, val: Batch, device: str, cached: tuple[Any, ...]) -> dict[str, dict[str, float]]:
    """Cross-modal retrieval on the validation split (recall@k between each pair of modalities' projected
    embeddings, over the records that have both); empty without projection heads."""
    import torch

    from mmops.models import recall_at_k

    alignment: dict[str, dict[str, float]] = {}
    if model.projections is None:
        return alignment
    _, embs = predict_batch(model, val, device, cached[2] if cached[0] else None, embeddings=True)
    proj = model.projected(embs.to(device))
    present = torch.stack([torch.from_numpy(val.masks[m]) for m in model.names], dim=1) > 0
    for i, src_m in enumerate(model.names):
        for j, dst_m in enumerate(model.names[i + 1 :], start=i + 1):
            both = (present[:, i] & present[:, j]).to(device)
            if int(both.sum()) >= 2:
                alignment[f"{src_m}->{dst_m}"] = {**recall_at_k(proj[src_m][both], proj[dst_m][both]),
                                                  "n": int(both.sum())}
    return alignment


def _calibrate(model: Any, val: Batch, device: str, cached: tuple[Any, ...],
               val_metrics: dict[str, float | None]) -> tuple[float, Any]:
    """Temperature scaling on the validation split (tasks/temperature.py), and isotonic maps after it where
    they predict held-out labels better (tasks/isotonic.py); the ECE before and after and both methods'
    cross-validated Brier scores go into val_metrics. The best epoch was chosen on the same split: T is one
    number, so it barely overfits."""
    from scipy.special import softmax

    from mmops.evaluation import expected_calibration_error
    from mmops.tasks.isotonic import apply_maps, choose
    from mmops.tasks.temperature import fit_temperature

    features = cached[2] if cached[0] else None  # backbones frozen to the end: their features still hold
    # log-softmax: the logits up to a constant per record, exact where a probability underflows (a log of
    # clipped probabilities would cap every margin at the clip and fit T to margins the model does not have)
    logits, _ = predict_batch(model, val, device, features, log=True)
    logits = logits.astype(np.float64)
    probs = np.exp(logits)
    assert val.labels is not None
    temperature = fit_temperature(logits, val.labels)
    val_metrics["ece_uncalibrated"] = round(expected_calibration_error(val.labels, probs), 6)
    calibrated = softmax(logits / temperature, axis=1)  # the same answers over T, without another pass
    isotonic, scores = choose(logits, val.labels)
    val_metrics.update(scores)
    if isotonic is not None:
        calibrated = apply_maps(calibrated, isotonic)
    val_metrics["ece"] = round(expected_calibration_error(val.labels, calibrated), 6)
    return round(temperature, 6), isotonic


def _write_weights(out_dir: Path, best_state: dict[str, Any]) -> str:
    """The best weights as safetensors (no pickle ever loaded back); returns their sha256."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / WEIGHTS
    save_file({k: v.contiguous() for k, v in best_state.items()}, str(path))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_history(path: Path, history: list[dict[str, float]]) -> None:
    """Beside the model folder, not in it: DVC tracks the folder as an output and the curve as a plot."""
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows({k: (round(v, 6) if isinstance(v, float) else v) for k, v in h.items()} for h in history)
