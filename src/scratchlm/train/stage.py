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

    # Optionally `companion`: a second model the loss trains too (scratchlm.train.companion), e.g. PPO's value model.


CHUNK_ELEMENTS = 2**22  # logits per chunk of the cross-entropy: 16 MiB in fp32, whatever the vocabulary


def _chunk_losses(logits: torch.Tensor, picked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (log-sum-exp, cross-entropy) of each row of one chunk, in fp32."""
    upcast = logits.float()
    lse = torch.logsumexp(upcast, dim=-1)
    return lse, lse - upcast.gather(1, picked).squeeze(1)


def _chunk_grad(logits: torch.Tensor, lse: torch.Tensor, picked: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(softmax - one_hot) x each row's scale, for one chunk, in fp32: the cross-entropy's gradient."""
    probs = logits.to(torch.float32, copy=True).sub_(lse[:, None]).exp_()
    probs.scatter_add_(1, picked, torch.full_like(probs[:, :1], -1.0))
    return probs.mul_(scale[:, None])


class ChunkedCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of logits (tokens, vocab) against targets (tokens,), in fp32, a chunk of rows at a time.

    The plain way, F.cross_entropy(logits.float()), holds three fp32 copies of the whole batch's logits at
    once (the upcast, the log-probabilities autograd saves, their gradient): 12 bytes per token and
    vocabulary entry, 6 GiB for 4,096 tokens at Llama 3's 128k vocabulary. Here the forward keeps the logits
    as they are (bf16 under autocast) and one log-sum-exp per token; the backward recomputes softmax - one_hot
    chunk by chunk and writes the gradient in the logits' dtype. One chunk at a time exists in fp32.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        rows = max(1, CHUNK_ELEMENTS // logits.shape[-1])
        trained = targets != IGNORE
        picked = targets.clamp(min=0).unsqueeze(1)  # an untrained row picks entry 0, then counts for nothing
        chunks = zip(logits.split(rows), picked.split(rows), strict=True)
        lse, losses = zip(*(_chunk_losses(chunk, p) for chunk, p in chunks), strict=True)
        lse = torch.cat(lse)
        ctx.save_for_backward(logits, picked, trained, lse)
        ctx.rows = rows
        return torch.where(trained, torch.cat(losses), 0).sum()

    @staticmethod
    def backward(ctx, grad_total: torch.Tensor) -> tuple[torch.Tensor, None]:
        logits, picked, trained, lse = ctx.saved_tensors
        scale = trained * grad_total
        grad = torch.empty_like(logits)
        chunks = (t.split(ctx.rows) for t in (grad, logits, lse, picked, scale))
        for out, chunk, chunk_lse, chunk_picked, chunk_scale in zip(*chunks, strict=True):
            out.copy_(_chunk_grad(chunk, chunk_lse, chunk_picked, chunk_scale))  # freed before the next chunk
        return grad, None


def token_loss_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of every trained next token, summed, in fp32 whatever the compute precision.

    Eager: chunk by chunk (ChunkedCrossEntropy), so the batch's logits never exist in fp32. Compiled:
    the plain expression, which inductor fuses (upcast, log-sum-exp and gradient in single kernels that
    never write the fp32 logits) and traces at any sequence width, which a Python loop over chunks is not.
    """
    logits, targets = logits.flatten(0, 1), targets.flatten()
    if torch.compiler.is_compiling():
        return F.cross_entropy(logits.float(), targets, ignore_index=IGNORE, reduction="sum")
    return ChunkedCrossEntropy.apply(logits, targets)


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
        # Contiguous: a compiled loss would otherwise see a new stride with each width, and compile again.
        out.append({k: v[:, :width].contiguous() if v.dim() > 1 else v for k, v in micro.items()})
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
