"""The processes of a run and how they are arranged: parallel dims -> a DeviceMesh.

    world size = pp x dp_replicate x dp_shard x tp      (dp_shard = -1: whatever the others leave)

The mesh is laid out in that order, tp innermost: the ranks of a tensor-parallel group are
neighbours (one node, fast links), then the data-parallel shards, then replicas, and pipeline
stages outermost (they exchange only activations, the least traffic of all).

Everything a user can get wrong (a mesh that does not multiply to the world size, tp that does not
divide the heads, more stages than layers, NCCL without GPUs) is checked from the config and the
torchrun environment, before init_process_group, so every rank fails with the same one-line error
and none waits on the others.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from scratchlm.config import Config, ModelConfig, ParallelConfig
from scratchlm.errors import ScratchError

MESH_DIMS = ("pp", "dp_replicate", "dp_shard", "tp")
SCHEDULES = ("GPipe", "1F1B", "Interleaved1F1B")
T = TypeVar("T")


@dataclass(frozen=True)
class ParallelDims:
    pp: int = 1
    dp_replicate: int = 1
    dp_shard: int = 1
    tp: int = 1

    @property
    def world_size(self) -> int:
        return self.pp * self.dp_replicate * self.dp_shard * self.tp

    @property
    def dp(self) -> int:
        """Data-parallel size: how many different slices of each global batch are in flight."""
        return self.dp_replicate * self.dp_shard

    def __str__(self) -> str:
        return f"pp {self.pp} x dp_replicate {self.dp_replicate} x dp_shard {self.dp_shard} x tp {self.tp}"


def resolve_dims(cfg: ParallelConfig, world_size: int) -> ParallelDims:
    """The config's dims with dp_shard = -1 inferred; refuses a mesh that does not fill world_size."""
    for name in ("pp", "dp_replicate", "tp"):
        if getattr(cfg, name) < 1:
            raise ScratchError(f"parallel.{name} must be at least 1, got {getattr(cfg, name)}")
    fixed = cfg.pp * cfg.dp_replicate * cfg.tp
    if cfg.dp_shard == -1:
        if world_size % fixed:
            raise ScratchError(f"parallel.pp x dp_replicate x tp = {fixed} does not divide the world size "
                               f"{world_size}; choose dims whose product divides it")
        return ParallelDims(cfg.pp, cfg.dp_replicate, world_size // fixed, cfg.tp)
    if cfg.dp_shard < 1:
        raise ScratchError(f"parallel.dp_shard must be at least 1 or -1 (infer), got {cfg.dp_shard}")
    dims = ParallelDims(cfg.pp, cfg.dp_replicate, cfg.dp_shard, cfg.tp)
    if dims.world_size != world_size:
        raise ScratchError(f"the mesh {dims} = {dims.world_size} processes, but the world size is {world_size}; "
                           "make the product equal the world size or set --parallel.dp_shard -1")
    return dims


def pipeline_stages(cfg: ParallelConfig) -> int:
    """Model chunks in the pipeline: interleaved 1F1B keeps two per rank (virtual stages)."""
    return cfg.pp * (2 if cfg.pp > 1 and cfg.pp_schedule == "Interleaved1F1B" else 1)


def check_dims(dims: ParallelDims, cfg: Config) -> None:
    """Refuse layouts this model or batch cannot take."""
    m, t, p = cfg.model, cfg.train, cfg.parallel
    check_model_fits(dims, m, pipeline_stages(p))
    if p.pp_schedule not in SCHEDULES:
        raise ScratchError(f"parallel.pp_schedule must be one of {', '.join(SCHEDULES)}, got '{p.pp_schedule}'")
    global_batch = t.global_batch  # its split into micro-batches was fitted to dp before (train.launch)
    if global_batch % (dims.dp * t.micro_batch_size):
        raise ScratchError(f"the global batch of {global_batch} sequences does not split into {dims.dp} data-parallel "
                           f"ranks x micro-batches of {t.micro_batch_size}; change train.global_batch_tokens, "
                           "train.micro_batch_size or the mesh")
    if dims.tp > 1 and t.seq_len % dims.tp:
        raise ScratchError(f"train.seq_len {t.seq_len} is not divisible by parallel.tp {dims.tp} "
                           "(sequence parallelism splits the sequence among the tensor-parallel ranks)")
    if dims.pp > 1 and t.eval_tasks:
        raise ScratchError("train.eval_tasks does not run under pipeline parallel (each stage holds only its own "
                           "layers, and the evaluation needs the whole model); leave train.eval_tasks empty and score "
                           "the checkpoints with scratchlm eval")
    if dims.pp > 1:
        local = global_batch // dims.dp
        micro = pipeline_microbatches(p, t.micro_batch_size, local)
        if local % micro:
            raise ScratchError(f"parallel.pp_microbatches {micro} does not divide this rank's batch of {local} "
                               "sequences")
        if p.pp_schedule == "Interleaved1F1B" and micro % dims.pp:
            raise ScratchError(f"interleaved 1F1B needs a multiple of pp = {dims.pp} micro-batches, got {micro}; "
                               "set --parallel.pp_microbatches")


def check_model_fits(dims: ParallelDims, m: ModelConfig, stages: int) -> None:
    if m.n_heads % dims.tp or m.n_kv_heads % dims.tp:
        raise ScratchError(f"parallel.tp {dims.tp} must divide model.n_heads {m.n_heads} and model.n_kv_heads "
                           f"{m.n_kv_heads} (each tensor-parallel rank holds whole heads)")
    if m.ffn_hidden_dim % dims.tp:
        raise ScratchError(f"parallel.tp {dims.tp} must divide model.ffn_hidden_dim {m.ffn_hidden_dim}")
    if m.n_layers < stages:
        raise ScratchError(f"{stages} pipeline stages need at least {stages} layers, the model has {m.n_layers}; "
                           "lower parallel.pp")
    if dims.pp > 1 and m.tie_embeddings:
        raise ScratchError("tied embeddings put one tensor on the first and the last pipeline stage; set "
                           "--model.tie_embeddings false to train with parallel.pp > 1")


def pipeline_microbatches(p: ParallelConfig, micro_batch_size: int, local_batch: int) -> int:
    """parallel.pp_microbatches, or by default the local batch in micro-batches of train.micro_batch_size."""
    return p.pp_microbatches or max(1, local_batch // micro_batch_size)


def resolve_backend(name: str) -> str:
    if name == "auto":
        return "nccl" if torch.cuda.is_available() else "gloo"
    if name not in ("nccl", "gloo"):
        raise ScratchError(f"parallel.backend must be auto, nccl or gloo, got '{name}'")
    if name == "nccl" and not torch.cuda.is_available():
        raise ScratchError("parallel.backend nccl needs GPUs, and none is visible; use --parallel.backend gloo "
                           "(or auto) on CPU")
    return name


def env_world_size() -> int:
    """Processes in this run as torchrun set them up (1 when started without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


class World:
    """This process's place in the run: rank, device, mesh; None mesh means a single process."""

    def __init__(self, dims: ParallelDims, device: torch.device, mesh: DeviceMesh | None) -> None:
        self.dims, self.device, self.mesh = dims, device, mesh
        self.rank = dist.get_rank() if mesh is not None else 0
        coords = mesh.get_coordinate() if mesh is not None else [0, 0, 0, 0]
        self.pp_rank, replicate_rank, shard_rank, self.tp_rank = coords
        self.dp_rank = replicate_rank * dims.dp_shard + shard_rank

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.mesh is not None

    def submesh(self, *names: str) -> DeviceMesh:
        return self.mesh[names if len(names) > 1 else names[0]]

    def mean_over_batch(self, value: torch.Tensor) -> torch.Tensor:
        """Average a per-rank loss over the data-parallel ranks. Only the last pipeline stage computes a
        loss (the others contribute 0), and the tensor-parallel ranks of a stage hold the same one, so the
        sum over all ranks divided by dp x tp is the mean over the data-parallel groups."""
        if self.mesh is None:
            return value
        value = value.detach().clone()
        dist.all_reduce(value)
        return value / (self.dims.world_size // self.dims.pp)

    def sum_over_batch(self, value: torch.Tensor) -> torch.Tensor:
        """Sum per-rank numbers over the data-parallel ranks. The tensor- and pipeline-parallel ranks of one
        data-parallel group hold the same batch, so the sum over all ranks counts it tp x pp times."""
        if self.mesh is None:
            return value
        value = value.detach().clone()
        dist.all_reduce(value)
        return value / (self.dims.tp * self.dims.pp)

    def main_first(self, fn: Callable[[], T], agree: Callable[[list[T]], None] | None = None) -> T:
        """Run fn on rank 0 first (e.g. preparing a shared data cache), then on the others; all ranks fail
        together. Whichever rank's fn raises, that rank raises its own error and every other rank a
        ScratchError that names it, at once, instead of waiting in the next collective until the process
        group times out (under torchrun on several nodes, or any launcher that does not kill the rest).

        agree(results), when given, runs on every rank over all ranks' results (in rank order) and raises
        a ScratchError when they disagree (e.g. datasets made with different tokenizers): every rank sees
        the same results, so every rank refuses alike.
        """
        if self.mesh is None:
            result = fn()
            if agree is not None:
                agree([result])
            return result
        result, error = None, None
        if self.is_main:
            result, error = _attempt(fn)
        self._fail_together(error)  # rank 0's outcome first: its error stops the others before they start
        if not self.is_main:
            result, error = _attempt(fn)
        self._fail_together(error)
        if agree is not None:
            results: list[T | None] = [None] * self.dims.world_size
            dist.all_gather_object(results, result)
            agree(results)
        return result

    def from_main(self, fn: Callable[[], T]) -> T:
        """fn's result on rank 0, given to every rank: one measurement that all ranks decide by alike (a CPU's
        peak measured on each rank would differ a little, and ranks that chose different compile modes would
        wait on each other's collectives forever)."""
        result, error = _attempt(fn) if self.is_main else (None, None)
        if self.mesh is None:
            if error is not None:
                raise error
            return result
        self._fail_together(error)
        box = [result]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def _fail_together(self, error: Exception | None) -> None:
        """Every rank tells the others whether it failed; if one did, all raise (the failed one its own error)."""
        outcomes: list[tuple[str, str] | None] = [None] * self.dims.world_size
        kind = ScratchError.__name__ if isinstance(error, ScratchError) else type(error).__name__
        mine = None if error is None else (kind, str(error))
        dist.all_gather_object(outcomes, mine)
        if error is not None:
            raise error
        failed = next(((rank, o) for rank, o in enumerate(outcomes) if o is not None), None)
        if failed is not None:
            rank, (kind, message) = failed
            if kind == ScratchError.__name__:  # the user's mistake: the same line on every rank
                raise ScratchError(message)
            raise ScratchError(f"rank {rank} failed ({kind}: {message}); its traceback says where")

    def barrier(self) -> None:
        if self.mesh is not None:
            dist.barrier()

    def close(self) -> None:
        if self.mesh is not None and dist.is_initialized():
            dist.destroy_process_group()


def _attempt(fn: Callable[[], T]) -> tuple[T | None, Exception | None]:
    """fn's result, or the error it raised: held so that the other ranks hear of it before it is raised.
    (Interrupts are not held: they stop this process at once, and the launcher stops the rest.)"""
    try:
        return fn(), None
    except Exception as exc:  # any failure: the other ranks must hear of it, then it is raised as it was
        return None, exc


def setup_world(cfg: Config) -> World:
    """Validate the layout against the torchrun environment, then (with more than one process) join the
    process group and build the mesh."""
    world_size = env_world_size()
    dims = resolve_dims(cfg.parallel, world_size)
    check_dims(dims, cfg)
    if cfg.train.device == "cuda" and not torch.cuda.is_available():
        raise ScratchError("train.device is cuda but no GPU is visible; use --train.device cpu")
    backend = resolve_backend(cfg.parallel.backend)
    if cfg.train.device == "cpu" and backend == "nccl":
        raise ScratchError("parallel.backend nccl cannot train on train.device cpu; use gloo")
    use_cuda = backend == "nccl" or (cfg.train.device != "cpu" and torch.cuda.is_available())
    if use_cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size == 1:
        return World(dims, device, None)
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    mesh = init_device_mesh(device.type, (dims.pp, dims.dp_replicate, dims.dp_shard, dims.tp),
                            mesh_dim_names=MESH_DIMS)
    return World(dims, device, mesh)
