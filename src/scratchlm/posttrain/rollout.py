"""Rollouts: the policy's own samples, scored, as the rows an RL loss trains on (GRPO; PPO reuses them).

    problems (embedded math | .jsonl / .parquet | hf:NAME with question and answer fields)
    -> prompts: each question as the user's message, rendered by the run's chat format (as `scratchlm eval
       --tasks gsm8k` asks it in chat)
    -> Rollouts.sync(policy): the policy's current weights, gathered whole (FSDP's shards, tensor-parallel
       pieces) into a plain copy of the model on every rank: no round trip through disk
    -> Rollouts.sample(prompts, G): G samples of each prompt from the one engine (scratchlm.infer.engine),
       the prompt's prefix computed once and shared by its samples; each sample has its own seed, a
       function of (train.seed, step, problem, sample), so it is the same on any layout and after --resume
    -> the reward function scores each completion's text (scratchlm.posttrain.rewards)
    -> collate_samples: prompt + completion as one row; the targets are the completion's tokens (its stop
       token too: ending the turn is an action), the prompt's are IGNORE; old_logps are the engine's
       log-probabilities of the sampled tokens (the behaviour policy's, at temperature 1)

The copy costs one more set of full weights per rank (no gradients, no optimizer state): a model whose
weights do not fit whole on one device cannot generate here; such a model needs a tensor-parallel
inference engine, which this one is not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from scratchlm.chat import ChatFormat, generation_stop_ids
from scratchlm.config import Config
from scratchlm.errors import ScratchError
from scratchlm.eval import gsm8k
from scratchlm.eval.scorer import cut_at_stops
from scratchlm.infer.engine import Completion, Engine
from scratchlm.infer.sampling import SamplingParams
from scratchlm.infer.tools import parse_tools
from scratchlm.model import Transformer
from scratchlm.posttrain.rewards import REWARDS, RewardFn
from scratchlm.train.stage import IGNORE, Batch


@dataclass
class Prompt:
    index: int  # the problem's place in the data: seeds its samples
    ids: list[int]
    problem: dict[str, Any]  # question and answer


@dataclass
class Sample:
    prompt: Prompt
    tokens: list[int]  # the completion, with the stop token that ended it
    logprobs: list[float]  # of each token, under the sampling policy at temperature 1
    forced: list[bool]  # fed by a tool (rl.tools), not sampled: scored with the text, never trained
    truncated: bool  # cut by rl.max_new_tokens before it ended its turn
    reward: float = 0.0
    correct: bool = False


def load_prompts(cfg: Config, fmt: ChatFormat, say: Callable[[str], None]) -> list[Prompt]:
    """The training problems of cfg.data as chat prompts; those that leave no room for rl.max_new_tokens in
    train.seq_len are left out and counted."""
    d = cfg.data
    n = d.embedded_docs if d.source == gsm8k.EMBEDDED else (d.max_docs or None)
    problems = gsm8k.read_problems(d.source, "train", n)
    room = cfg.train.seq_len - cfg.rl.max_new_tokens
    prompts, too_long = [], 0
    for index, problem in enumerate(problems):
        ids = fmt.prompt_ids(gsm8k.chat_messages([], problem))
        if len(ids) > room:
            too_long += 1
            continue
        prompts.append(Prompt(index, ids, problem))
    where = "the embedded corpus" if d.source == gsm8k.EMBEDDED else d.source
    if too_long:
        say(f"rl data: left out {too_long} of {len(problems)} prompts longer than train.seq_len {cfg.train.seq_len} "
            f"less rl.max_new_tokens {cfg.rl.max_new_tokens}")
    if not prompts:
        raise ScratchError(f"{where} holds no prompt that fits train.seq_len {cfg.train.seq_len} with "
                           f"rl.max_new_tokens {cfg.rl.max_new_tokens}; lower --rl.max_new_tokens")
    return prompts


def reward_function(name: str) -> RewardFn:
    if name not in REWARDS:
        raise ScratchError(f"--reward must be one of {', '.join(REWARDS)}, got '{name}'")
    return REWARDS[name]


def sample_seed(seed: int, step: int, index: int, sample: int) -> int:
    """The seed of one sample: independent of which rank draws it and of what is sampled beside it."""
    return int(np.random.SeedSequence([seed, step, index, sample]).generate_state(1)[0])


def plain_copy(model: nn.Module, cfg: Config, device: torch.device) -> Transformer:
    """An unsharded model holding `model`'s current weights, whatever its layout (a collective under FSDP and
    tensor parallel: every rank calls it)."""
    with torch.device("meta"):
        copy = Transformer(cfg.model)
    copy.to_empty(device=device)
    copy.init_buffers()
    copy.load_state_dict(get_model_state_dict(model, options=StateDictOptions(full_state_dict=True)))
    return copy.requires_grad_(False).eval()


class Rollouts:
    """Samples of the policy as it is now, scored by the reward function."""

    def __init__(self, cfg: Config, fmt: ChatFormat, device: torch.device) -> None:
        self.cfg, self.fmt, self.device = cfg, fmt, device
        # PPO's responses are scored by its reward model instead.
        self.reward_fn = reward_function(cfg.rl.reward) if cfg.rl.algo == "grpo" else None
        self.stop_ids = frozenset(generation_stop_ids(fmt.tokenizer, fmt))
        self.tools = parse_tools(cfg.rl.tools)
        self.copy: Transformer | None = None

    def sync(self, policy: nn.Module) -> None:
        """Take the policy's current weights for the next samples."""
        if self.copy is None:
            self.copy = plain_copy(policy, self.cfg, self.device)
        else:
            self.copy.load_state_dict(get_model_state_dict(policy, options=StateDictOptions(full_state_dict=True)))

    def sample(self, prompts: list[tuple[int, Prompt]], group_size: int) -> list[list[Sample]]:
        """group_size scored samples of each (step, prompt), a group per prompt, in the order given. The step
        seeds the samples: a problem drawn again later gets new ones."""
        assert self.copy is not None, "sync the policy's weights first"
        r = self.cfg.rl
        # A fresh engine each time: its prefix cache holds keys of the weights it computed them with.
        engine = Engine(self.copy, self.stop_ids, self.fmt.tokenizer, max_running=len(prompts) * group_size)
        requests = []
        # The first sample of every prompt first: they are prefilled together, and the other samples then
        # find each prompt's blocks in the prefix cache.
        for j in range(group_size):
            for g, (step, prompt) in enumerate(prompts):
                params = SamplingParams(max_new_tokens=r.max_new_tokens, temperature=r.temperature,
                                        seed=sample_seed(self.cfg.train.seed, step, prompt.index, j), tools=self.tools)
                requests.append((g, j, engine.add_request(prompt.ids, params)))
        done = {request_id: Completion(request_id) for _, _, request_id in requests}
        while engine.has_work():
            for out in engine.step():
                done[out.request_id].add(out)
        groups: list[list[Sample]] = [[] for _ in prompts]
        for g, _, request_id in requests:  # sample j of every group before sample j + 1
            out, prompt = done[request_id], prompts[g][1]
            sample = Sample(prompt, out.token_ids, out.logprobs, out.forced, truncated=out.finish_reason == "length")
            if self.reward_fn is not None:
                sample.reward, sample.correct = self.reward_fn(self.text(out.token_ids), prompt.problem, r)
            groups[g].append(sample)
        return groups

    def text(self, tokens: list[int]) -> str:
        """A completion as the evaluation scores it: special tokens dropped, cut before gsm8k's stop strings."""
        return cut_at_stops(self.fmt.tokenizer.decode(tokens, skip_special=True), gsm8k.STOP)


def collate_samples(samples: list[Sample], pad_id: int) -> Batch:
    """Rows of prompt + completion, padded: inputs, targets (the completion's sampled tokens; IGNORE elsewhere,
    a tool's forced tokens too) and old_logps (the sampler's log-probability of each target; 0 elsewhere)."""
    width = max(len(s.prompt.ids) + len(s.tokens) - 1 for s in samples)
    inputs = torch.full((len(samples), width), pad_id, dtype=torch.long)
    targets = torch.full((len(samples), width), IGNORE, dtype=torch.long)
    old_logps = torch.zeros((len(samples), width), dtype=torch.float32)
    for i, s in enumerate(samples):
        row = s.prompt.ids + s.tokens
        start = len(s.prompt.ids) - 1  # the position whose next token is the completion's first
        inputs[i, :len(row) - 1] = torch.tensor(row[:-1])
        targets[i, start:start + len(s.tokens)] = torch.tensor(
            [IGNORE if forced else token for token, forced in zip(s.tokens, s.forced, strict=True)])
        old_logps[i, start:start + len(s.tokens)] = torch.tensor(s.logprobs)
    return {"inputs": inputs, "targets": targets, "old_logps": old_logps}
