"""`scratchlm rl SFT_RUN --out RUN --algo ppo --reward-model RM_RUN`: PPO against a reward model, the RLHF of
InstructGPT (Ouyang et al., 2022), on the one launch and loop.

Four models:

    policy     the SFT run's weights, trained: the run's own model
    reference  a frozen copy of the SFT weights; the KL penalty in the reward keeps the policy near it
    reward     the reward model (scratchlm reward), frozen: its score at a response's last token
    value      a copy of the reward model, trained beside the policy (a Companion, scratchlm.train.companion):
               its score at each position is the value of the state that ends there (initialising the
               critic from the reward model is common practice: it already reads the text as the judge does)

Each rollout (every rl.steps_per_rollout optimizer steps):

    prompts (the preference data's, rendered by the chat format) -> responses sampled by the engine with the
    policy's current weights -> one no_grad pass of each model over prompt + response:
        log pi_old(y_t | s_t), log pi_ref(y_t | s_t), V(s_t) at every response token, R(x, y) at its last
    -> per-token rewards  r_t = -kl_coef * (log pi_old - log pi_ref)(y_t | s_t)  [+ R(x, y) at the last token]
    -> GAE  delta_t = r_t + gamma V(s_{t+1}) - V(s_t) (V after the last token is 0),
            A_t = delta_t + gamma lambda A_{t+1};  returns G_t = A_t + V(s_t);  A whitened over the rollout

then ppo.epochs passes over the rollout, in rl.steps_per_rollout / ppo.epochs optimizer steps each (a
minibatch: the samples of rl.prompts_per_step prompts), with the loss

    L_pg = max(-A_t rho_t, -A_t clip(rho_t, 1 - clip_low, 1 + clip_high)),    rho_t = pi(y_t | s_t) / pi_old(y_t | s_t)
    L_v  = 1/2 max((V - G_t)^2, (V_old + clip(V - V_old, -value_clip, value_clip) - G_t)^2)
    loss = L_pg + value_coef * L_v

summed over response tokens and divided by the response tokens of the whole global batch (the loop's rule).
The rollout's own pass computes log pi_old in the training precision, so the first step's ratio is exactly 1.
docs/rlhf.md has the formulas, the metrics and what healthy curves look like.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from scratchlm.chat import ChatFormat, load_chat_format
from scratchlm.config import Config
from scratchlm.data.preference_data import load_preferences
from scratchlm.errors import ScratchError
from scratchlm.parallel.build import build_parallel_model
from scratchlm.parallel.parallelize import mixed_precision, uses_fsdp
from scratchlm.parallel.world import World
from scratchlm.posttrain.common import (
    EpochBatches,
    carry_run_files,
    check_layout,
    frozen_reference,
    require_policy,
    token_logps,
)
from scratchlm.posttrain.reward import check_reward_model
from scratchlm.posttrain.rl import set_rollout_batch
from scratchlm.posttrain.rollout import Prompt, Rollouts, collate_samples
from scratchlm.run import open_run
from scratchlm.tokenizer import BPETokenizer
from scratchlm.train.checkpoint import load_weights
from scratchlm.train.companion import Companion
from scratchlm.train.launch import Shares, launch
from scratchlm.train.stage import IGNORE, Batch, LossOutput, Stage, TokenStage, split_rows, token_loss_sum

# What PPO changes from its parent's config (common.stage_config): the preference data's prompts, one sample of
# each, a rollout of 32 prompts every 4 steps (2 passes of 2 minibatches), the KL penalty of InstructGPT's
# order, and, as GRPO, a constant rate without weight decay, a line per step and eager training.
PPO_DEFAULTS = {
    "data": {"source": "embedded", "embedded_docs": 4000, "max_docs": 0},
    "train": {"max_steps": 192, "save_every": 64, "log_every": 1, "compile": "off"},
    "optim": {"lr": 3e-5, "warmup_steps": 0, "lr_decay_steps": 0, "min_lr_ratio": 1.0, "weight_decay": 0.0},
    "rl": {"group_size": 1, "prompts_per_step": 16, "steps_per_rollout": 4, "max_new_tokens": 128, "kl_coef": 0.05},
    "ppo": {"epochs": 2},
}


# ----------------------------------------------------------------------------------------- the formulas


def whiten(values: torch.Tensor, mask: torch.Tensor, sums: torch.Tensor | None = None) -> torch.Tensor:
    """(values - mean) / std over the masked entries, 0 elsewhere. sums: (count, sum, sum of squares) over
    the whole rollout when it is spread over data-parallel ranks (else this tensor's own)."""
    if sums is None:
        sums = moment_sums(values, mask)
    count, total, squares = sums.unbind()
    mean = total / count.clamp(min=1)
    var = (squares / count.clamp(min=1) - mean**2).clamp(min=0)
    return (values - mean) * torch.rsqrt(var + 1e-8) * mask


def moment_sums(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(count, sum, sum of squares) of the masked entries, in float64: what whiten needs, summable over ranks."""
    v, m = values.double(), mask.double()
    return torch.stack([m.sum(), (v * m).sum(), (v * v * m).sum()])


def kl_rewards(logps: torch.Tensor, ref_logps: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor,
               kl_coef: float) -> torch.Tensor:
    """Per-token rewards (rows, width): -kl_coef x (log pi_old - log pi_ref) at each response token, plus the
    reward model's score (rows,) at each row's last response token."""
    rewards = -kl_coef * (logps - ref_logps) * mask
    last = last_index(mask)
    return rewards.scatter_add(1, last[:, None], scores[:, None].to(rewards.dtype))


def last_index(mask: torch.Tensor) -> torch.Tensor:
    """The column of each row's last True entry (rows,)."""
    columns = torch.arange(mask.shape[1], device=mask.device)
    return torch.where(mask, columns, -1).max(dim=1).values.clamp(min=0)


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al., 2016) over each row's response tokens, the True
    entries of mask (contiguous in a row): -> (advantages, returns), 0 outside the mask.

        delta_t = r_t + gamma V_{t+1} - V_t     (V after the last response token: 0, the episode ends)
        A_t     = delta_t + gamma lambda A_{t+1}
        G_t     = A_t + V_t

    One pass from the last column to the first, every row at once."""
    mask = mask.to(values.dtype)
    advantages = torch.zeros_like(values)
    next_value = torch.zeros_like(values[:, 0])
    next_advantage = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = (delta + gamma * lam * next_advantage) * mask[:, t]
        advantages[:, t] = advantage
        # Outside the response (the prompt, the padding) nothing carries over to the token before.
        next_value, next_advantage = values[:, t] * mask[:, t], advantage
    return advantages, (advantages + values) * mask


@dataclass
class PPOTerms:
    """Per-token terms of the PPO loss, (rows, width); the loss sums them over the response tokens."""

    policy: torch.Tensor  # L_pg
    value: torch.Tensor  # L_v
    clipped: torch.Tensor  # 1.0 where the clipped policy term was the larger (its gradient is 0 there)
    value_clipped: torch.Tensor  # 1.0 where the clipped value term was the larger
    approx_kl: torch.Tensor  # (rho - 1) - log rho: an estimate of KL(pi_old || pi), >= 0, for watching


def ppo_terms(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, values: torch.Tensor,
              old_values: torch.Tensor, returns: torch.Tensor, clip_low: float, clip_high: float, value_clip: float
              ) -> PPOTerms:
    """The clipped surrogate objective (Schulman et al., 2017; the ratio clipped to [1 - clip_low, 1 + clip_high])
    and the clipped value loss, per token."""
    log_ratio = logps - old_logps
    ratio = log_ratio.exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_low, 1 + clip_high)
    values_clipped = old_values + (values - old_values).clamp(-value_clip, value_clip)
    value_unclipped_loss = (values - returns) ** 2
    value_clipped_loss = (values_clipped - returns) ** 2
    return PPOTerms(policy=torch.maximum(unclipped, clipped),
                    value=0.5 * torch.maximum(value_unclipped_loss, value_clipped_loss),
                    clipped=(clipped > unclipped).float(),
                    value_clipped=(value_clipped_loss > value_unclipped_loss).float(),
                    approx_kl=(ratio - 1) - log_ratio)


# ------------------------------------------------------------------------------------------- the stage


class PPORollouts:
    """PPO's batch source (scratchlm.train.stage.BatchSource): rollouts of the policy, scored and valued, dealt
    into minibatches.

    A rollout feeds rl.steps_per_rollout optimizer steps: ppo.epochs passes over it, each in steps_per_rollout /
    epochs minibatches of rl.prompts_per_step prompts' samples. It is sampled when its first step comes (a
    checkpoint is always between two rollouts), and each pass deals its samples into minibatches in an order drawn
    from (seed, rollout, pass), the same on every layout: a minibatch holds one prompt of each place in a global
    batch of rl.prompts_per_step prompts, and the data-parallel ranks split the places among them, so every rank
    holds its share of every minibatch and one process and FSDP on 2 ranks take the same steps."""

    def __init__(self, cfg: Config, policy: nn.Module, models: PPOModels, rollouts: Rollouts, prompts: EpochBatches,
                 world: World, autocast: AbstractContextManager) -> None:
        self.cfg, self.policy, self.models, self.rollouts, self.prompts = cfg, policy, models, rollouts, prompts
        self.world, self.autocast = world, autocast
        self.minibatches = cfg.rl.steps_per_rollout // cfg.ppo.epochs
        self.rollout_index = -1
        self.data: Batch = {}
        # Of each row of the rollout: the minibatch slot of the rollout that sampled it, and its prompt's place in
        # that slot's global batch.
        self.slots, self.places = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        self.stats: dict[str, float] = {}

    def batch_for(self, step: int) -> Batch:
        index, within = divmod(step, self.cfg.rl.steps_per_rollout)
        if index != self.rollout_index:
            self.data, self.stats = self.rollout(index)
            self.rollout_index = index
        epoch, part = divmod(within, self.minibatches)
        # Each place deals its prompts (one from each slot) to the pass's minibatches in an order of its own.
        rng = np.random.default_rng([self.cfg.train.seed, index, epoch])
        deal = np.stack([rng.permutation(self.minibatches) for _ in range(self.cfg.rl.prompts_per_step)])
        chosen = np.flatnonzero(self.slots == deal[self.places, part])
        # Shortest first, so that each micro-batch is cut to little padding (split_rows).
        chosen = sorted(chosen.tolist(), key=lambda i: int(self.data["lengths"][i]))
        return {k: v[chosen] for k, v in self.data.items()}

    def log_values(self, step: int) -> dict[str, float]:
        return self.stats

    @torch.no_grad()
    def rollout(self, index: int) -> tuple[Batch, dict[str, float]]:
        """Sample this rank's prompts of rollout `index` with the policy's current weights, then score, value and
        weigh every response token: the rows PPO's steps train on, and the rollout's numbers to log."""
        start = time.perf_counter()
        self.rollouts.sync(self.policy)
        # Minibatch slots index x minibatches, ...: each slot's prompts, whose samples the slot seeds.
        slots = range(index * self.minibatches, (index + 1) * self.minibatches)
        prompts, where = [], []
        for slot in slots:
            places = {group[0].index: place for place, group in enumerate(self.prompts.global_groups(slot))}
            for (prompt,) in self.prompts.local_groups(slot):
                prompts.append((slot, prompt))
                where.append((slot - slots[0], places[prompt.index]))
        rows = [(sample, at) for group, at in zip(self.rollouts.sample(prompts, self.cfg.rl.group_size), where,
                                                  strict=True) for sample in group]
        rows.sort(key=lambda row: len(row[0].prompt.ids) + len(row[0].tokens))  # compact chunks for the passes
        samples = [sample for sample, _ in rows]
        self.slots, self.places = (np.array(column, dtype=np.int64) for column in zip(*(at for _, at in rows),
                                                                                         strict=True))
        data = collate_samples(samples, self.rollouts.fmt.tokenizer.pad_id)
        mask = data["targets"] != IGNORE
        data["lengths"] = last_index(mask) + 1  # columns up to the response's end
        out = self.passes(data)
        p, r = self.cfg.ppo, self.cfg.rl
        values = out["values"] * mask
        rewards = kl_rewards(out["logps"], out["ref_logps"], out["scores"], mask, r.kl_coef)
        advantages, returns = gae(rewards, values, mask, p.gamma, p.lam)
        device = self.world.device
        sums = self.world.sum_over_batch(moment_sums(advantages, mask).to(device)).cpu()  # over the whole rollout
        data.update(old_logps=out["logps"], old_values=values, returns=returns, advantages=whiten(advantages, mask,
                                                                                                  sums))
        kl = ((out["logps"] - out["ref_logps"]) * mask).sum(1)
        totals = [len(samples), out["scores"].sum(), kl.sum(), mask.sum(), sum(not s.truncated for s in samples),
                  returns.sum(), values.sum()]
        n, score, kl, tokens, ended, returned, valued = self.world.sum_over_batch(
            torch.tensor([float(x) for x in totals], dtype=torch.float64, device=device)).tolist()
        stats = {"reward": score / n, "kl": kl / n, "non_score_reward": -r.kl_coef * kl / n,
                 "response_length": tokens / n, "ended": ended / n, "returns": returned / tokens,
                 "values": valued / tokens, "rollout_s": (time.perf_counter() - start) / r.steps_per_rollout}
        return data, {k: round(v, 5) for k, v in stats.items()}

    def passes(self, data: Batch) -> dict[str, torch.Tensor]:
        """One no_grad pass of each model over the rows, in micro-batches cut after their longest response:
        log pi_old and log pi_ref of every response token, the value of every state, the reward model's score
        of every response (rows are sorted by length, so the cut leaves little padding)."""
        rows, width = data["targets"].shape
        out = {"logps": torch.zeros(rows, width), "ref_logps": torch.zeros(rows, width),
               "values": torch.zeros(rows, width), "scores": torch.zeros(rows)}
        done = 0
        for chunk in split_rows(data, self.cfg.train.micro_batch_size):
            n, w = chunk["targets"].shape
            here = (slice(done, done + n), slice(0, w))
            inputs, targets = chunk["inputs"].to(self.world.device), chunk["targets"].to(self.world.device)
            with self.autocast:
                out["logps"][here] = token_logps(self.policy, inputs, targets).cpu()
                out["ref_logps"][here] = token_logps(self.models.reference, inputs, targets).cpu()
                out["values"][here] = self.models.value.model(inputs).float().cpu()
                out["scores"][done:done + n] = response_scores(self.models.reward, inputs, targets).cpu()
            done += n
        return out


def response_scores(reward_model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The reward model's score of each prompt + response, read at the response's last token (rows,)."""
    mask = targets != IGNORE
    last = last_index(mask)
    ids = torch.cat([inputs, torch.zeros_like(inputs[:, :1])], dim=1)  # room for the last token
    ids = ids.scatter(1, (last + 1)[:, None], targets.gather(1, last[:, None]))
    scores = reward_model(ids[:, :int(last.max()) + 2]).float()
    return scores.gather(1, (last + 1)[:, None]).squeeze(1)


