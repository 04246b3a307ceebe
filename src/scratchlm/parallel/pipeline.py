"""Pipeline parallel with torch.distributed.pipelining: split the model into stages by layers.

A stage is the same Transformer with the other stages' layers deleted from its ModuleDict (the kept
ones keep their names, "layers.7" stays "layers.7"), the embedding only on the first stage and the
final norm and head only on the last. Rank r of the pp dimension holds stage r, or with
interleaved 1F1B stages r and r + pp (two smaller chunks per rank: a shorter pipeline bubble for
more point-to-point messages).

Schedules: GPipe runs all micro-batches forward, then all backward (activations of every
micro-batch alive at once); 1F1B starts backward as soon as the last stage can, so a stage keeps at
most pp micro-batches' activations; interleaved 1F1B also shrinks the bubble by the chunk count.
The schedule's step replaces the forward/backward of the trainer's loop; gradients are averaged
over micro-batches (scale_grads), as gradient accumulation does.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe, ScheduleInterleaved1F1B

from scratchlm.config import ModelConfig
from scratchlm.model import Transformer
from scratchlm.parallel.world import World

SCHEDULE_CLASSES = {"GPipe": ScheduleGPipe, "1F1B": Schedule1F1B, "Interleaved1F1B": ScheduleInterleaved1F1B}


def stage_layers(n_layers: int, n_stages: int) -> list[range]:
    """Contiguous layer ranges, as even as possible; earlier stages take the remainder."""
    base, extra = divmod(n_layers, n_stages)
    ranges, start = [], 0
    for stage in range(n_stages):
        end = start + base + (1 if stage < extra else 0)
        ranges.append(range(start, end))
        start = end
    return ranges


def stage_ids(world: World, n_stages: int) -> list[int]:
    """Stages held by this rank: r, r + pp, ... (loop order, as the interleaved schedules expect)."""
    return list(range(world.pp_rank, n_stages, world.dims.pp))


def split_model(cfg: ModelConfig, stage: int, n_stages: int) -> Transformer:
    """A meta-device Transformer holding only `stage`'s part."""
    with torch.device("meta"):
        model = Transformer(cfg)
    keep = stage_layers(cfg.n_layers, n_stages)[stage]
    for name in list(model.layers):
        if int(name) not in keep:
            del model.layers[name]
    if stage != 0:
        model.tok_embeddings = None
    if stage != n_stages - 1:
        model.norm = None
        model.output = None
    return model


class Pipeline:
    """The schedule for this rank's stages, with the loss of each step on the last stage.

    The loss is a sum over the micro-batch's trained tokens times a scale the trainer sets per step
    (data-parallel size / trained tokens of the global batch), so the schedule must not average the
    gradients over micro-batches again (scale_grads=False): the result equals gradient accumulation.
    """

    def __init__(self, parts: list[nn.Module], world: World, schedule: str, n_microbatches: int,
                 loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        n_stages = len(parts) * world.dims.pp
        ids = stage_ids(world, n_stages)
        group = world.submesh("pp").get_group()
        stages = [PipelineStage(part, sid, n_stages, world.device, group=group)
                  for part, sid in zip(parts, ids, strict=True)]
        self.has_first, self.has_last = 0 in ids, n_stages - 1 in ids
        self.scale = 1.0
        cls = SCHEDULE_CLASSES[schedule]
        self.schedule = cls(stages if cls is ScheduleInterleaved1F1B else stages[0], n_microbatches,
                            loss_fn=lambda output, target: loss_fn(output, target) * self.scale, scale_grads=False)
        self.device = world.device

    def _run(self, run: Callable, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        losses: list[torch.Tensor] = []
        args = (inputs,) if self.has_first else ()
        run(*args, target=targets, losses=losses)
        if not self.has_last:
            return torch.zeros((), device=self.device)
        return torch.stack([loss.detach() for loss in losses]).sum()

    def step(self, inputs: torch.Tensor, targets: torch.Tensor, scale: float) -> torch.Tensor:
        """Forward and backward of one step's batch in micro-batches; the scaled loss summed over them on the
        last stage, zero elsewhere."""
        self.scale = scale
        return self._run(self.schedule.step, inputs, targets)

    def eval(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The summed loss of a batch on the last stage, zero elsewhere."""
        self.scale = 1.0
        return self._run(self.schedule.eval, inputs, targets)
