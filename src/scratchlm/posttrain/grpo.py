"""GRPO (group relative policy optimisation, Shao et al. 2024): the RL stage's batch source and loss.

    each step's prompts (rl.prompts_per_step, dealt out to the data-parallel ranks)
    -> G samples of each from the policy as it is now (scratchlm.posttrain.rollout), scored by a verifiable reward
    -> advantages within each group:  A_i = (r_i - mean(r)) / (std(r) + 1e-4), or r_i - mean(r) without
       rl.scale_rewards (Dr. GRPO); every token of sample i gets A_i
    -> the clipped surrogate per token, with ratio rho = pi(o_t) / pi_old(o_t) (pi_old: the sampler's log-probs)
           l_t = -min(rho A, clip(rho, 1 - clip_low, 1 + clip_high) A)  +  beta * k3_t
       k3_t = exp(q) - q - 1 with q = log pi_ref(o_t) - log pi(o_t): an unbiased, never negative estimate of
       KL(pi || pi_ref) (Schulman's k3), against the parent's weights
    -> averaged as rl.loss_type says:
           grpo     (1 / N) sum_i (1 / |o_i|) sum_t l_t     each sample weighs the same, whatever its length
           dapo     sum_i sum_t l_t / sum_i |o_i|           each token weighs the same (DAPO)
           dr_grpo  sum_i sum_t l_t / (N x max_new_tokens)  a constant divisor: no length bias (Dr. GRPO)
       N samples and |o_i| tokens of the step's whole global batch.

The loop's unit is a completion token: the loss returns sum_i w_i sum_t l_t with each row's weight w_i chosen
so that dividing by the global batch's completion tokens gives the average above. Micro-batching and data
parallelism then change nothing, and the logged kl and clip_fraction are means per completion token.

One rollout feeds rl.steps_per_rollout optimizer steps. With 1 (the default) every step learns from samples
of its own weights and the ratio is 1 up to rounding (the engine samples in the weights' dtype, the loss
runs under the training precision); with more, the later steps learn from older samples, and clipping keeps
each step close to the sampler.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from scratchlm.config import Config, RLConfig
from scratchlm.parallel.world import World
from scratchlm.posttrain.common import EpochBatches, token_logps
from scratchlm.posttrain.rollout import Prompt, Rollouts, Sample, collate_samples
from scratchlm.train.launch import Shares
from scratchlm.train.stage import IGNORE, Batch, LossOutput, TokenStage

STD_EPS = 1e-4  # keeps a group of nearly equal rewards from blowing its advantages up (TRL's value)


def group_advantages(rewards: torch.Tensor, scale: bool = True) -> torch.Tensor:
    """rewards (groups, G) -> advantages (groups, G): each reward less its group's mean, over the group's
    standard deviation (unbiased) when scale."""
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    return centred / (rewards.std(dim=1, keepdim=True) + STD_EPS) if scale else centred


def row_weights(lengths: torch.Tensor, tokens: float, samples: float, loss_type: str, max_new_tokens: int
                ) -> torch.Tensor:
    """The weight of each sample's token losses, given its length, such that sum_i w_i sum_t l_t / tokens is
    loss_type's average; tokens and samples: the step's whole global batch."""
    if loss_type == "dapo":
        return torch.ones_like(lengths, dtype=torch.float32)
    if loss_type == "dr_grpo":
        return torch.full_like(lengths, tokens / (samples * max_new_tokens), dtype=torch.float32)
    return tokens / (samples * lengths.float())


def clipped_token_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, clip_low: float,
                       clip_high: float) -> tuple[torch.Tensor, torch.Tensor]:
    """-min(rho A, clip(rho, 1 - clip_low, 1 + clip_high) A) of each token (rows, seq), with advantages (rows,),
    and where the clip took effect (there the token's gradient is 0)."""
    ratio = torch.exp(logps - old_logps)
    adv = advantages[:, None]
    surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - clip_low, 1 + clip_high) * adv)
    clipped = ((ratio < 1 - clip_low) & (adv < 0)) | ((ratio > 1 + clip_high) & (adv > 0))
    return -surrogate, clipped


