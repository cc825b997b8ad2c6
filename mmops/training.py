"""Training a fusion model on a dataset version.

Device auto-selection (CUDA, MPS, CPU); AMP on CUDA (bf16 where supported, else fp16 with a gradient
scaler); channels_last image tensors; gradient accumulation and clipping; class-weighted loss; an InfoNCE
alignment loss between modality embeddings; transfer learning (pretrained backbones frozen for the first
epochs, then fine-tuned at a lower learning rate; a frozen backbone's features are computed once per phase,
not once per step); early stopping on validation macro-F1; deterministic seeding.

A checkpoint is written after every epoch (model, optimizer, scheduler, scaler, RNG states, history, best
weights); ``resume=True`` continues from it, and a run killed mid-epoch and resumed ends with the same
weights and metrics as one that was never interrupted (tested).

Distributed data parallel: ``mmops train --nproc N`` starts N workers through torchrun (``python -m
mmops.training``), gloo on CPU, NCCL on GPUs. Each rank takes a disjoint shard of every epoch's shuffled
order (padded to equal length, as DistributedSampler does); every rank evaluates the same validation split
with the same weights, so early-stopping decisions agree without communication; rank 0 writes files.
Across machines, `mmops train --nnodes M --node-rank R --master host:port` on each (static rendezvous: node
0 holds rank 0 and records the run); before the first step all ranks compare their dataset version and
parameters, and refuse to start if any node differs.

The output is a folder: weights as safetensors and a model card that serving enforces.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmops import __version__, faults
from mmops.config import TrainParams
from mmops.datasets.build import Manifest
from mmops.datasets.tensors import Batch, Preprocessor, collate, load_split
from mmops.domains import DomainPack, ImageSpec
from mmops.errors import ConfigError
from mmops.evaluation import classification_metrics
from mmops.inference import CARD, CARD_FORMAT, WEIGHTS, chunks, predict_batch, resolve_device, to_device

log = logging.getLogger(__name__)

STATE_FILE = "last.pt"


@dataclass
class TrainResult:
    model_dir: Path
    device: str
    epochs_run: int
    best_epoch: int
    val_metrics: dict[str, float]
    checkpoint_sha256: str
    params_hash: str
    samples_per_s: float = 0.0  # training steps only (validation excluded)
    data_wait_share: float = 0.0  # share of step time spent getting the batch onto the device
    world_size: int = 1
    resumed_from_epoch: int = 0
    alignment: dict[str, dict[str, float]] = field(default_factory=dict)  # val cross-modal recall@k


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def amp_policy(device: str, wanted: bool) -> tuple[bool, Any]:
    """(autocast on?, its dtype): on CUDA bf16 where the GPU supports it, else fp16 (then with a gradient
    scaler); off elsewhere (CPU autocast is slower than fp32 on most CPUs). The training step itself is
    device-agnostic, which is how the tests run the fp16 and bf16 paths on a CPU."""
    import torch

    if not wanted or torch.device(device).type != "cuda":
        return False, torch.bfloat16
    return True, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def params_hash(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()


def model_arch(pack: DomainPack, params: TrainParams) -> dict[str, Any]:
    """The architecture a model card records (everything needed to rebuild the model for serving)."""
    from mmops.models import resolve_text_encoder

    has_text = any(m.kind == "text" for m in pack.modalities)
    return {"embed_dim": params.embed_dim, "fusion": params.fusion, "modality_dropout": params.modality_dropout,
            "image_encoder": params.image_encoder, "image_size": params.image_size,
            "sensor_encoder": params.sensor_encoder,
            "text_encoder": resolve_text_encoder(params.text_encoder) if has_text else "hashed",
            "proj_dim": params.proj_dim if params.align_weight > 0 and len(pack.modalities) > 1 else 0}


def _dist_from_env() -> DistContext:
    """Set up torch.distributed when launched by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    import torch
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    return DistContext(dist.get_rank(), dist.get_world_size(), local)


