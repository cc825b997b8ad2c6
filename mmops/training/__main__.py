"""The torchrun worker: `python -m torch.distributed.run --nproc-per-node N -m mmops.training --domain D
--result FILE [--resume] [--dataset ID]`. Rank 0 writes the TrainResult as JSON to FILE."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from mmops.context import Context
from mmops.tasks import task_of


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="mmops.training")
    ap.add_argument("--domain", required=True)
    ap.add_argument("--result", required=True)
    ap.add_argument("--resume", nargs="?", const=True, default=False, choices=[True, "auto"])
    ap.add_argument("--dataset", default=None, help="the dataset version id (default: the current one)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ctx = Context.resolve(args.domain)
    result = task_of(ctx.pack.task).train(ctx.pack, ctx.manifest(args.dataset), ctx.settings.data_dir,
                                          ctx.params.train, ctx.params.seed, ctx.artifacts / "model",
                                          resume=args.resume)
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:
        payload = {k: str(v) if isinstance(v, Path) else v for k, v in result.__dict__.items()}
        Path(args.result).write_text(json.dumps(payload), encoding="utf-8")
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
