"""`scratchlm dpo SFT_RUN --out RUN`: direct preference optimisation, on the one launch and loop.

    pairs (embedded | .jsonl / .parquet | hf:NAME)  -- scratchlm.posttrain.pairs
    -> log pi(y | x): the sum of the log-probs of the reply's trained tokens (the assistant's words and turn
       ends after the prompt), for the policy and for the frozen reference (the SFT weights)
    -> the implicit reward r = beta * (log pi(y | x) - log pi_ref(y | x)) of each side, and the loss
       sigmoid: -log sigmoid(r_chosen - r_rejected)                        (DPO, Rafailov et al. 2023)
       ipo:     (h - 1 / (2 beta))^2, h = (r_chosen - r_rejected) / beta   (IPO, Azar et al. 2023)
       summed over pairs and divided by the pairs of the whole global batch (scratchlm.train.trainer)
    -> logs rewards/chosen, rewards/rejected, margins (their difference), accuracy (the share of pairs
       whose implicit reward ranks chosen above rejected), logps/chosen and logps/rejected, as means over
       the batch; val_* are the same on held-out pairs

The reference runs on the fly: a second copy of the SFT weights, built and sharded like the policy, that
scores each micro-batch under no_grad. It costs one forward pass per sequence (a third more compute than
the policy's forward and backward) and one more copy of the weights (no gradients, no optimizer state).
Precomputing its log-probs once would save that forward only from the second epoch on, and would need a
cache kept in step with the data and the layout; on the fly, the reference is exact at every step, on
every layout and after --resume, with nothing stored. Under bf16 it computes in the same precision as the
policy, so at step 0 both agree exactly: every reward is 0 and the loss is log 2.
dpo.reference_free true drops the reference (the policy's log-prob ratio alone).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from scratchlm.chat import load_chat_format
from scratchlm.config import Config
from scratchlm.errors import ScratchError
from scratchlm.parallel.world import World
from scratchlm.posttrain.common import carry_run_files, check_layout, frozen_reference, require_policy, token_logps
from scratchlm.posttrain.pairs import (
    PairBatches,
    PairStage,
    describe_pairs,
    load_pair_rows,
    real_pairs,
    summed,
    validation_batches,
)
from scratchlm.run import open_run
from scratchlm.tokenizer import BPETokenizer
from scratchlm.train.launch import Shares, launch
from scratchlm.train.stage import Batch, LossOutput, Stage

# What DPO changes from its parent's config (common.stage_config): preference pairs instead of
# conversations, a short schedule at a low peak rate, and a validation set of 128 pairs.
DPO_DEFAULTS = {
    "data": {"source": "embedded", "embedded_docs": 4000, "max_docs": 0},
    "train": {"max_steps": 200, "eval_every": 50, "save_every": 100, "log_every": 10, "eval_batches": 8},
    "optim": {"lr": 1e-4, "warmup_steps": 20, "lr_decay_steps": 0},
}
LOSSES = ("sigmoid", "ipo")


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, reference_chosen: torch.Tensor,
             reference_rejected: torch.Tensor, beta: float, loss: str = "sigmoid"
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair losses and the implicit rewards of chosen and rejected, from sequence log-probs (pairs,)."""
    if loss not in LOSSES:
        raise ScratchError(f"dpo.loss must be one of {', '.join(LOSSES)}, got '{loss}'")
    chosen = policy_chosen - reference_chosen  # log pi / pi_ref of each side
    rejected = policy_rejected - reference_rejected
    h = chosen - rejected
    losses = -F.logsigmoid(beta * h) if loss == "sigmoid" else (h - 1 / (2 * beta)) ** 2
    return losses, beta * chosen.detach(), beta * rejected.detach()


def sequence_logps(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log pi of each row's trained targets, summed, in fp32 (rows,)."""
    return token_logps(model, inputs, targets).sum(-1)


def pair_logps(model: nn.Module, batch: Batch) -> torch.Tensor:
    """log pi of each side's reply, (pairs, 2): both sides in one forward pass."""
    return sequence_logps(model, batch["inputs"].flatten(0, 1), batch["targets"].flatten(0, 1)).view(-1, 2)


class DPOStage(PairStage):
    def __init__(self, source: PairBatches, validation: list[Batch], reference: nn.Module | None, beta: float,
                 loss: str) -> None:
        super().__init__("dpo", source, validation)
        self.reference, self.beta, self.kind = reference, beta, loss

    def loss(self, model: nn.Module, batch: Batch) -> LossOutput:
        policy = pair_logps(model, batch)
        if self.reference is None:
            reference = torch.zeros_like(policy)
        else:
            with torch.no_grad():
                reference = pair_logps(self.reference, batch)
        losses, chosen, rejected = dpo_loss(policy[:, 0], policy[:, 1], reference[:, 0], reference[:, 1],
                                            self.beta, self.kind)
        real = real_pairs(batch)
        return (losses * real).sum(), summed({
            "rewards/chosen": chosen, "rewards/rejected": rejected, "margins": chosen - rejected,
            "accuracy": chosen > rejected, "logps/chosen": policy[:, 0], "logps/rejected": policy[:, 1]}, real)


def dpo(cfg: Config, parent_run: Path, run_dir: Path, resume: bool = False,
        user_keys: frozenset[str] = frozenset()) -> dict[str, float]:
    """Optimise parent_run's policy on preference pairs into run_dir, in this process or as a torchrun rank."""
    parent_cfg, _, parent_ckpt = open_run(parent_run)  # refuses a missing run or one without weights, first
    require_policy(parent_run, parent_cfg, "scratchlm dpo")
    check_layout(cfg, "scratchlm dpo")

    def data(world: World) -> tuple[BPETokenizer, Callable[[Shares], Stage]]:
        fmt = load_chat_format(parent_run)
        say = tqdm.write if world.is_main else (lambda _text: None)
        train, val = load_pair_rows(cfg, fmt, say)
        pad, t = fmt.tokenizer.pad_id, cfg.train

        def stage(shares: Shares) -> Stage:
            batches = PairBatches(train, t.global_batch, shares.dp_rank, shares.dp_size, t.seed, pad)
            validation = validation_batches(val, shares, pad)
            say(describe_pairs("dpo", cfg, train, batches, min(len(val), shares.val_sequences)))
            reference = None if cfg.dpo.reference_free else frozen_reference(cfg, world, parent_ckpt)
            return DPOStage(batches, validation, reference, cfg.dpo.beta, cfg.dpo.loss)
        return fmt.tokenizer, stage

    return launch(cfg, run_dir, resume, data, user_keys, parent_checkpoint=parent_ckpt,
                  write_files=carry_run_files(parent_run))
