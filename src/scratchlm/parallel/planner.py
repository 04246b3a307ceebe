"""Memory planner: bytes per GPU of every (dp, tp, pp) layout, which fit, and which to use.

Parameters, gradients and optimizer state are counted exactly as the run shards them, tensor by
tensor, so they equal the local shard sizes of a real run byte for byte. The tensors are the model's
own, read from a Transformer built on the meta device (no memory, a 70B one included), so the
planner cannot drift from the model:

    tensor parallel  splits a weight along its column-wise (dim 0) or row-wise (dim 1) axis, tp ways;
    FSDP             splits dim 0 of what TP left, dp ways (torch.chunk sizes: rank 0 holds the most);
    pipeline         gives each stage its layers, the embedding to the first, norm and head to the last.

Master weights, gradients and AdamW's two moments are fp32 (bf16 is the compute dtype only); AdamW
also keeps a 4-byte step count per tensor. The figures are for the fullest rank (rank 0 of the first
or last stage), which is the one that must fit.

Activations and buffers are estimates. Activations count what autograd keeps per token and layer in
this model (see activation_bytes_per_token), times the micro-batches a pipeline stage holds at once;
buffers are what FSDP gathers (one block being used and one prefetched, in the compute dtype, plus
its full-size gradients before the reduce-scatter; the root's embedding and head stay gathered), DDP's
gradient buckets and the RoPE tables. Allocator fragmentation, the CUDA context (~0.5-1 GiB) and
NCCL's buffers come on top: a layout "fits" below 90% of the GPU's memory.
"""

from __future__ import annotations

import math
from dataclasses import asdict, astuple, dataclass
from functools import lru_cache

import torch

from scratchlm.config import ModelConfig, ParallelConfig
from scratchlm.errors import ScratchError
from scratchlm.model import Transformer
from scratchlm.parallel.parallelize import uses_fsdp
from scratchlm.parallel.pipeline import stage_layers
from scratchlm.parallel.world import ParallelDims, pipeline_microbatches
from scratchlm.train.stage import CHUNK_ELEMENTS

FP32 = 4
ADAM_STEP_BYTES = 4  # AdamW's per-tensor step count (a float32 scalar tensor)
FIT_FRACTION = 0.9


@dataclass(frozen=True)
class Weight:
    name: str
    shape: tuple[int, ...]
    tp_dim: int | None  # the dim tensor parallel splits; None: replicated on the tp ranks (norms)
    stage_part: str  # "embedding" | "layer" | "head"


# How tensor parallel (parallelize.apply_tp) splits a weight, by the module that holds it: the column-wise
# projections, the embedding (by vocabulary rows) and the head (by vocabulary columns) along dim 0 of the
# weight, the row-wise wo and w2 along dim 1; norms are replicated. A module missing here is a KeyError:
# a new kind of parameter must say how it is split before the planner can count it.
TP_DIM: dict[str, int | None] = {"tok_embeddings": 0, "output": 0, "wq": 0, "wk": 0, "wv": 0, "w1": 0, "w3": 0,
                                 "wo": 1, "w2": 1, "attention_norm": None, "ffn_norm": None, "norm": None}


def _stage_part(name: str) -> str:
    if name.startswith("tok_embeddings."):
        return "embedding"
    return "layer" if name.startswith("layers.") else "head"


@lru_cache(maxsize=8)
def _all_weights(m: tuple) -> tuple[Weight, ...]:
    """Every parameter of the Transformer built on the meta device from ModelConfig(*m): the model's own
    names and shapes, with no memory (a 70B model included), once per config."""
    with torch.device("meta"):
        model = Transformer(ModelConfig(*m))
    return tuple(Weight(name, tuple(p.shape), TP_DIM[name.split(".")[-2]], _stage_part(name))
                 for name, p in model.named_parameters())


def model_weights(m: ModelConfig, layers: range | None = None, first: bool = True, last: bool = True
                  ) -> list[Weight]:
    """The parameters of a model (or of one pipeline stage: its layers, the embedding if first, the final
    norm and head if last) with the tensor-parallel split of each."""
    keep = range(m.n_layers) if layers is None else layers
    wanted = {"embedding": first, "head": last}
    return [w for w in _all_weights(astuple(m))
            if (int(w.name.split(".")[1]) in keep if w.stage_part == "layer" else wanted[w.stage_part])]


def chunk_size(n: int, parts: int, index: int) -> int:
    """Length of torch.chunk(n, parts)[index] (0 when the chunks run out)."""
    size = math.ceil(n / parts)
    return max(0, min(size, n - index * size))


def local_numel(w: Weight, dims: ParallelDims, tp_rank: int = 0, shard_rank: int = 0) -> int:
    shape = list(w.shape)
    if w.tp_dim is not None and dims.tp > 1:
        shape[w.tp_dim] = chunk_size(shape[w.tp_dim], dims.tp, tp_rank)
    shape[0] = chunk_size(shape[0], dims.dp_shard, shard_rank)  # FSDP/HSDP: dim 0 of what TP left
    return math.prod(shape)


