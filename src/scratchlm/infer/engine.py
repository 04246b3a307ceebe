"""The generation engine: a preallocated KV cache, prefill, then one token at a time.

One engine serves every command that generates text.

    prompt ids --prefill (one forward over the prompt, filling the cache)--> logits of the last position
    loop: sample a token -> forward that one token at its position (reads the cache) -> next logits

The cache turns each new token's cost from a pass over the whole sequence into a pass over one
position: keys and values of earlier positions never change, so they are computed once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from scratchlm.errors import ScratchError
from scratchlm.model import Transformer


class KVCache:
    """Keys and values of every layer: (n_layers, batch, n_kv_heads, max_len, head_dim) each."""

    def __init__(self, n_layers: int, batch: int, n_kv_heads: int, max_len: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device) -> None:
        shape = (n_layers, batch, n_kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)

    def update(self, layer_id: int, start_pos: int, k: torch.Tensor, v: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v at positions start_pos.. and return all keys and values up to the last of them."""
        end = start_pos + k.shape[2]
        self.k[layer_id, :, :, start_pos:end] = k
        self.v[layer_id, :, :, start_pos:end] = v
        return self.k[layer_id, :, :, :end], self.v[layer_id, :, :, :end]


@dataclass
class SamplingParams:
    max_new_tokens: int = 128
    temperature: float = 0.8  # 0: greedy (always the most likely token)
    top_k: int = 0  # 0: off; else sample among the k most likely tokens
    top_p: float = 1.0  # 1: off; else among the smallest set whose probability reaches p
    seed: int | None = None

    def check(self) -> None:
        if self.temperature < 0:
            raise ScratchError(f"temperature must be 0 (greedy) or positive, got {self.temperature}")
        if self.top_k < 0:
            raise ScratchError(f"top-k must be 0 (off) or positive, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ScratchError(f"top-p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ScratchError(f"max-new-tokens must be at least 1, got {self.max_new_tokens}")


def sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> torch.Tensor:
    """logits: (batch, vocab) -> token ids (batch,)."""
    if params.temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / params.temperature
    if params.top_k:
        kth = torch.topk(logits, min(params.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token when the tokens before it already reach top_p; the most likely always stays.
        drop = (cumulative - sorted_logits.softmax(dim=-1)) >= params.top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class Engine:
    """Runs the model in its parameters' dtype; the KV cache takes the same dtype."""

    def __init__(self, model: Transformer, stop_ids: set[int]) -> None:
        self.model = model.eval()
        self.stop_ids = stop_ids
        self.device = next(model.parameters()).device

    @property
    def context_len(self) -> int:
        return self.model.cfg.max_seq_len

    @torch.inference_mode()
    def stream(self, prompt: list[int], params: SamplingParams) -> Iterator[int]:
        """Yield new token ids one by one; stops at a stop token (not yielded) or the token budget."""
        params.check()
        if not prompt:
            raise ScratchError("the prompt is empty")
        if len(prompt) >= self.context_len:
            raise ScratchError(f"the prompt is {len(prompt)} tokens, but the model's context is {self.context_len}; "
                               "shorten the prompt")
        budget = min(params.max_new_tokens, self.context_len - len(prompt))
        cfg = self.model.cfg
        cache = KVCache(cfg.n_layers, 1, cfg.n_kv_heads, len(prompt) + budget, cfg.head_dim,
                        next(self.model.parameters()).dtype, self.device)
        generator = None
        if params.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(params.seed)
        tokens = torch.tensor([prompt], device=self.device)
        pos = 0
        for _ in range(budget):
            logits = self.model(tokens, cache=cache, start_pos=pos)[:, -1]
            pos += tokens.shape[1]
            next_id = sample(logits, params, generator)
            token = int(next_id.item())
            if token in self.stop_ids:
                return
            yield token
            tokens = next_id.view(1, 1)

    def generate(self, prompt: list[int], params: SamplingParams) -> list[int]:
        return list(self.stream(prompt, params))
