"""Apply parallelism to the plain model from outside, in this order:

    tensor parallel (+ sequence parallel)  ->  activation checkpointing  ->  torch.compile  ->  FSDP2 / DDP

TP first because it replaces parameters by DTensors that the later steps must see; AC and compile
wrap or compile each block as it will run; FSDP last, so it shards the final parameters and its
per-block hooks wrap the checkpointed, compiled blocks. Everything happens on the meta device, then
`materialize` allocates only this rank's shards and initialises them to exactly the values the
whole model would get in one process.

Each wrapper works per Transformer block and keeps parameter names (checkpoint_wrapper's prefix is
stripped from state dicts, Module.compile compiles in place, fully_shard and replicate are
composable), so checkpoints look the same on every layout.
"""

from __future__ import annotations

import os

import torch
from torch import nn
from torch._inductor.runtime.cache_dir_utils import default_cache_dir
from torch.distributed._composable import replicate
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    PrepareModuleInput,
    RowwiseParallel,
    SequenceParallel,
    parallelize_module,
)

from scratchlm.cache import cache_root
from scratchlm.config import TrainConfig
from scratchlm.hardware import check_memory
from scratchlm.model import Transformer, parameter_generator
from scratchlm.parallel.world import ParallelDims, World

# Prefixes that wrappers add to parameter names; a parameter's own name is what is left.
WRAPPER_PREFIXES = ("_checkpoint_wrapped_module.", "_orig_mod.")


def apply_tp(model: Transformer, tp_mesh: DeviceMesh) -> None:
    """Megatron-style tensor parallel with sequence parallel.

    Inside a block, q/k/v and w1/w3 are split column-wise (each rank computes whole heads and a slice
    of the SwiGLU width) and wo/w2 row-wise, so each of attention and FFN needs one collective on the
    way in (all-gather of the sequence) and one on the way out (reduce-scatter back to a sequence
    shard). Between them, the norms and the residual stream work on a shard of the sequence (Shard(1)),
    so activations outside the matmuls are split tp ways too. The embedding is split by vocabulary
    rows and hands out sequence shards; the head is split by vocabulary columns and gathers the logits.
    """
    plan = {
        "tok_embeddings": RowwiseParallel(input_layouts=Replicate(), output_layouts=Shard(1)),
        "norm": SequenceParallel(),
    }
    if model.output is not None:
        plan["output"] = ColwiseParallel(input_layouts=Shard(1), output_layouts=Replicate())
    parallelize_module(model, tp_mesh, {k: v for k, v in plan.items() if getattr(model, k) is not None})
    if model.output is None and model.norm is not None:
        # The tied head multiplies by the row-split embedding matrix; DTensor propagates that product,
        # and the logits are gathered for the loss as the untied head's are.
        model.register_forward_hook(lambda _module, _inputs, out: out.full_tensor()
                                    if isinstance(out, DTensor) else out)
    for block in model.layers.values():
        # Attention(x, cos, sin, cache, start_pos, positions, mask): only x is a sequence shard to gather.
        parallelize_module(block, tp_mesh, {
            "attention_norm": SequenceParallel(),
            "attention": PrepareModuleInput(input_layouts=(Shard(1),) + (None,) * 6,
                                            desired_input_layouts=(Replicate(),) + (None,) * 6),
            "attention.wq": ColwiseParallel(),
            "attention.wk": ColwiseParallel(),
            "attention.wv": ColwiseParallel(),
            "attention.wo": RowwiseParallel(output_layouts=Shard(1)),
            "ffn_norm": SequenceParallel(),
            "feed_forward": PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),)),
            "feed_forward.w1": ColwiseParallel(),
            "feed_forward.w2": RowwiseParallel(output_layouts=Shard(1)),
            "feed_forward.w3": ColwiseParallel(),
        })


def apply_activation_checkpointing(model: Transformer) -> None:
    """Recompute each block's activations in the backward pass instead of storing them: memory for
    activations drops from all layers' to about one layer's, for roughly a third more compute."""
    for name, block in list(model.layers.items()):
        model.layers[name] = checkpoint_wrapper(block, preserve_rng_state=False)


def keep_kernels_in_cache() -> None:
    """Inductor's graphs and kernels go under scratchlm's cache directory, so a second run of the same shape
    builds nothing, and deleting one directory clears prepared data and kernels alike. A TORCHINDUCTOR_CACHE_DIR
    of the user's own is kept; inductor's default (a temporary directory, which it writes into the environment
    as soon as torch.distributed is imported) is not."""
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR", default_cache_dir()) == default_cache_dir():
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_root() / "inductor")