def _backbone_features(model: Any, batch: Batch, names: list[str], device: str, bs: int = 128) -> dict[str, Any]:
    """Frozen backbones' outputs for a whole split (computed once per freeze phase, kept on the device)."""
    import torch

    feats: dict[str, list[Any]] = {m: [] for m in names}
    with torch.inference_mode():
        for idx in chunks(len(batch), bs):
            for m in names:
                enc = model.encoders[m]
                was = enc.training
                enc.eval()
                x = torch.from_numpy(batch.inputs[m][idx]).to(device)
                ln = torch.from_numpy(batch.lengths[m][idx]).to(device) if m in batch.lengths else None
                feats[m].append(enc.features(x, ln).float())
                enc.train(was)
    return {m: torch.cat(v).clone() for m, v in feats.items()}


def _frozen(pack: DomainPack, model: Any, params: TrainParams, epoch: int) -> list[str]:
    """Modalities whose pretrained backbone is frozen during this epoch."""
    out = []
    for spec in pack.modalities:
        enc = model.encoders[spec.name]
        if not enc.pretrained:
            continue
        n = params.text_freeze_epochs if spec.kind == "text" else params.freeze_epochs
        if n == -1 or epoch <= n:
            out.append(spec.name)
    return out


def _save_state(path: Path, state: dict[str, Any]) -> None:
    import torch

    from mmops.atomic import temp_path

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    torch.save(state, tmp)
    os.replace(tmp, path)


@dataclass
class TrainData:
    """Decoded records (modality -> value) and class indices for training and validation."""

    train: list[dict[str, Any]]
    train_y: list[int]
    val: list[dict[str, Any]]
    val_y: list[int]
    dataset_id: str
    split_counts: dict[str, int] = field(default_factory=dict)


def train_model(
    pack: DomainPack, manifest: Manifest, data_root: Path, params: TrainParams, seed: int, out_dir: Path,
    progress: Callable[[int, int, dict[str, float]], None] | None = None, resume: bool | str = False,
    state_dir: Path | None = None,
) -> TrainResult:
    """Train on a dataset version's train split, select on its val split."""
    class_index = {c: i for i, c in enumerate(pack.classes)}
    train_rows, val_rows = manifest.split("train"), manifest.split("val")
    data = TrainData(load_split(pack, data_root, train_rows), [class_index[r["label"]] for r in train_rows],
                     load_split(pack, data_root, val_rows), [class_index[r["label"]] for r in val_rows],
                     manifest.id, manifest.split_counts)
    return fit(pack, data, params, seed, out_dir, progress, resume, state_dir)