class PPOStage(TokenStage):
    """PPO's clipped policy and value losses over response tokens: a token stage whose batches are the policy's
    own rollouts (PPORollouts) and whose loss also trains the value model, the loop's companion."""

    def __init__(self, source: PPORollouts, cfg: Config) -> None:
        super().__init__("ppo", source)  # no validation set: measured by evaluating the finished run's samples
        self.cfg = cfg
        self.companion = source.models.value  # trained by the loop beside the policy (scratchlm.train.companion)

    def loss(self, model: nn.Module, batch: Batch) -> LossOutput:
        mask = (batch["targets"] != IGNORE).float()
        logps = token_logps(model, batch["inputs"], batch["targets"])
        values = self.companion.model(batch["inputs"]).float()
        p = self.cfg.ppo
        terms = ppo_terms(logps, batch["old_logps"], batch["advantages"], values, batch["old_values"],
                          batch["returns"], self.cfg.rl.clip_low, self.cfg.rl.clip_high, p.value_clip)
        total = ((terms.policy + p.value_coef * terms.value) * mask).sum()
        logged = {"policy_loss": terms.policy, "value_loss": terms.value, "clipfrac": terms.clipped,
                  "value_clipfrac": terms.value_clipped, "approx_kl": terms.approx_kl}
        return total, {name: (value.detach() * mask).sum() for name, value in logged.items()}


