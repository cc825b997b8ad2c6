"""The ranks of a distributed training run: torch.distributed set up from torchrun's environment, and the
check that every rank (every node, with its own copy of the data) trains the same thing."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

from mmops.errors import ConfigError


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def dist_from_env() -> DistContext:
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


def check_ranks_agree(ctx: DistContext, key: str, dataset_id: str) -> None:
    """Every node reads its own copy of the dataset and params: all ranks must hold the same (`key` hashes
    the dataset version, the params and the world size), else none starts."""
    if ctx.world <= 1:
        return
    import torch.distributed as dist

    keys: list[Any] = [None] * ctx.world
    dist.all_gather_object(keys, (key, dataset_id, socket.gethostname()))
    if len({k[0] for k in keys}) > 1:
        odd = sorted({f"rank {r} on {k[2]}: dataset {k[1]}" for r, k in enumerate(keys) if k[0] != keys[0][0]})
        raise ConfigError(f"the ranks do not train the same thing: rank 0 on {keys[0][2]} has dataset "
                          f"{keys[0][1]}; {'; '.join(odd)} (or other params.yaml train settings): bring every "
                          "node to the same commit and `dvc pull`")