def apply_compile(model: Transformer) -> None:
    """Compile block by block (train.compile blocks): every block has the same code, so one compiled graph
    serves them all, and FSDP's and TP's hooks and collectives run between the graphs."""
    keep_kernels_in_cache()
    for block in model.layers.values():
        block.compile(fullgraph=True)


def apply_fsdp(model: Transformer, dp_mesh: DeviceMesh, mp_policy: MixedPrecisionPolicy,
               reshard_after_forward: bool) -> None:
    """FSDP2: each block is one all-gather / reduce-scatter group, the root holds the rest (embedding,
    final norm, head). A 2-D mesh (dp_replicate, dp_shard) gives HSDP: shard within a group, replicate
    across groups, all-reduce the gradients between replicas."""
    for block in model.layers.values():
        fully_shard(block, mesh=dp_mesh, mp_policy=mp_policy, reshard_after_forward=reshard_after_forward)
    fully_shard(model, mesh=dp_mesh, mp_policy=mp_policy, reshard_after_forward=reshard_after_forward)


def mixed_precision(train: TrainConfig, device: torch.device) -> MixedPrecisionPolicy | None:
    """On GPU, FSDP runs bf16 compute from fp32 master shards and reduces gradients in fp32; autocast is
    then not needed. On CPU the trainer's autocast does it, as in one process."""
    if train.precision == "bf16" and device.type == "cuda":
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return None


def uses_fsdp(dims: ParallelDims) -> bool:
    """FSDP (or HSDP) for data parallel, except pure replication without TP, which DDP does."""
    return dims.dp > 1 and (dims.dp_shard > 1 or dims.tp > 1)


def parallelize(model: Transformer, train: TrainConfig, world: World | None = None) -> Transformer:
    """TP, AC, compile, then data parallel (FSDP/HSDP, or DDP for pure replication), as the dims ask."""
    dims = world.dims if world is not None else None
    if dims is not None and dims.tp > 1:
        apply_tp(model, world.submesh("tp"))
    if train.activation_checkpointing:
        apply_activation_checkpointing(model)
    if train.compile == "blocks":  # "model" compiles the loss with the model, in the trainer
        apply_compile(model)
    if dims is None or dims.dp == 1:
        return model
    if uses_fsdp(dims):
        dp_names = ("dp_replicate", "dp_shard") if dims.dp_replicate > 1 else ("dp_shard",)
        policy = mixed_precision(train, world.device) or MixedPrecisionPolicy()
        # A pipeline stage runs several micro-batches forward before their backward: keeping its
        # parameters gathered avoids an all-gather per micro-batch.
        apply_fsdp(model, world.submesh(*dp_names), policy, reshard_after_forward=dims.pp == 1)
    else:
        replicate(model, device_mesh=world.submesh("dp_replicate"))
    return model


@torch.no_grad()
def materialize(model: Transformer, device: torch.device, seed: int) -> None:
    """Allocate this rank's parameters (to_empty from meta) and initialise them.

    Every parameter is drawn whole from its own seeded generator (Transformer.init_parameter), then
    this rank keeps its shard (distribute_tensor with src_data_rank=None slices locally, no
    communication). So the values are those of the one-process model on every layout, while at most
    one full parameter is ever held at a time, never the whole model.

    First, a model whose training state cannot fit is refused: this rank's weights, their gradients and
    AdamW's two moments (4x the weights), times the ranks that share a CPU's memory.
    """
    local = sum((p.to_local() if isinstance(p, DTensor) else p).nbytes for p in model.parameters())
    ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if device.type == "cpu" else 1
    ranks = f" of the {ranks_here} ranks on this machine" if ranks_here > 1 else ""
    check_memory(4 * local * ranks_here, device, f"the training state{ranks} (weights, gradients, AdamW moments)",
                 "train a smaller model, shard it over more devices (torchrun with --parallel.dp_shard), or use a "
                 "machine with more memory; scratchlm plan shows what each layout needs per GPU")
    model.to_empty(device=device)
    model.init_buffers()
    for name, param in model.named_parameters():
        for prefix in WRAPPER_PREFIXES:
            name = name.replace(prefix, "")
        full = torch.empty(param.shape, dtype=param.dtype, device=device)
        model.init_parameter(name, full, parameter_generator(seed, name, device))
        if isinstance(param, DTensor):
            shard = distribute_tensor(full, param.device_mesh, param.placements, src_data_rank=None)
            param.to_local().copy_(shard.to_local())
        else:
            param.copy_(full)


def set_gradient_sync(model: nn.Module, sync: bool) -> None:
    """Under gradient accumulation FSDP reduces gradients only after the last micro-batch. (Plain
    replication, DDP, still all-reduces after every micro-batch: correct, with more communication.)"""
    if isinstance(model, FSDPModule):
        model.set_requires_gradient_sync(sync)
