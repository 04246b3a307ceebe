"""Per-sequence sampling parameters, and one sampling call for a whole batch of them.

Each row of a decode batch may ask for its own temperature, top-k, top-p and seed. Sampling is
batched: greedy rows take the argmax; the others are scaled, restricted and drawn together.

A draw uses the exponential race (Gumbel-max in another form): the token argmax(p_i / E_i) with E_i
~ Exp(1) has probability p_i. The race needs one vector of noise per row, so a row with a seed draws
its noise from its own generator, and its samples do not depend on which other sequences share the
batch.

Log-probabilities are the model's own (log_softmax of the raw logits, before temperature, top-k or
top-p): what reinforcement learning's ratios and the API's `logprobs` report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from scratchlm.errors import ScratchError
from scratchlm.infer.tools import parse_tools

MAX_TOP_LOGPROBS = 20  # as OpenAI's API allows


@dataclass
class SamplingParams:
    max_new_tokens: int = 128
    temperature: float = 0.8  # 0: greedy (always the most likely token)
    top_k: int = 0  # 0: off; else sample among the k most likely tokens
    top_p: float = 1.0  # 1: off; else among the smallest set whose probability reaches p
    seed: int | None = None  # the sequence's own generator: the same samples whatever runs beside it
    stop: list[str] = field(default_factory=list)  # stop strings: the text ends before the first one
    stop_token_ids: list[int] = field(default_factory=list)  # stop tokens beyond the engine's own
    top_logprobs: int = 0  # also report this many most likely tokens and their log-probabilities per step
    skip_special_tokens: bool = False  # leave special tokens (chat roles, ...) out of the text
    tools: tuple[str, ...] = ()  # tools the engine runs as the text grows (infer/tools.py), e.g. ("calculator",)

    def check(self) -> None:
        """Refuse what cannot be sampled, in the words of the command-line flags."""
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise ScratchError(f"temperature must be 0 (greedy) or a positive number, got {self.temperature}")
        if not math.isfinite(self.top_p) or not 0 < self.top_p <= 1:
            raise ScratchError(f"top-p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ScratchError(f"top-k must be 0 (off) or positive, got {self.top_k}")
        if self.max_new_tokens < 1:
            raise ScratchError(f"max-new-tokens must be at least 1, got {self.max_new_tokens}")
        if not 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS:
            raise ScratchError(f"top_logprobs must be in 0..{MAX_TOP_LOGPROBS}, got {self.top_logprobs}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ScratchError(f"stop strings must be non-empty strings, got {self.stop!r}")
        if isinstance(self.tools, str):
            raise ScratchError(f"tools must be a list of tool names, such as ('calculator',), not the string "
                               f"{self.tools!r}")
        parse_tools(self.tools)

    @property
    def restricts(self) -> bool:
        return self.temperature > 0 and (self.top_k > 0 or self.top_p < 1)


@dataclass
class Sampled:
    """One step's draws for a batch: the tokens, their log-probabilities, and the top alternatives."""

    tokens: list[int]
    logprobs: list[float]
    top: list[list[tuple[int, float]]]  # per row: (token, log-probability), most likely first; [] if not asked


def sample(logits: torch.Tensor, params: Sequence[SamplingParams],
           generators: Sequence[torch.Generator | None]) -> Sampled:
    """logits: (batch, vocab), one row per sequence, each with its params and generator (None: torch's
    global generator)."""
    logits = logits.float()
    tokens = logits.argmax(dim=-1)
    rows = [i for i, p in enumerate(params) if p.temperature > 0]
    if rows:
        tokens[rows] = draw(logits[rows], [params[i] for i in rows], [generators[i] for i in rows])
    logprobs = logits.log_softmax(dim=-1)
    chosen = logprobs.gather(1, tokens.unsqueeze(1)).squeeze(1)
    k = max(p.top_logprobs for p in params)
    top: list[list[tuple[int, float]]] = [[] for _ in params]
    if k:
        values, ids = logprobs.topk(k, dim=-1)
        for i, p in enumerate(params):
            top[i] = list(zip(ids[i, :p.top_logprobs].tolist(), values[i, :p.top_logprobs].tolist(), strict=True))
    return Sampled(tokens.tolist(), chosen.tolist(), top)


def draw(logits: torch.Tensor, params: Sequence[SamplingParams], generators: Sequence[torch.Generator | None]
         ) -> torch.Tensor:
    """Sample one token per row from softmax(logits / temperature), restricted by top-k, then top-p."""
    device = logits.device
    logits = logits / torch.tensor([p.temperature for p in params], device=device).unsqueeze(1)
    order = None
    if any(p.restricts for p in params):
        logits, order = restrict(logits, [p.top_k for p in params], [p.top_p for p in params])
    probs = logits.softmax(dim=-1)
    noise = torch.empty_like(probs)
    for i, generator in enumerate(generators):
        noise[i].exponential_(generator=generator)
    # An exact 0 from the exponential would make 0 / 0 of a token outside the support.
    picks = (probs / noise.clamp_min_(torch.finfo(noise.dtype).tiny)).argmax(dim=-1)
    return picks if order is None else order.gather(1, picks.unsqueeze(1)).squeeze(1)


def restrict(logits: torch.Tensor, top_k: list[int], top_p: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort each row, then set to -inf every token outside its row's top-k (0: off) and, among those
    left, outside the smallest set whose probability reaches its top-p. Returns the sorted, restricted
    logits and the order (sorted position -> token id)."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    rank = torch.arange(logits.shape[1], device=logits.device)
    k = torch.tensor([k or logits.shape[1] for k in top_k], device=logits.device)
    sorted_logits = sorted_logits.masked_fill(rank >= k.unsqueeze(1), float("-inf"))
    probs = sorted_logits.softmax(dim=-1)
    # Drop a token when the tokens before it already reach top_p; the most likely always stays. A row
    # without top-p compares with infinity: rounding can lift a cumulative sum just past 1.
    before = probs.cumsum(dim=-1) - probs
    p = torch.tensor([p if p < 1 else math.inf for p in top_p], device=logits.device).unsqueeze(1)
    return sorted_logits.masked_fill(before >= p, float("-inf")), order
