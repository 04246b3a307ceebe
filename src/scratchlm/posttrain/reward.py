"""`scratchlm reward SFT_RUN --out RM_RUN`: a reward model learned from preference pairs, on the one launch
and loop.

    pairs (embedded | .jsonl / .parquet | hf:NAME)  -- scratchlm.posttrain.pairs
    -> the transformer with a score head (model.head score): one number per position, read at each side's
       last token, the end of the reply's turn, which has seen the prompt and the whole reply
    -> Bradley-Terry: P(chosen preferred) = sigmoid(r_chosen - r_rejected); the loss
       -log sigmoid(r_chosen - r_rejected - margin), summed over pairs and divided by the pairs of the
       whole global batch (scratchlm.train.trainer)
    -> logs accuracy (the share of pairs with r_chosen > r_rejected), rewards/chosen, rewards/rejected and
       margins (their means); val_accuracy is the pairwise accuracy on held-out pairs

The run starts from SFT_RUN's embedding, blocks and final norm; the LM head is left behind and a new
score head, Linear(dim, 1), starts from the initialiser (as transformers' LlamaForSequenceClassification
starts its score). `export-hf` writes the run as a LlamaForSequenceClassification with num_labels 1.
Transformers reads a sequence's score at its last token that is not the pad token, and so does this model
when the pad token never ends a rendered conversation (true of our format; checked at export).
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
from scratchlm.posttrain.common import carry_run_files, check_layout
from scratchlm.posttrain.pairs import (
    PairBatches,
    PairStage,
    describe_pairs,
    load_pair_rows,
    real_pairs,
    summed,
    validation_batches,
)
from scratchlm.run import load_tokenizer, open_run, read_config
from scratchlm.tokenizer import BPETokenizer
from scratchlm.train.checkpoint import load_weights
from scratchlm.train.launch import Shares, launch
from scratchlm.train.stage import Batch, LossOutput, Stage

# What a reward model changes from its parent's config (common.stage_config): the score head, preference
# pairs instead of conversations, a short schedule, and a validation set of 128 pairs.
REWARD_DEFAULTS = {
    "model": {"head": "score"},
    "data": {"source": "embedded", "embedded_docs": 4000, "max_docs": 0},
    # eval_tasks: a parent's task scores need a language model; a reward model writes no text
    "train": {"max_steps": 200, "eval_every": 50, "save_every": 100, "log_every": 10, "eval_batches": 8,
              "eval_tasks": []},
    "optim": {"lr": 3e-4, "warmup_steps": 20, "lr_decay_steps": 0},
}
SCORE = "score.weight"  # the head a reward model adds to its parent's tensors


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | float = 0.0
                       ) -> torch.Tensor:
    """-log sigmoid(r_chosen - r_rejected - margin) per pair: the negative log-likelihood of the preference
    under the Bradley-Terry model, pushed to exceed the margin."""
    return -F.logsigmoid(chosen - rejected - margin)


def pair_scores(model: nn.Module, batch: Batch) -> torch.Tensor:
    """The reward of each side of each pair, (pairs, 2) in fp32: the score at its last token."""
    scores = model(batch["inputs"].flatten(0, 1))
    last = (batch["lengths"].flatten() - 1).clamp(min=0)
    return scores.gather(1, last[:, None]).float().view(-1, 2)


class RewardStage(PairStage):
    def loss(self, model: nn.Module, batch: Batch) -> LossOutput:
        rewards = pair_scores(model, batch)
        chosen, rejected = rewards[:, 0], rewards[:, 1]
        real = real_pairs(batch)
        losses = bradley_terry_loss(chosen, rejected, batch["margins"])
        return (losses * real).sum(), summed({"rewards/chosen": chosen, "rewards/rejected": rejected,
                                              "margins": chosen - rejected, "accuracy": chosen > rejected}, real)


def reward(cfg: Config, parent_run: Path, run_dir: Path, resume: bool = False,
           user_keys: frozenset[str] = frozenset()) -> dict[str, float]:
    """Train a reward model on preference pairs into run_dir, starting from parent_run's trunk, in this process
    or as a torchrun rank."""
    parent_cfg, _, parent_ckpt = open_run(parent_run)  # refuses a missing run or one without weights, first
    if cfg.model.head != "score":
        raise ScratchError(f"a reward model has model.head score, not {cfg.model.head}; drop --model.head")
    check_layout(cfg, "scratchlm reward", tensor_parallel=False)

    def data(world: World) -> tuple[BPETokenizer, Callable[[Shares], Stage]]:
        fmt = load_chat_format(parent_run)
        say = tqdm.write if world.is_main else (lambda _text: None)
        train, val = load_pair_rows(cfg, fmt, say, margin=cfg.reward.margin)
        pad, t = fmt.tokenizer.pad_id, cfg.train

        def stage(shares: Shares) -> Stage:
            batches = PairBatches(train, t.global_batch, shares.dp_rank, shares.dp_size, t.seed, pad)
            validation = validation_batches(val, shares, pad)
            say(describe_pairs("reward", cfg, train, batches, min(len(val), shares.val_sequences)))
            return RewardStage("reward", batches, validation)
        return fmt.tokenizer, stage

    # From a language model: its trunk, and a new score head. From a reward model: all of it.
    fresh = () if parent_cfg.model.head == "score" else (SCORE,)

    def load_parent(model: nn.Module, ckpt: Path) -> None:
        load_weights(model, ckpt, fresh)

    return launch(cfg, run_dir, resume, data, user_keys, parent_checkpoint=parent_ckpt,
                  write_files=carry_run_files(parent_run), load_parent=load_parent)


def check_reward_model(reward_run: Path, policy_run: Path) -> None:
    """What a stage that scores a policy's replies with a reward model checks first: that the run is a reward
    model, and that it reads the policy's tokens as the policy writes them (the same tokenizer)."""
    if read_config(reward_run).model.head != "score":
        raise ScratchError(f"{reward_run} is not a reward model (its model.head is not score); train one with "
                           f"scratchlm reward {policy_run} --out RM_RUN")
    if load_tokenizer(reward_run).fingerprint() != load_tokenizer(policy_run).fingerprint():
        raise ScratchError(f"the reward model {reward_run} was trained with another tokenizer than the policy "
                           f"{policy_run}, so it would misread the policy's replies; train the reward model from "
                           f"the policy's own SFT run (scratchlm reward SFT_RUN --out RM_RUN)")