def k3(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimate of KL(pi || pi_ref) at each sampled token: exp(q) - q - 1, q = log pi_ref - log pi."""
    q = ref_logps - logps
    return torch.exp(q) - q - 1


class GroupRollouts:
    """GRPO's batch source: at the first step of each rollout, G samples of the prompts of that rollout's
    steps, with their advantages and row weights; each step then takes its own prompts' samples."""

    def __init__(self, prompts: list[Prompt], rollouts: Rollouts, shares: Shares, world: World, cfg: Config) -> None:
        self.rollouts, self.world, self.rl = rollouts, world, cfg.rl
        self.policy = shares.model
        self.pad_id = rollouts.fmt.tokenizer.pad_id
        self.order = EpochBatches(prompts, lambda p: len(p.ids), cfg.rl.prompts_per_step, shares.dp_rank,
                                  shares.dp_size, cfg.train.seed, noun="prompts")
        self.rollout_index: int | None = None
        self.batches: list[Batch] = []
        self.logs: list[dict[str, float]] = []

    def batch_for(self, step: int) -> Batch:
        k = self.rl.steps_per_rollout
        if step // k != self.rollout_index:
            self._roll_out(step // k)
        return self.batches[step % k]

    def log_values(self, step: int) -> dict[str, float]:
        return self.logs[step % self.rl.steps_per_rollout]

    def _roll_out(self, index: int) -> None:
        r = self.rl
        start = time.perf_counter()
        steps = range(index * r.steps_per_rollout, (index + 1) * r.steps_per_rollout)
        jobs = [(s, prompt) for s in steps for (prompt,) in self.order.local_groups(s)]
        self.rollouts.sync(self.policy)
        groups = self.rollouts.sample(jobs, r.group_size)
        seconds = time.perf_counter() - start
        per_step = len(groups) // len(steps)
        step_groups = [groups[i * per_step:(i + 1) * per_step] for i in range(len(steps))]
        # Each step's numbers over the whole global batch, in one collective for the rollout.
        sums = torch.tensor([_sums(g) for g in step_groups], dtype=torch.float64, device=self.world.device)
        totals = self.world.sum_over_batch(sums).tolist()
        self.rollout_index, self.batches, self.logs = index, [], []
        for mine, (tokens, samples, reward, correct, truncated, flat, n_groups) in zip(step_groups, totals,
                                                                                        strict=True):
            self.batches.append(self._batch(mine, tokens, samples))
            self.logs.append({"reward": round(reward / samples, 5), "pass@1": round(correct / samples, 5),
                              "response_length": round(tokens / samples, 2),
                              "truncated": round(truncated / samples, 5),
                              "flat_groups": round(flat / n_groups, 5),
                              "rollout_s": round(seconds / len(steps), 3)})

    def _batch(self, groups: list[list[Sample]], tokens: float, samples: float) -> Batch:
        """This rank's rows of one step, shortest first (compact micro-batches), with advantages and weights."""
        advantages = group_advantages(torch.tensor([[s.reward for s in g] for g in groups]), self.rl.scale_rewards)
        flat = [s for g in groups for s in g]
        lengths = torch.tensor([len(s.tokens) for s in flat])
        weights = row_weights(lengths, tokens, samples, self.rl.loss_type, self.rl.max_new_tokens)
        order = sorted(range(len(flat)), key=lambda i: len(flat[i].prompt.ids) + len(flat[i].tokens))
        batch = collate_samples([flat[i] for i in order], self.pad_id)
        batch["advantages"] = advantages.flatten()[order].float()
        batch["weights"] = weights[order]
        return batch


def _sums(groups: list[list[Sample]]) -> list[float]:
    """completion tokens, samples, reward, right answers, truncated samples, groups whose rewards are all equal
    (no signal: every advantage is 0), groups."""
    flat = [s for g in groups for s in g]
    return [sum(len(s.tokens) for s in flat), len(flat), sum(s.reward for s in flat), sum(s.correct for s in flat),
            sum(s.truncated for s in flat), sum(len({s.reward for s in g}) == 1 for g in groups), len(groups)]


class GRPOStage(TokenStage):
    """The clipped surrogate with an optional KL penalty, over completion tokens: a token stage whose batches
    are the policy's own rollouts and whose loss is GRPO's (scratchlm.train.stage.Stage)."""

    def __init__(self, source: GroupRollouts, reference: nn.Module, rl: RLConfig) -> None:
        super().__init__("rl", source)  # no validation set: measured by evaluating the finished run instead
        self.reference, self.rl = reference, rl

    def loss(self, model: nn.Module, batch: Batch) -> LossOutput:
        inputs, targets = batch["inputs"], batch["targets"]
        mask = targets != IGNORE
        logps = token_logps(model, inputs, targets)
        per_token, clipped = clipped_token_loss(logps, batch["old_logps"], batch["advantages"], self.rl.clip_low,
                                                self.rl.clip_high)
        with torch.no_grad():
            ref_logps = token_logps(self.reference, inputs, targets)
        kl = k3(logps, ref_logps)
        if self.rl.kl_coef:
            per_token = per_token + self.rl.kl_coef * kl
        loss = (per_token * mask * batch["weights"][:, None]).sum()
        return loss, {"kl": (kl.detach() * mask).sum(), "clip_fraction": (clipped & mask).sum()}