# ------------------------------------------------------------------------------------------- the command


@dataclass
class PPOModels:
    """The models beside the policy: two frozen, one trained."""

    reference: nn.Module  # the SFT weights
    reward: nn.Module  # the reward model
    value: Companion  # the value model, from the reward model's weights, trained with the policy


def load_pair_prompts(cfg: Config, fmt: ChatFormat, say: Callable[[str], None], split: str = "train"
                      ) -> list[Prompt]:
    """The prompts of cfg.data's preference pairs (the conversations the reward model learnt to judge replies
    to), rendered for the assistant to answer, each once; those that leave no room for rl.max_new_tokens in
    train.seq_len are left out and counted."""
    d, room = cfg.data, cfg.train.seq_len - cfg.rl.max_new_tokens
    pairs = load_preferences(d.source, split, n_embedded=d.embedded_docs, strict=d.strict, seed=d.seed,
                             hub_split=d.hub_split, max_records=d.max_docs, val_fraction=d.val_fraction)
    prompts, seen, too_long = [], set(), 0
    for index, pair in enumerate(pairs):
        ids = fmt.prompt_ids(pair.prompt)
        if tuple(ids) in seen:
            continue
        seen.add(tuple(ids))
        if len(ids) > room:
            too_long += 1
            continue
        prompts.append(Prompt(index, ids, {}))
    where = "the embedded corpus" if d.source == "embedded" else d.source
    if too_long:
        say(f"ppo data: left out {too_long} of {len(seen)} {split} prompts longer than train.seq_len "
            f"{cfg.train.seq_len} less rl.max_new_tokens {cfg.rl.max_new_tokens}")
    if not prompts:
        raise ScratchError(f"{where} holds no {split} prompt that fits train.seq_len {cfg.train.seq_len} with "
                           f"rl.max_new_tokens {cfg.rl.max_new_tokens}; lower --rl.max_new_tokens")
    return prompts


