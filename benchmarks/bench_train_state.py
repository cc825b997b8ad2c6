"""The medical model's resumable training state (train_state/last.pt, written after every epoch): its size and
the time to write it, as the trainer writes it now (the tensors the run changed, and the sha256 of the
starting tensors it did not: the frozen pretrained text encoder, the not yet unfrozen image backbone) against
the earlier layout (every tensor, and a second whole copy of the best epoch's weights), side by side in one
process on the same model and optimizer state.

The model is the medical pack's default (params.yaml: pretrained MiniLM text encoder, pretrained image
backbone, ECG encoder, attention fusion), built as the trainer builds it. Two points of a run: an early epoch
(pretrained backbones frozen, as params.yaml's freeze epochs say) and the last one (unfrozen backbones trained
too); at each, every parameter the trainer would train takes an AdamW step (a gradient of noise: the state's
size and the write's cost do not depend on the values), and that epoch is the best so far. Target: the state
at most half the earlier layout's size at the early epoch. Run: `make bench` (or `.venv/bin/python
benchmarks/bench_train_state.py [--repeat 5]`).
"""

from __future__ import annotations

import argparse
import json
import os
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
TARGET = 0.5


def _epoch(model, optim, st, pack, params, epoch: int) -> list[str]:  # noqa: ANN001
    """One epoch's worth of change to the state: the trainable set of that epoch takes a step."""
    import torch

    from mmops.training.setup import frozen_backbones

    frozen = frozen_backbones(pack, model, params, epoch)
    for name, enc in dict(model.encoders).items():
        for p in enc.backbone.parameters():
            p.requires_grad_(name not in frozen)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3 if p.requires_grad else None
    optim.opt.step()
    optim.opt.zero_grad(set_to_none=True)
    st.history.append({"epoch": epoch})
    st.consider(epoch, 0.5 + epoch / 100, 1.0, model, params.patience)
    return frozen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    import torch

    with tempfile.TemporaryDirectory(prefix="mmops-bench-state-") as tmp:
        root = Path(tmp)
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        params["packs"] = {"medical": "medical-cxr"}
        (root / "params.yaml").write_text(yaml.safe_dump(params))
        os.environ["MMOPS_HOME"] = str(root)
        from mmops.config import load_params
        from mmops.domains import load_domain
        from mmops.training import model_arch, seed_everything
        from mmops.training.setup import Optimizer, initial_model
        from mmops.training.state import restore
        from mmops.training.state import save as save_state

        p = load_params().train
        pack = load_domain("medical")
        seed_everything(0)
        model, init = initial_model(pack, model_arch(pack, p), p)
        optim = Optimizer.make(model, p, "cpu", False, None)
        gen = np.random.default_rng(0)
        st = restore(root / "none.pt", "bench", False, model, optim, gen, None, "medical")
        whole_params = sum(t.numel() for t in model.state_dict().values())
        points: dict[str, dict] = {}
        for label, epoch in (("early", 1), ("last", p.epochs)):
            frozen = _epoch(model, optim, st, pack, p, epoch)
            sizes: dict[str, int] = {}
            times: dict[str, list[float]] = {"now": [], "earlier": []}
            for _ in range(args.repeat):  # alternate, so that drifts in disk speed hit both alike
                for layout, compact in (("now", True), ("earlier", False)):
                    path = root / f"{layout}.pt"
                    started = time.perf_counter()
                    save_state(path, "bench", epoch, model, optim, gen, st, None, compact=compact)
                    times[layout].append(time.perf_counter() - started)
                    sizes[layout] = path.stat().st_size
            points[label] = {
                "epoch": epoch, "frozen_backbones": frozen,
                "trainable_params": sum(t.numel() for t in model.parameters() if t.requires_grad),
                "state_mb_now": round(sizes["now"] / 1e6, 1), "state_mb_earlier": round(sizes["earlier"] / 1e6, 1),
                "size_ratio": round(sizes["now"] / sizes["earlier"], 3),
                "save_s_now": round(statistics.median(times["now"]), 3),
                "save_s_earlier": round(statistics.median(times["earlier"]), 3),
            }
    out = {"model": "medical (params.yaml defaults)", "init": init, "params_total": whole_params,
           "torch_threads": torch.get_num_threads(), "repeat": args.repeat, "size_target": TARGET,
           "points": [{"point": label, **figures} for label, figures in points.items()]}
    print(json.dumps(out, indent=2))
    met = points["early"]["size_ratio"] <= TARGET
    save("train-state", out, {f"state at an early epoch <= {TARGET}x the earlier layout's size": met,
                              "state written faster than the earlier layout at both points":
                                  all(v["save_s_now"] < v["save_s_earlier"] for v in points.values())})
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
