"""Apply, from outside the model and in this order: activation checkpointing, then torch.compile.

The model itself stays plain PyTorch. Each wrapper works per Transformer block, so names of
parameters never change (checkpoint_wrapper strips its prefix from state dicts; Module.compile
compiles in place instead of wrapping).
"""

from __future__ import annotations

from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

from scratchlm.config import TrainConfig
from scratchlm.model import Transformer


def apply_activation_checkpointing(model: Transformer) -> None:
    """Recompute each block's activations in the backward pass instead of storing them: memory for
    activations drops from all layers' to about one layer's, for roughly a third more compute."""
    for name, block in list(model.layers.items()):
        model.layers[name] = checkpoint_wrapper(block, preserve_rng_state=False)


def apply_compile(model: Transformer) -> None:
    """Compile block by block: every block has the same code, so one compiled graph serves them all."""
    for block in model.layers.values():
        block.compile(fullgraph=True)


def parallelize(model: Transformer, train: TrainConfig) -> Transformer:
    if train.activation_checkpointing:
        apply_activation_checkpointing(model)
    if train.compile:
        apply_compile(model)
    return model