def value_config(cfg: Config, reward_cfg: Config, reward_run: Path) -> Config:
    """The value model's config: the reward model's shape, the run's training settings."""
    value = copy.deepcopy(cfg)
    value.model = copy.deepcopy(reward_cfg.model)
    value.stage, value.parent = "value", str(Path(reward_run).resolve())
    return value


def open_reward_model(cfg: Config, policy_run: Path) -> tuple[Config, Path]:
    """The reward model's config and latest checkpoint, after the checks that it can judge this policy's text."""
    if not cfg.ppo.reward_model:
        raise ScratchError("--algo ppo needs a reward model to optimise against: --reward-model RM_RUN (train one "
                           f"with scratchlm reward {policy_run} --out RM_RUN)")
    reward_run = Path(cfg.ppo.reward_model)
    if not reward_run.is_dir():
        raise ScratchError(f"--reward-model {reward_run} does not exist; train one with scratchlm reward {policy_run} "
                           "--out RM_RUN")
    check_reward_model(reward_run, policy_run)
    reward_cfg, _, checkpoint = open_run(reward_run)
    if reward_cfg.model.max_seq_len < cfg.train.seq_len:
        raise ScratchError(f"the reward model {reward_run} reads {reward_cfg.model.max_seq_len} tokens at most, less "
                           f"than train.seq_len {cfg.train.seq_len}; lower --train.seq_len")
    return reward_cfg, checkpoint


