"""Run under torchrun: build the real sharded model for each layout given, take one training step, and
write this rank's local shard bytes of parameters, gradients and optimizer state to OUT/LAYOUT.RANK.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor

from scratchlm.config import Config, ModelConfig, ParallelConfig, TrainConfig
from scratchlm.parallel.build import build_parallel_model
from scratchlm.parallel.world import MESH_DIMS, ParallelDims, World
from scratchlm.train.optim import build_optimizer
from scratchlm.train.stage import token_loss_sum
from scratchlm.train.trainer import clip_grad_norm

# Sizes that do not divide evenly, so the planner's chunk arithmetic is tested too.
MODEL = ModelConfig(vocab_size=301, dim=64, n_layers=3, n_heads=4, n_kv_heads=2, ffn_hidden_dim=100, max_seq_len=32,
                    tie_embeddings=False)


def local_bytes(t: torch.Tensor) -> int:
    t = t.to_local() if isinstance(t, DTensor) else t
    return t.numel() * t.element_size()


def main(out: Path, layouts: list[str]) -> None:
    dist.init_process_group("gloo")
    for layout in layouts:
        pp, dp_shard, tp, dp_replicate = (int(x) for x in layout.split("x"))
        dims = ParallelDims(pp=pp, dp_replicate=dp_replicate, dp_shard=dp_shard, tp=tp)
        mesh = init_device_mesh("cpu", (pp, dp_replicate, dp_shard, tp), mesh_dim_names=MESH_DIMS)
        world = World(dims, torch.device("cpu"), mesh)
        cfg = Config(model=MODEL, train=TrainConfig(seq_len=16, micro_batch_size=2, global_batch_tokens=16 * 8,
                                                    precision="fp32"),
                     parallel=ParallelConfig(pp=pp, dp_replicate=dp_replicate, dp_shard=dp_shard, tp=tp,
                                             pp_microbatches=2))
        model, pipeline = build_parallel_model(cfg, world, token_loss_sum)
        optimizer = build_optimizer(model, cfg.optim)
        gen = torch.Generator().manual_seed(world.dp_rank)
        x = torch.randint(0, MODEL.vocab_size, (8 // dims.dp, 16), generator=gen)
        y = torch.randint(0, MODEL.vocab_size, (8 // dims.dp, 16), generator=gen)
        if pipeline is not None:
            pipeline.step(x, y, 1.0)
        else:
            token_loss_sum(model(x), y).backward()
        params = [p for p in model.parameters()]
        clip_grad_norm(params, 1.0, world)
        optimizer.step()
        record = {"params": sum(local_bytes(p) for p in params),
                  "grads": sum(local_bytes(p.grad) for p in params if p.grad is not None),
                  "optimizer": sum(local_bytes(v) for state in optimizer.state.values() for v in state.values()
                                   if isinstance(v, torch.Tensor))}
        (out / f"{layout}.{dist.get_rank()}.json").write_text(json.dumps(record))
        dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
