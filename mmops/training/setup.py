"""What a training run starts from: seeds, the AMP policy, the architecture a model card records, the model
with its initial weights (random, pretrained, or a given file), the optimizer, and which pretrained
backbones are frozen in an epoch (and their features, computed once per freeze phase)."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmops.config import TrainParams
from mmops.datasets.tensors import Batch
from mmops.domains import DomainPack
from mmops.inference import chunks
from mmops.modalities import kind_of


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
    """The architecture a model card records (everything needed to rebuild the model for serving): the
    fusion's choices, and each of the pack's modality kinds' (the encoders it builds)."""
    arch = {"embed_dim": params.embed_dim, "fusion": params.fusion, "modality_dropout": params.modality_dropout,
            "image_encoder": params.image_encoder, "image_size": params.image_size,
            "sensor_encoder": params.sensor_encoder, "text_encoder": "hashed",
            "proj_dim": params.proj_dim if params.align_weight > 0 and len(pack.modalities) > 1 else 0}
    for spec in pack.modalities:
        arch |= kind_of(spec).arch(params)
    return arch


def backbone_features(model: Any, batch: Batch, names: list[str], device: str, bs: int = 128) -> dict[str, Any]:
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


def frozen_backbones(pack: DomainPack, model: Any, params: TrainParams, epoch: int) -> list[str]:
    """Modalities whose pretrained backbone is frozen during this epoch."""
    out = []
    for spec in pack.modalities:
        enc = model.encoders[spec.name]
        if not enc.pretrained:
            continue
        n = kind_of(spec).freeze_epochs(params)
        if n == -1 or epoch <= n:
            out.append(spec.name)
    return out


def initial_model(pack: DomainPack, arch: dict[str, Any], params: TrainParams) -> tuple[Any, dict[str, str]]:
    """The model to train, and per modality where its encoder's weights start: a file the params name
    (`init_weights`, by modality or kind), the kind's pretrained source, or random."""
    from mmops.models import build_model, load_backbone_weights

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
            init[spec.name] = str(enc.source)
        else:
            enc.pretrained = False
            init[spec.name] = "random"
    return model, init


@dataclass
class Optimizer:
    """AdamW with discriminative learning rates (pretrained backbones move slower), a cosine schedule, and a
    gradient scaler (active for fp16 autocast only)."""

    opt: Any
    sched: Any
    scaler: Any

    @classmethod
    def make(cls, model: Any, params: TrainParams, device: str, use_amp: bool, amp_dtype: Any) -> Optimizer:
        import torch

        encoders: dict[str, Any] = dict(model.encoders)
        backbone_params = [p for m in encoders.values() if m.pretrained for p in m.backbone.parameters()]
        ids = {id(p) for p in backbone_params}
        rest = [p for p in model.parameters() if id(p) not in ids]
        groups = [{"params": rest, "lr": params.lr}]
        if backbone_params:
            groups.append({"params": backbone_params, "lr": params.lr * params.backbone_lr_mult})
        opt = torch.optim.AdamW(groups, lr=params.lr, weight_decay=params.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=params.epochs)
        dev_type = torch.device(device).type
        scaler = torch.amp.GradScaler(dev_type if use_amp else "cpu",
                                      enabled=use_amp and amp_dtype == torch.float16)
        return cls(opt, sched, scaler)