def ppo(cfg: Config, parent_run: Path, run_dir: Path, resume: bool = False,
        user_keys: frozenset[str] = frozenset()) -> dict[str, float]:
    """Optimise parent_run's policy against cfg.ppo.reward_model with PPO into run_dir, in this process or as a
    torchrun rank."""
    parent_cfg, _, parent_ckpt = open_run(parent_run)  # refuses a missing run or one without weights, first
    require_policy(parent_run, parent_cfg, "scratchlm rl")
    reward_cfg, reward_ckpt = open_reward_model(cfg, parent_run)
    check_layout(cfg, "scratchlm rl --algo ppo", tensor_parallel=False)
    r, t = cfg.rl, cfg.train
    if r.steps_per_rollout % cfg.ppo.epochs:
        raise ScratchError(f"rl.steps_per_rollout {r.steps_per_rollout} is not a multiple of ppo.epochs "
                           f"{cfg.ppo.epochs}: each pass over a rollout takes steps_per_rollout / epochs steps")
    set_rollout_batch(cfg, user_keys)

    def data(world: World) -> tuple[BPETokenizer, Callable[[Shares], Stage]]:
        fmt = load_chat_format(parent_run)
        say = tqdm.write if world.is_main else (lambda _text: None)
        prompts = load_pair_prompts(cfg, fmt, say)

        def stage(shares: Shares) -> Stage:
            reference = frozen_reference(cfg, world, parent_ckpt)
            value_cfg = value_config(cfg, reward_cfg, Path(cfg.ppo.reward_model))
            reward = frozen_reference(value_cfg, world, reward_ckpt)
            value, _ = build_parallel_model(value_cfg, world, token_loss_sum)
            load_weights(value, reward_ckpt)
            models = PPOModels(reference, reward, Companion("value", value_cfg, value, world, fmt.tokenizer))
            order = EpochBatches(prompts, lambda prompt: len(prompt.ids), r.prompts_per_step, shares.dp_rank,
                                 shares.dp_size, t.seed, noun="prompts")
            fsdp_casts = uses_fsdp(world.dims) and mixed_precision(t, world.device) is not None
            autocast = (torch.autocast(world.device.type, dtype=torch.bfloat16) if t.precision == "bf16" and
                        not fsdp_casts else nullcontext())
            minibatches = r.steps_per_rollout // cfg.ppo.epochs
            say(f"ppo data: {len(prompts):,} prompts from "
                f"{'the embedded corpus' if cfg.data.source == 'embedded' else cfg.data.source}; a rollout of "
                f"{minibatches * r.prompts_per_step} prompts x {r.group_size} samples every {r.steps_per_rollout} "
                f"steps ({cfg.ppo.epochs} passes); {t.max_steps} steps = "
                f"{order.epoch_of(t.max_steps // cfg.ppo.epochs):.2f} epochs of the prompts; reward model "
                f"{cfg.ppo.reward_model}, KL coefficient {r.kl_coef}")
            return PPOStage(PPORollouts(cfg, shares.model, models, Rollouts(cfg, fmt, world.device), order, world,
                                        autocast), cfg)
        return fmt.tokenizer, stage

    return launch(cfg, run_dir, resume, data, user_keys, parent_checkpoint=parent_ckpt,
                  write_files=carry_run_files(parent_run))
