"""What a training stage is: a batch source and a loss (DESIGN.md, principle 2).

Pretraining and SFT are the same stage with different batch sources: rows of token ids whose next-token
targets are either trained or IGNORE (padding, prompts, system and user turns). A later stage (reward
model, DPO, RL) brings its own loss and counts its own units (pairs, response tokens).

A batch is a dict of tensors, every one with the batch's rows as its first dimension:

    inputs    (rows, seq) token ids
    targets   (rows, seq) the next token of each position, or IGNORE where it is not trained
    segments  (rows, seq) optional: which sequence of a packed row each token belongs to

and any per-row values a stage's loss needs (rows,).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from scratchlm.model import positions_and_mask

Batch = dict[str, torch.Tensor]
IGNORE = -100  # F.cross_entropy's ignore_index
# A stage's loss over a (micro-)batch: its sum over the units, and other values summed the same way
# (e.g. DPO's reward margins): the loop divides both by the global count and logs the means.
LossOutput = tuple[torch.Tensor, dict[str, torch.Tensor]]


class BatchSource(Protocol):
    def batch_for(self, step: int) -> Batch: ...  # this data-parallel rank's share of the step's global batch

    def log_values(self, step: int) -> dict[str, float]: ...  # numbers of the step's global batch worth logging


class Stage(Protocol):
    """What a training stage brings to the loop (scratchlm.train.trainer)."""

    name: str  # shown on the progress bar
    validation: list[Batch]  # this rank's validation batches: as many on every rank

    def batch_for(self, step: int) -> Batch: ...

    def micro_batches(self, batch: Batch, size: int) -> list[Batch]: ...

    def count(self, batch: Batch) -> int: ...  # units the loss sums over

    def loss(self, model: nn.Module, batch: Batch) -> LossOutput: ...

    def log_values(self, step: int) -> dict[str, float]: ...


def token_loss_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of every trained next token, summed, in fp32 whatever the compute precision."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE, reduction="sum")


def next_token_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Summed next-token loss of a batch; packed rows restart positions per sequence and never attend across."""
    positions = mask = None
    if "segments" in batch:
        positions, mask = positions_and_mask(batch["segments"])
    return token_loss_sum(model(batch["inputs"], positions=positions, mask=mask), batch["targets"])


def trained_tokens(batch: Batch) -> int:
    return int((batch["targets"] != IGNORE).sum())


def split_rows(batch: Batch, size: int) -> list[Batch]:
    """Micro-batches of `size` rows, each cut after its last trained column: rows sorted by length then
    carry little padding (columns after the last trained target cannot change an earlier position's loss)."""
    out = []
    rows = batch["targets"].shape[0]
    for start in range(0, rows, size):
        micro = {k: v[start:start + size] for k, v in batch.items()}
        trained = (micro["targets"] != IGNORE).any(dim=0).nonzero()
        width = int(trained.max()) + 1 if len(trained) else 1
        out.append({k: v[:, :width] if v.dim() > 1 else v for k, v in micro.items()})
    return out


def shard_validation(rows: Batch, dp_rank: int, dp_size: int, batch_rows: int) -> list[Batch]:
    """This rank's share of a fixed validation set, in batches of batch_rows.

    The set is a function of the data alone; rank r takes rows r, r + dp, ... . Every rank gets as many
    batches of the same shape (the collectives of FSDP and the pipeline need that), the missing rows
    filled with untrained padding, which the loss and the count both skip: the validation loss is the
    same on every layout."""
    mine = {k: v[dp_rank::dp_size] for k, v in rows.items()}
    n_batches = max(1, math.ceil(math.ceil(rows["targets"].shape[0] / dp_size) / batch_rows))
    want = n_batches * batch_rows
    have = mine["targets"].shape[0]
    if have < want:
        filler = {k: torch.full((want - have, *v.shape[1:]), IGNORE if k == "targets" else 0, dtype=v.dtype)
                  for k, v in mine.items()}
        mine = {k: torch.cat([v, filler[k]]) for k, v in mine.items()}
    return [{k: v[i * batch_rows:(i + 1) * batch_rows] for k, v in mine.items()} for i in range(n_batches)]


@dataclass
class TokenStage:
    """Next-token prediction on a batch source: pretraining's windows, SFT's conversations."""

    name: str
    source: BatchSource
    validation: list[Batch] = field(default_factory=list)

    def batch_for(self, step: int) -> Batch:
        return self.source.batch_for(step)

    def micro_batches(self, batch: Batch, size: int) -> list[Batch]:
        return split_rows(batch, size)

    def count(self, batch: Batch) -> int:
        return trained_tokens(batch)

    def loss(self, model: nn.Module, batch: Batch) -> LossOutput:
        return next_token_loss(model, batch), {}

    def log_values(self, step: int) -> dict[str, float]:
        return self.source.log_values(step)
