"""Training an anomaly model on a dataset version: memory banks from the train split's normal records, the
threshold from the val split's normal records, the val split's known anomalies (if any) to measure it, and
the model folder with its card."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mmops import __version__
from mmops.card import ModelCard
from mmops.datasets.tensors import load_split
from mmops.domains import DomainPack
from mmops.errors import ValidationFailedError
from mmops.tasks.anomaly.calibration import anomaly_metrics
from mmops.tasks.anomaly.model import AnomalyModel


def train_anomaly(pack: DomainPack, manifest: Any, data_root: Path, params: Any, seed: int, out_dir: Path) -> Any:
    """params: TrainParams (its `anomaly` block is used). Returns a TrainResult, as a classifier's training."""
    from mmops.training import TrainResult, params_hash

    normal = pack.task_options["normal_class"]
    train_rows, val_rows = manifest.split("train"), manifest.split("val")
    if train_rows and all(r["label"] != normal for r in train_rows):
        raise ValidationFailedError(f"every training record of {pack.name} is labeled anomalous (none is "
                                    f"{normal!r}): an anomaly detector learns from normal records")
    fit_rows = [r for r in train_rows if r["label"] == normal]
    model = AnomalyModel.fit(pack, load_split(pack, data_root, fit_rows), params.anomaly, seed)
    val_values = load_split(pack, data_root, val_rows)
    is_anomaly = np.array([r["label"] != normal for r in val_rows], dtype=bool)
    model.calibrate([v for v, a in zip(val_values, is_anomaly, strict=True) if not a])
    scored = model.score(val_values)
    val = anomaly_metrics(is_anomaly, scored.score, 1.0)
    val_metrics = {k: val[k] for k in ("auroc", "auprc", "f1", "recall", "fpr")}
    sha = model.save(out_dir)
    p_dict = {"seed": seed, "anomaly": params.anomaly.model_dump()}
    ModelCard(
        mmops_version=__version__, domain=pack.name, intended_use=pack.description, classes=list(pack.classes),
        domain_pack=pack.model_dump(mode="json"), input_spec={m.name: m.model_dump(mode="json") for m in pack.modalities},
        arch={"task": "anomaly", "anomaly": params.anomaly.model_dump(),
              "calibration": model.calibration.to_json() if model.calibration else None,  # a copy to read
              "banks": {m: {"vectors": len(b.bank), "width": int(b.bank.shape[1])} for m, b in model.banks.items()}},
        init={m.name: ("imagenet:mobilenet_v2" if m.kind in ("image", "video") else "none") for m in pack.modalities},
        preprocessor=model.prep.to_json(), dataset_version=manifest.id, dataset_split_counts=manifest.split_counts,
        params=p_dict, params_hash=params_hash(p_dict), checkpoint_sha256=sha, best_epoch=1,
        val_metrics=val_metrics,
    ).write(out_dir)
    return TrainResult(out_dir, "cpu", 1, 1, val_metrics, sha, params_hash(p_dict),
                       samples_per_s=0.0)
