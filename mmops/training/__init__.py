"""Training a fusion model on a dataset version.

The package: setup.py (seeding, AMP policy, the model's architecture and initial weights, the optimizer),
distributed.py (the torchrun ranks), state.py (the per-epoch checkpoint), loop.py (the epochs and the
output), __main__.py (the torchrun worker).

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

from mmops.training.loop import TrainData, TrainResult, fit, train_model
from mmops.training.setup import amp_policy, model_arch, params_hash, seed_everything

__all__ = ["TrainData", "TrainResult", "amp_policy", "fit", "model_arch", "params_hash", "seed_everything",
           "train_model"]
