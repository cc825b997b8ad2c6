"""The trainer's speed against a plain hand-written torch loop on the same model and data, side by side in
one process: training samples per second (validation excluded) and the share of step time the trainer
spends getting batches onto the device. Target: trainer / hand-written >= 0.95.

Data: the bundled medical pack (report text + ECG + fundus image, 360 training records), built into a
dataset version in a temporary project. Both sides train the same from-scratch architecture (small ResNet,
CNN+GRU, hashed text, concat fusion, no alignment loss): the trainer's frozen-feature caching would make the
default transfer-learning setting an unfair comparison in the trainer's favour. Run: `make bench` (or `.venv/bin/python benchmarks/bench_train.py`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import save  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def handwritten(pack, manifest, data_root: Path, params, seed: int) -> float:  # noqa: ANN001
    """The baseline: the same model, tensors, optimiser, loss and batch order, in the plainest loop."""
    import torch

    from mmops.datasets.tensors import Preprocessor, collate, load_split
    from mmops.models import build_model
    from mmops.training import model_arch, seed_everything

    seed_everything(seed)
    rows = manifest.split("train")
    values = load_split(pack, data_root, rows)
    prep = Preprocessor().fit(pack, {m: [r[m] for r in values if m in r] for m in pack.modality_names})
    batch = collate(pack, prep, values, [pack.classes.index(r["label"]) for r in rows])
    model = build_model(pack, model_arch(pack, params))
    counts = np.bincount(batch.labels, minlength=len(pack.classes)).astype(np.float32)
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(counts.sum() / np.maximum(counts, 1) / len(counts)))
    opt = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    inputs = {k: torch.from_numpy(v) for k, v in batch.inputs.items()}
    masks = {k: torch.from_numpy(v) for k, v in batch.masks.items()}
    lengths = {k: torch.from_numpy(v) for k, v in batch.lengths.items()}
    labels = torch.from_numpy(batch.labels)
    gen = np.random.default_rng(seed)
    model.train()
    start = time.perf_counter()
    for _ in range(params.epochs):
        order = torch.from_numpy(gen.permutation(len(labels)))
        for i in range(0, len(order), params.batch_size):
            idx = order[i : i + params.batch_size]
            loss = loss_fn(model({k: v[idx] for k, v in inputs.items()}, {k: v[idx] for k, v in masks.items()},
                                 {k: v[idx] for k, v in lengths.items()}), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return len(labels) * params.epochs / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mmops-bench-train-") as tmp:
        root = Path(tmp)
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        params["packs"] = {"medical": "medical-cxr"}
        params["train"].update(epochs=args.epochs, patience=args.epochs, device="cpu", pretrained=False,
                               image_encoder="resnet", text_encoder="hashed", fusion="concat", align_weight=0.0)
        (root / "params.yaml").write_text(yaml.safe_dump(params))
        os.environ["MMOPS_HOME"] = str(root)
        os.environ.setdefault("MMOPS_PSEUDONYM_KEY", "benchmark")
        from mmops import pipeline
        from mmops.config import get_settings, load_params
        from mmops.domains import load_domain
        from mmops.training import train_model

        for stage in ("pull_domain", "ingest", "label", "validate", "build"):
            getattr(pipeline, stage)("medical")
        settings, p = get_settings(), load_params()
        pack, manifest = load_domain("medical"), pipeline.load_manifest("medical")
        trainer, plain, waits = [], [], []
        for i in range(args.repeat):  # alternate, so that drifts in machine speed hit both alike
            result = train_model(pack, manifest, settings.data_dir, p.train, p.seed, root / f"m{i}")
            trainer.append(result.samples_per_s)
            waits.append(result.data_wait_share)
            plain.append(handwritten(pack, manifest, settings.data_dir, p.train, p.seed))
            shutil.rmtree(root / f"m{i}", ignore_errors=True)
    ratio = statistics.median(trainer) / statistics.median(plain)
    out = {"records": len(manifest.split("train")), "epochs": args.epochs, "batch_size": p.train.batch_size,
           "device": "cpu", "cpus": os.cpu_count(),
           "trainer_samples_per_s": round(statistics.median(trainer), 1),
           "handwritten_samples_per_s": round(statistics.median(plain), 1),
           "ratio": round(ratio, 3), "target": 0.95, "data_wait_share": round(statistics.median(waits), 4)}
    print(json.dumps(out, indent=2))
    save("train", out, {"trainer >= 0.95x the hand-written loop's samples/s": ratio >= 0.95})
    return 0 if ratio >= 0.95 else 1


if __name__ == "__main__":
    sys.exit(main())