def stage_weights(m: ModelConfig, pp: int, chunks: int = 1) -> list[list[Weight]]:
    """The weights of each pp rank: chunk c of rank r is stage r + c * pp."""
    n_stages = pp * chunks
    ranges = stage_layers(m.n_layers, n_stages)
    ranks: list[list[Weight]] = [[] for _ in range(pp)]
    for stage, layers in enumerate(ranges):
        ranks[stage % pp] += model_weights(m, layers, first=stage == 0, last=stage == n_stages - 1)
    return ranks


@dataclass
class Bytes:
    params: int
    grads: int
    optimizer: int
    activations: int
    buffers: int

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer + self.activations + self.buffers

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "total": self.total}


def state_bytes(weights: list[Weight], dims: ParallelDims, tp_rank: int = 0, shard_rank: int = 0
                ) -> tuple[int, int, int]:
    """(params, grads, optimizer) bytes of one rank holding `weights`: fp32 master weights and gradients
    of the same shards, AdamW's exp_avg and exp_avg_sq, and a step count per tensor."""
    numel = sum(local_numel(w, dims, tp_rank, shard_rank) for w in weights)
    grad_numel = numel
    if dims.tp > 1 and not uses_fsdp(dims):
        # DTensor's embedding backward returns the row-split embedding's gradient replicated, whole on
        # every tp rank; with FSDP the reduce-scatter shards it like the weight.
        grad_numel += sum(math.prod(w.shape) - local_numel(w, dims, tp_rank, shard_rank) for w in weights
                          if w.name == "tok_embeddings.weight")
    return FP32 * numel, FP32 * grad_numel, 2 * FP32 * numel + ADAM_STEP_BYTES * len(weights)


def activation_bytes_per_token(m: ModelConfig, tp: int, compute_bytes: int) -> float:
    """Bytes autograd keeps per token for one block, without activation checkpointing.

    Per RMSNorm: its fp32 input and the normalised result (sequence-sharded under SP), and the
    all-gathered product with the gain that the next matmuls keep (full sequence, whole width).
    Attention: q, k, v after RoPE, the attention output and wo's input, split by heads over tp.
    SwiGLU: w1's and w3's outputs, silu(w1 x) and the product that w2 keeps, split over tp.
    """
    d, kv, h = m.dim, m.n_kv_heads * m.head_dim, m.ffn_hidden_dim
    norm = (FP32 + compute_bytes) * d / tp + compute_bytes * d
    attention = compute_bytes * (3 * d + 2 * kv) / tp
    ffn = compute_bytes * 4 * h / tp
    return 2 * norm + attention + ffn


def logits_bytes_per_token(m: ModelConfig, compute_bytes: int) -> int:
    """The head's output, which the cross-entropy keeps for its backward, and their gradient, both in the compute
    dtype: the loss's fp32 work is done a chunk of logits at a time (scratchlm.train.stage.ChunkedCrossEntropy)."""
    return m.vocab_size * 2 * compute_bytes


def in_flight_microbatches(pp: int, schedule: str, n_micro: int) -> int:
    """Micro-batches whose activations the first pipeline stage holds at its peak."""
    if pp == 1:
        return 1
    return n_micro if schedule == "GPipe" else min(pp, n_micro)


def activation_bytes(m: ModelConfig, dims: ParallelDims, seq_len: int, micro_batch: int, compute_bytes: int,
                     checkpointing: bool, layers: int, has_head: bool, in_flight: int) -> int:
    tokens = seq_len * micro_batch
    per_layer = activation_bytes_per_token(m, dims.tp, compute_bytes) * tokens
    if checkpointing:  # each block keeps its input; one block's activations exist while it is recomputed
        kept = layers * tokens * m.dim * FP32 / dims.tp + per_layer / in_flight
    else:
        kept = layers * per_layer
    # The loss's backward holds one chunk of logits upcast to fp32 and its softmax at a time.
    chunk = 2 * FP32 * min(tokens * m.vocab_size, CHUNK_ELEMENTS)
    head = logits_bytes_per_token(m, compute_bytes) * tokens + chunk if has_head else 0
    return int(in_flight * kept + head)


def layout_bytes(m: ModelConfig, dims: ParallelDims, seq_len: int, micro_batch: int, precision: str = "bf16",
                 checkpointing: bool = False, schedule: str = "1F1B", n_micro: int = 0) -> Bytes:
    """Bytes on the fullest GPU of this layout (each figure its own maximum over ranks)."""
    compute = FP32 if precision == "fp32" else 2  # "auto" on a GPU is bf16
    chunks = 2 if dims.pp > 1 and schedule == "Interleaved1F1B" else 1
    n_micro = n_micro or max(dims.pp, 1)
    ranks = stage_weights(m, dims.pp, chunks)
    params = grads = optimizer = activations = buffers = 0
    for pp_rank, weights in enumerate(ranks):
        p, g, o = state_bytes(weights, dims)
        n_layers = sum(1 for w in weights if w.name.endswith("attention_norm.weight"))
        in_flight = in_flight_microbatches(dims.pp, schedule, n_micro) if pp_rank == 0 else 1
        has_head = any(w.stage_part == "head" for w in weights)
        act = activation_bytes(m, dims, seq_len, micro_batch, compute, checkpointing, n_layers, has_head, in_flight)
        params, grads, optimizer = max(params, p), max(grads, g), max(optimizer, o)
        activations = max(activations, act)
        buffers = max(buffers, buffer_bytes(m, dims, weights, compute))
    return Bytes(params, grads, optimizer, activations, buffers)


