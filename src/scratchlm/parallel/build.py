"""The model as this rank holds it: built on the meta device, split into pipeline stages, parallelized,
then only this rank's shards allocated and initialised."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from scratchlm.config import Config
from scratchlm.model import Transformer
from scratchlm.parallel.parallelize import materialize, parallelize
from scratchlm.parallel.pipeline import Pipeline, split_model, stage_ids
from scratchlm.parallel.world import World, pipeline_microbatches, pipeline_stages


def build_parallel_model(cfg: Config, world: World, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
                         ) -> tuple[nn.Module, Pipeline | None]:
    """-> (model, None) without pipeline parallel; (ModuleList of this rank's stages, their Pipeline) with it.

    loss_fn(logits, targets) is the pipeline's loss on the last stage.
    """
    t = cfg.train
    if world.dims.pp == 1:
        with torch.device("meta"):
            model = Transformer(cfg.model)
        parallelize(model, t, world)
        materialize(model, world.device, t.seed)
        return model, None
    n_stages = pipeline_stages(cfg.parallel)
    parts = [split_model(cfg.model, sid, n_stages) for sid in stage_ids(world, n_stages)]
    for part in parts:
        parallelize(part, t, world)
        materialize(part, world.device, t.seed)
    local_batch = t.global_batch // world.dims.dp
    micro = pipeline_microbatches(cfg.parallel, t.micro_batch_size, local_batch)
    return nn.ModuleList(parts), Pipeline(parts, world, cfg.parallel.pp_schedule, micro, loss_fn)
