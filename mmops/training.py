"""Training: a fusion model on a dataset version. Device auto-selection, AMP (bf16) on CUDA, class-weighted
loss, early stopping on validation macro-F1, deterministic seeding; weights saved as safetensors with a
model card that serving enforces."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmops import __version__
from mmops.config import TrainParams
from mmops.datasets.build import Manifest
from mmops.datasets.tensors import Batch, Preprocessor, collate, load_split
from mmops.domains import DomainPack
from mmops.evaluation import classification_metrics
from mmops.inference import CARD, CARD_FORMAT, WEIGHTS, resolve_device

log = logging.getLogger(__name__)


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


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def params_hash(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()


def _to_device(batch: Batch, idx: np.ndarray, device: str) -> tuple[dict, dict, Any]:
    import torch

    inputs = {k: torch.from_numpy(v[idx]).to(device, non_blocking=True) for k, v in batch.inputs.items()}
    masks = {k: torch.from_numpy(v[idx]).to(device, non_blocking=True) for k, v in batch.masks.items()}
    labels = torch.from_numpy(batch.labels[idx]).to(device) if batch.labels is not None else None
    return inputs, masks, labels


def _predict(model: Any, batch: Batch, device: str, bs: int = 256) -> np.ndarray:
    import torch

    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(batch), bs):
            inputs, masks, _ = _to_device(batch, np.arange(i, min(i + bs, len(batch))), device)
            out.append(torch.softmax(model(inputs, masks).float(), dim=1).cpu().numpy())
    return np.concatenate(out)


def train_model(
    pack: DomainPack, manifest: Manifest, data_root: Path, params: TrainParams, seed: int, out_dir: Path,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
) -> TrainResult:
    import torch
    from safetensors.torch import save_file

    from mmops.models import build_model

    seed_everything(seed)
    device = resolve_device(params.device)
    class_index = {c: i for i, c in enumerate(pack.classes)}
    train_rows, val_rows = manifest.split("train"), manifest.split("val")
    train_vals = load_split(pack, data_root, train_rows)
    val_vals = load_split(pack, data_root, val_rows)
    sensor_values = {m: [r[m] for r in train_vals if m in r] for m in pack.modality_names}
    prep = Preprocessor().fit(pack, sensor_values)
    train = collate(pack, prep, train_vals, [class_index[r["label"]] for r in train_rows])
    val = collate(pack, prep, val_vals, [class_index[r["label"]] for r in val_rows])

    arch = {"embed_dim": params.embed_dim, "fusion": params.fusion, "modality_dropout": params.modality_dropout}
    model = build_model(pack, arch).to(device)
    assert train.labels is not None and val.labels is not None
    counts = np.bincount(train.labels, minlength=len(pack.classes)).astype(np.float32)
    weights = torch.tensor(counts.sum() / np.maximum(counts, 1) / len(counts), device=device)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights)
    opt = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=params.epochs)
    use_amp = params.amp and device == "cuda"
    gen = np.random.default_rng(seed)

    out_dir.mkdir(parents=True, exist_ok=True)
    history: list[dict[str, float]] = []
    best_f1, best_epoch, best_state = -1.0, 0, None
    data_s = step_s = 0.0  # wall time getting batches ready, and whole steps (on CUDA: approximate, async)
    for epoch in range(1, params.epochs + 1):
        model.train()
        order = gen.permutation(len(train))
        total, seen = 0.0, 0
        for i in range(0, len(order), params.batch_size):
            started = time.perf_counter()
            idx = order[i : i + params.batch_size]
            inputs, masks, labels = _to_device(train, idx, device)
            ready = time.perf_counter()
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_amp):
                loss = loss_fn(model(inputs, masks).float(), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
            data_s += ready - started
            step_s += time.perf_counter() - started
        sched.step()
        val_probs = _predict(model, val, device)
        val_m = classification_metrics(val.labels, val_probs, list(pack.classes))
        row = {"epoch": epoch, "train_loss": total / max(seen, 1), "val_accuracy": val_m["accuracy"],
               "val_macro_f1": val_m["macro_f1"]}
        history.append(row)
        if progress:
            progress(epoch, params.epochs, row)
        if val_m["macro_f1"] > best_f1 + 1e-9:
            best_f1, best_epoch = val_m["macro_f1"], epoch
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        elif epoch - best_epoch >= params.patience:
            log.info("early stop at epoch %d (best %d)", epoch, best_epoch)
            break

    assert best_state is not None
    weights_path = out_dir / WEIGHTS
    save_file({k: v.contiguous() for k, v in best_state.items()}, str(weights_path))
    ckpt_sha = hashlib.sha256(weights_path.read_bytes()).hexdigest()
    p_dict = {"seed": seed, **params.model_dump()}
    best = history[best_epoch - 1]
    card: dict[str, Any] = {
        "format": CARD_FORMAT,
        "mmops_version": __version__,
        "domain": pack.name,
        "intended_use": pack.description,
        "classes": list(pack.classes),
        "domain_pack": pack.model_dump(mode="json"),
        "input_spec": {m.name: m.model_dump(mode="json") for m in pack.modalities},
        "arch": arch,
        "preprocessor": prep.to_json(),
        "dataset_version": manifest.id,
        "dataset_split_counts": manifest.split_counts,
        "params": p_dict,
        "params_hash": params_hash(p_dict),
        "checkpoint_sha256": ckpt_sha,
        "best_epoch": best_epoch,
        "val_metrics": {"accuracy": best["val_accuracy"], "macro_f1": best["val_macro_f1"]},
    }
    (out_dir / CARD).write_text(json.dumps(card, indent=2, sort_keys=True), encoding="utf-8")
    # Beside the model folder, not in it: DVC tracks the folder as an output and the curve as a plot.
    with (out_dir.parent / "history.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows({k: (round(v, 6) if isinstance(v, float) else v) for k, v in h.items()} for h in history)
    n_steps_samples = len(train) * len(history)
    return TrainResult(out_dir, device, len(history), best_epoch, card["val_metrics"], ckpt_sha,
                       card["params_hash"], round(n_steps_samples / step_s, 1) if step_s else 0.0,
                       round(data_s / step_s, 4) if step_s else 0.0)
