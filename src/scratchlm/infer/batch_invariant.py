"""Batch-invariant mode: every token's numbers are computed alone, so no batch can change their bits.

A matrix product of 5 rows sums in another order than one of 1 row (the BLAS picks its kernel and
blocking by shape), and attention over a padded, masked batch reduces over more positions than a
sequence alone does: in fp32 a token's log-probability moves by about 1e-6 with the company it keeps.
Under `batch_invariant()` the operations of the model whose rounding can depend on the batch are
recomputed token by token, each in one call whose shape depends only on that token:

- `F.linear` (every nn.Linear, and the tied head): one row at a time, (1, in) x (in, out);
- `F.silu`: one row at a time. It reduces nothing, but its vectorised exp rounds otherwise than the
  scalar exp that finishes a chunk of the flattened tensor, and where chunks end depends on the
  number of rows (and threads) unless a row is a whole number of vectors;
- `F.scaled_dot_product_attention`: one query at a time, over exactly the keys its mask (or
  `is_causal`) lets it see, gathered into a tensor of their own, with no mask: a token at position p
  makes the same call, over the same p + 1 keys, in a full forward and from the paged KV cache.

The rest of the model is per row already (RMSNorm, RoPE's and SwiGLU's products and sums, the
sampler's log-softmax). Each row or query is first copied into fresh memory: a BLAS kernel may sum
in another order when its input starts at another alignment.

It is a `TorchFunctionMode`, applied from outside: the model knows nothing of it. It is slow (a
Python loop over tokens; docs/serving.md gives the cost) and meant for tests, checking RL
log-probabilities and reproducing a run, not for serving.

    with batch_invariant():
        logits = model(tokens)        # bit for bit what Engine(model, batch_invariant=True) computes
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode


def batch_invariant() -> BatchInvariantMode:
    """A context manager within which F.linear, F.silu and F.scaled_dot_product_attention compute each token
    alone."""
    return BatchInvariantMode()


class BatchInvariantMode(TorchFunctionMode):
    """While it is active, torch hands every torch function call to __torch_function__ (without the mode,
    so the calls made here run as usual)."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is F.linear or func is F.silu:
            return by_rows(func, *args, **kwargs)
        if func is F.scaled_dot_product_attention:
            return attention_by_query(*args, **kwargs)
        return func(*args, **kwargs)


def by_rows(func: Any, input: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """func(input, *args, **kwargs) for an input (..., features), one (1, features) row per call."""
    rows = input.reshape(-1, input.shape[-1])
    out = torch.cat([func(row.clone(), *args, **kwargs) for row in rows.split(1)])
    return out.view(*input.shape[:-1], out.shape[-1])


def attention_by_query(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       attn_mask: torch.Tensor | None = None, dropout_p: float = 0.0, is_causal: bool = False,
                       scale: float | None = None, enable_gqa: bool = False) -> torch.Tensor:
    """F.scaled_dot_product_attention for (batch, heads, queries, head_dim) tensors, one query per call,
    over its visible keys only."""
    if dropout_p:
        raise ValueError("batch_invariant() computes attention without dropout; pass dropout_p=0")
    batch, _, queries, _ = query.shape
    visible = visible_keys(attn_mask, is_causal, batch, queries, key.shape[2], query.device)
    rows = []
    for b in range(batch):
        outs = []
        for t in range(queries):
            keys = visible[b, t].nonzero().squeeze(1)
            q = query[b:b + 1, :, t:t + 1].clone(memory_format=torch.contiguous_format)
            k, v = key[b:b + 1].index_select(2, keys), value[b:b + 1].index_select(2, keys)
            outs.append(F.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=enable_gqa))
        rows.append(torch.cat(outs, dim=2))
    return torch.cat(rows)


def visible_keys(attn_mask: torch.Tensor | None, is_causal: bool, batch: int, queries: int, keys: int,
                 device: torch.device) -> torch.Tensor:
    """(batch, queries, keys) boolean: which keys each query attends, as SDPA reads its mask arguments
    (is_causal: query t sees keys 0..t). One mask for all heads: the model's masks never differ by head."""
    if is_causal:
        return torch.ones(queries, keys, dtype=torch.bool, device=device).tril().expand(batch, -1, -1)
    if attn_mask is None:
        return torch.ones(batch, queries, keys, dtype=torch.bool, device=device)
    if attn_mask.dtype != torch.bool or (attn_mask.dim() > 2 and attn_mask.shape[-3] != 1):
        raise ValueError("batch_invariant() takes a boolean attention mask shared by all heads "
                         f"(got {attn_mask.dtype}, shape {tuple(attn_mask.shape)})")
    return attn_mask.broadcast_to(batch, 1, queries, keys)[:, 0]