def buffer_bytes(m: ModelConfig, dims: ParallelDims, weights: list[Weight], compute_bytes: int) -> int:
    rope = 2 * m.max_seq_len * m.head_dim * FP32
    if dims.dp == 1:
        return rope
    block = sum(math.prod(w.shape) // (dims.tp if w.tp_dim is not None else 1)
                for w in model_weights(m, range(1), first=False, last=False))  # one layer, as TP leaves it
    if dims.dp_shard == 1 and dims.tp == 1:  # DDP: gradient buckets as large as the gradients
        return rope + FP32 * sum(math.prod(w.shape) for w in weights)
    root = sum(math.prod(w.shape) // (dims.tp if w.tp_dim is not None else 1) for w in weights
               if w.stage_part != "layer")
    return rope + 2 * block * compute_bytes + block * FP32 + root * compute_bytes


def valid_layouts(m: ModelConfig, gpus: int, gpus_per_node: int) -> list[ParallelDims]:
    """Every (dp, tp, pp) with dp x tp x pp = gpus that this model can take; tp stays within a node
    (its collectives run on every matmul and need NVLink-class bandwidth)."""
    out = []
    for tp in range(1, min(gpus, gpus_per_node) + 1):
        if gpus % tp or m.n_heads % tp or m.n_kv_heads % tp or m.ffn_hidden_dim % tp:
            continue
        for pp in range(1, gpus // tp + 1):
            if (gpus // tp) % pp or pp > m.n_layers or (pp > 1 and m.tie_embeddings):
                continue
            out.append(ParallelDims(pp=pp, dp_shard=gpus // (tp * pp), tp=tp))
    return out


def plan(m: ModelConfig, gpus: int, gpus_per_node: int, gpu_mem_bytes: int, seq_len: int, micro_batch: int,
         precision: str, checkpointing: bool, schedule: str = "1F1B", global_tokens: int = 0,
         pp_microbatches: int = 0) -> dict:
    """Every valid layout's bytes per GPU and the one to use. global_tokens (tokens per step) and
    pp_microbatches set how many micro-batches a pipeline runs, as a training run with that config
    would (0: one per stage)."""
    for name, value in (("--gpus", gpus), ("--gpus-per-node", gpus_per_node), ("--seq-len", seq_len),
                        ("--micro-batch", micro_batch)):
        if value < 1:
            raise ScratchError(f"{name} must be at least 1, got {value}")
    if gpu_mem_bytes <= 0:
        raise ScratchError(f"--gpu-mem-gb must be positive, got {gpu_mem_bytes / 1e9:g}")
    layouts = []
    for dims in valid_layouts(m, gpus, gpus_per_node):
        local_batch = global_tokens // seq_len // dims.dp
        n_micro = (pipeline_microbatches(ParallelConfig(pp_microbatches=pp_microbatches), micro_batch, local_batch)
                   if global_tokens else pp_microbatches)
        b = layout_bytes(m, dims, seq_len, micro_batch, precision, checkpointing, schedule, n_micro)
        layouts.append({"dp": dims.dp, "tp": dims.tp, "pp": dims.pp, "bytes": b.as_dict(),
                        "fits": b.total <= FIT_FRACTION * gpu_mem_bytes})
    fitting = [x for x in layouts if x["fits"]]
    if fitting:
        # Least model parallelism first: data parallel scales with the least communication per
        # token; then a shorter pipeline (each stage adds bubble); then the smallest footprint.
        best = min(fitting, key=lambda x: (x["tp"] * x["pp"], x["pp"], x["bytes"]["total"]))
        reason = (f"the fewest model-parallel ranks that fit (tp x pp = {best['tp'] * best['pp']}), leaving "
                  f"dp = {best['dp']} for data parallelism, which scales with the least communication per token")
        if best["tp"] > 1:
            reason += f"; tp {best['tp']} stays inside a node of {gpus_per_node}"
        if best["pp"] > 1:
            reason += f"; pp {best['pp']} splits the layers because tp alone does not fit"
    else:  # dp = gpus, tp = pp = 1 is always valid, so there is a smallest one
        best = min(layouts, key=lambda x: x["bytes"]["total"])
        reason = ("nothing fits; this is the smallest footprint"
                  + ("" if checkpointing else ": try --activation-checkpointing") + ", a smaller micro-batch, "
                  "a shorter sequence or more GPUs")
    return {"layouts": layouts, "recommended": {**best, "reason": reason}}