def fit(
    pack: DomainPack, data: TrainData, params: TrainParams, seed: int, out_dir: Path,
    progress: Callable[[int, int, dict[str, float]], None] | None = None, resume: bool | str = False,
    state_dir: Path | None = None,
) -> TrainResult:
    import torch
    from safetensors.torch import save_file

    from mmops.models import alignment_loss, build_model, load_backbone_weights, recall_at_k

    ctx = _dist_from_env()
    seed_everything(seed)
    device = resolve_device(params.device)
    if device == "cuda" and ctx.world > 1:
        device = f"cuda:{ctx.local_rank}"
    on_cuda = device.startswith("cuda")
    arch = model_arch(pack, params)
    sensor_values = {m: [r[m] for r in data.train if m in r] for m in pack.modality_names}
    prep = Preprocessor(text_encoder=arch["text_encoder"]).fit(pack, sensor_values)
    train = collate(pack, prep, data.train, data.train_y)
    val = collate(pack, prep, data.val, data.val_y)
    assert train.labels is not None and val.labels is not None

    model = build_model(pack, arch, pretrained=params.pretrained)
    init: dict[str, str] = {}
    for spec in pack.modalities:
        enc: Any = model.encoders[spec.name]
        src = params.init_weights.get(spec.name) or params.init_weights.get(spec.kind)
        if src:
            load_backbone_weights(enc.backbone, src)
            enc.pretrained = True
            init[spec.name] = "file:" + hashlib.sha256(Path(src).read_bytes()).hexdigest()
        elif enc.pretrained and params.pretrained:
            init[spec.name] = "minilm" if spec.kind == "text" else f"imagenet:{arch['image_encoder']}"
        else:
            enc.pretrained = False
            init[spec.name] = "random"
    model.to(device)
    channels_last = params.channels_last and any(isinstance(m, ImageSpec) for m in pack.modalities)
    if channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    counts = np.bincount(train.labels, minlength=len(pack.classes)).astype(np.float32)
    weights = torch.tensor(counts.sum() / np.maximum(counts, 1) / len(counts), device=device)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights)
    encoders: dict[str, Any] = dict(model.encoders)
    backbone_params = [p for m in encoders.values() if m.pretrained for p in m.backbone.parameters()]
    ids = {id(p) for p in backbone_params}
    rest = [p for p in model.parameters() if id(p) not in ids]
    groups = [{"params": rest, "lr": params.lr}]
    if backbone_params:  # discriminative learning rates: pretrained layers move slower
        groups.append({"params": backbone_params, "lr": params.lr * params.backbone_lr_mult})
    opt = torch.optim.AdamW(groups, lr=params.lr, weight_decay=params.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=params.epochs)
    dev_type = torch.device(device).type
    use_amp, amp_dtype = amp_policy(device, params.amp)
    scaler = torch.amp.GradScaler(dev_type if use_amp else "cpu", enabled=use_amp and amp_dtype == torch.float16)
    gen = np.random.default_rng(seed)

    p_dict = {"seed": seed, **params.model_dump()}
    key = params_hash({"dataset": data.dataset_id, "params": p_dict, "world": ctx.world})
    if ctx.world > 1:  # every node reads its own copy of the dataset and params: all must hold the same
        import torch.distributed as dist

        keys: list[Any] = [None] * ctx.world
        dist.all_gather_object(keys, (key, data.dataset_id, socket.gethostname()))
        if len({k[0] for k in keys}) > 1:
            odd = sorted({f"rank {r} on {k[2]}: dataset {k[1]}" for r, k in enumerate(keys) if k[0] != keys[0][0]})
            raise ConfigError(f"the ranks do not train the same thing: rank 0 on {keys[0][2]} has dataset "
                              f"{keys[0][1]}; {'; '.join(odd)} (or other params.yaml train settings): bring every "
                              "node to the same commit and `dvc pull`")
    state_path = (state_dir or out_dir.parent / "train_state") / STATE_FILE
    history: list[dict[str, float]] = []
    best_f1, best_nll, best_epoch, best_state, start, stopped = -1.0, float("inf"), 0, None, 1, False
    data_s = step_s = 0.0  # wall time getting batches ready, and whole steps (on CUDA: approximate, async)
    st = torch.load(state_path, map_location="cpu", weights_only=True) if resume and state_path.exists() else None
    if st is not None and st["key"] != key:
        if resume != "auto":
            raise ConfigError(f"{state_path} belongs to another run (dataset, params or world size changed); "
                              "train without --resume to start over")
        log.warning("%s belongs to another run (dataset, params or world size changed): starting from scratch",
                    state_path)  # resume="auto" (a retry of a task): start over, saying so
        st = None
    if st is not None:
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        sched.load_state_dict(st["sched"])
        scaler.load_state_dict(st["scaler"])
        gen.bit_generator.state = json.loads(st["np_gen"])
        torch.set_rng_state(st["torch_rng"])
        if on_cuda and st.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(st["cuda_rng"], device=device)
        history, best_f1, best_epoch = json.loads(st["history"]), st["best_f1"], st["best_epoch"]
        best_nll = st["best_nll"]
        best_state, stopped, start = st["best_state"], st["stopped"], st["epoch"] + 1
        data_s, step_s = st["data_s"], st["step_s"]
        log.info("resuming %s from epoch %d", pack.name, st["epoch"])
    elif resume and not state_path.exists():
        log.info("no checkpoint at %s: starting from scratch", state_path)
    resumed_from = start - 1

    ddp: Any = None
    cached: tuple[list[str], dict[str, Any], dict[str, Any]] = ([], {}, {})
    per_rank_bs = -(-params.batch_size // ctx.world)
    epoch = start - 1
    for epoch in range(start, params.epochs + 1):
        if stopped:
            break
        frozen = _frozen(pack, model, params, epoch)
        if frozen != cached[0] or ddp is None:
            for m, enc in encoders.items():
                for p in enc.backbone.parameters():
                    p.requires_grad_(m not in frozen)
            cached = (frozen, _backbone_features(model, train, frozen, device),
                      _backbone_features(model, val, frozen, device))
            if ctx.world > 1:  # re-wrapped when the trainable set changes: DDP registers it at construction
                from torch.nn.parallel import DistributedDataParallel

                ddp = DistributedDataParallel(model, device_ids=[ctx.local_rank] if on_cuda else None)
            else:
                ddp = model
        model.train()
        order = gen.permutation(len(train))
        if ctx.world > 1:  # equal shards: pad by wrapping around, as DistributedSampler does
            total_len = -(-len(order) // ctx.world) * ctx.world
            order = np.concatenate([order, order[: total_len - len(order)]])[ctx.rank :: ctx.world]
        total, seen = 0.0, 0
        batches = [order[i : i + per_rank_bs] for i in range(0, len(order), per_rank_bs)]
        opt.zero_grad(set_to_none=True)
        for b, idx in enumerate(batches):
            faults.point("train.step")
            started = time.perf_counter()
            inputs, masks, lengths, feats, labels = to_device(train, idx, device, channels_last, cached[1])
            ready = time.perf_counter()
            with torch.autocast(device_type=dev_type, dtype=amp_dtype, enabled=use_amp):
                logits, embs, present = ddp(inputs, masks, lengths, feats, return_embeddings=True)
                loss = loss_fn(logits.float(), labels)
                if model.projections is not None and params.align_weight > 0:
                    loss = loss + params.align_weight * alignment_loss(model, embs, present, params.temperature)
            scaler.scale(loss / params.grad_accum).backward()
            if (b + 1) % params.grad_accum == 0 or b + 1 == len(batches):
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), params.clip_norm)
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
            data_s += ready - started
            step_s += time.perf_counter() - started
        sched.step()
        val_probs, _ = predict_batch(model, val, device, cached[2])
        val_m = classification_metrics(val.labels, val_probs, list(pack.classes))
        val_nll = float(-np.log(np.clip(val_probs[np.arange(len(val)), val.labels], 1e-7, 1)).mean())
        row = {"epoch": epoch, "train_loss": total / max(seen, 1), "val_loss": val_nll,
               "val_accuracy": val_m["accuracy"], "val_macro_f1": val_m["macro_f1"], "frozen": len(frozen)}
        history.append(row)
        if progress and ctx.main:
            progress(epoch, params.epochs, row)
        # model selection: validation macro-F1, ties broken by validation loss (small validation sets tie
        # often, and the first epoch to reach a score is usually the least confident one)
        if val_m["macro_f1"] > best_f1 + 1e-9 or (val_m["macro_f1"] > best_f1 - 1e-9 and val_nll < best_nll - 1e-4):
            best_f1, best_nll, best_epoch = val_m["macro_f1"], val_nll, epoch
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        elif epoch - best_epoch >= params.patience:
            log.info("early stop at epoch %d (best %d)", epoch, best_epoch)
            stopped = True
        if ctx.main:
            _save_state(state_path, {
                "key": key, "epoch": epoch, "model": model.state_dict(), "opt": opt.state_dict(),
                "sched": sched.state_dict(), "scaler": scaler.state_dict(),
                "np_gen": json.dumps(gen.bit_generator.state), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(device) if on_cuda else None,
                "history": json.dumps(history), "best_f1": best_f1, "best_nll": best_nll, "best_epoch": best_epoch,
                "best_state": best_state, "stopped": stopped, "data_s": data_s, "step_s": step_s})
        faults.point("train.epoch_end")

    assert best_state is not None
    model.load_state_dict(best_state)
    alignment: dict[str, dict[str, float]] = {}
    if model.projections is not None:
        _, embs = predict_batch(model, val, device, cached[2] if cached[0] else None, embeddings=True)
        proj = model.projected(embs.to(device))
        present = torch.stack([torch.from_numpy(val.masks[m]) for m in model.names], dim=1) > 0
        for i, src_m in enumerate(model.names):
            for j, dst_m in enumerate(model.names[i + 1 :], start=i + 1):
                both = (present[:, i] & present[:, j]).to(device)
                if int(both.sum()) >= 2:
                    alignment[f"{src_m}->{dst_m}"] = {**recall_at_k(proj[src_m][both], proj[dst_m][both]),
                                                      "n": int(both.sum())}
    best = history[best_epoch - 1]
    weights_path = out_dir / WEIGHTS
    ckpt_sha = ""
    card: dict[str, Any] = {}
    if ctx.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in best_state.items()}, str(weights_path))
        ckpt_sha = hashlib.sha256(weights_path.read_bytes()).hexdigest()
        card = {
            "format": CARD_FORMAT,
            "mmops_version": __version__,
            "domain": pack.name,
            "intended_use": pack.description,
            "classes": list(pack.classes),
            "domain_pack": pack.model_dump(mode="json"),
            "input_spec": {m.name: m.model_dump(mode="json") for m in pack.modalities},
            "arch": arch,
            "init": init,
            "preprocessor": prep.to_json(),
            "dataset_version": data.dataset_id,
            "dataset_split_counts": data.split_counts,
            "params": p_dict,
            "params_hash": params_hash(p_dict),
            "checkpoint_sha256": ckpt_sha,
            "best_epoch": best_epoch,
            "world_size": ctx.world,
            "val_metrics": {"accuracy": best["val_accuracy"], "macro_f1": best["val_macro_f1"]},
            "val_alignment": alignment,
        }
        (out_dir / CARD).write_text(json.dumps(card, indent=2, sort_keys=True), encoding="utf-8")
        # Beside the model folder, not in it: DVC tracks the folder as an output and the curve as a plot.
        with (out_dir.parent / "history.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(history[0]))
            writer.writeheader()
            writer.writerows({k: (round(v, 6) if isinstance(v, float) else v) for k, v in h.items()}
                             for h in history)
    if ctx.world > 1:
        import torch.distributed as dist

        dist.barrier()
    n_samples = len(train) * (len(history) - resumed_from)
    return TrainResult(out_dir, device, len(history), best_epoch,
                       {"accuracy": best["val_accuracy"], "macro_f1": best["val_macro_f1"]}, ckpt_sha,
                       params_hash(p_dict), round(n_samples / step_s, 1) if step_s else 0.0,
                       round(data_s / step_s, 4) if step_s else 0.0, ctx.world, resumed_from, alignment)


def _worker_main(argv: list[str] | None = None) -> None:
    """torchrun entry point: `python -m torch.distributed.run --nproc-per-node N -m mmops.training --domain D
    --result FILE [--resume]`. Rank 0 writes the TrainResult as JSON to FILE."""
    import argparse

    from mmops.context import Context

    ap = argparse.ArgumentParser(prog="mmops.training")
    ap.add_argument("--domain", required=True)
    ap.add_argument("--result", required=True)
    ap.add_argument("--resume", nargs="?", const=True, default=False, choices=[True, "auto"])
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ctx = Context.resolve(args.domain)
    result = train_model(ctx.pack, ctx.manifest(), ctx.settings.data_dir, ctx.params.train, ctx.params.seed,
                         ctx.artifacts / "model", resume=args.resume)
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:
        payload = {k: str(v) if isinstance(v, Path) else v for k, v in result.__dict__.items()}
        Path(args.result).write_text(json.dumps(payload), encoding="utf-8")
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    _worker_main()
