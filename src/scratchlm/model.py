"""The Transformer, top to bottom like the diagram in docs/architecture.md.

    tokens -> embedding
           -> N x [ h = x + Attention(RMSNorm(x))   # RoPE on q and k, grouped-query attention
                    x = h + SwiGLU(RMSNorm(h)) ]    # w2(silu(w1 x) * w3 x)
           -> RMSNorm -> linear head (optionally tied to the embedding) -> logits
                         (or, for a reward model, a score head: one scalar per position)

Plain PyTorch that knows nothing of parallelism: tensor, data and pipeline parallelism are applied
from outside (scratchlm.parallel). Layers live in an nn.ModuleDict keyed by their index, so a
parameter's name is the same on every pipeline stage and in every checkpoint. Parameter shapes
and the "rotate half" RoPE layout are Llama's, so Hugging Face conversion renames tensors only.

Build on the meta device, then materialise and initialise:

    with torch.device("meta"):
        model = Transformer(cfg)
    model.to_empty(device="cpu")
    model.init_weights(seed=0)
"""

from __future__ import annotations

import math
import zlib
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from scratchlm.config import ModelConfig


class KVCacheLike(Protocol):
    def update(self, layer_id: int, start_pos: int, k: torch.Tensor, v: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]: ...


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in fp32 whatever the input dtype (as Llama does)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).type_as(x)
        return normed * self.weight


def rope_tables(cfg: ModelConfig, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of shape (max_seq_len, head_dim) for the rotate-half layout.

    Pair i of a head rotates by angle pos * theta^(-2i/head_dim); the layout stores the first
    halves of all pairs, then the second halves, so the table repeats the frequencies twice.
    """
    half = cfg.head_dim // 2
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, half, device=device, dtype=torch.float64) / half))
    if cfg.rope_scaling == "llama3":
        inv_freq = llama3_scaled(inv_freq, cfg)
    positions = torch.arange(cfg.max_seq_len, device=device, dtype=torch.float64)
    angles = torch.outer(positions, inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().float(), angles.sin().float()


def llama3_scaled(inv_freq: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """Llama 3.1's frequency scaling for long contexts.

    Pairs whose wavelength exceeds the pretraining context / low_freq_factor never completed a turn
    in pretraining, so they are slowed by rope_factor to stretch over the longer context; those
    shorter than context / high_freq_factor keep their speed; in between, the two blend linearly in
    context / wavelength. This equals transformers' three-case form (its boundaries included).
    """
    wavelen = 2 * math.pi / inv_freq
    smooth = ((cfg.rope_original_max_seq_len / wavelen - cfg.rope_low_freq_factor)
              / (cfg.rope_high_freq_factor - cfg.rope_low_freq_factor)).clamp(0, 1)
    return (1 - smooth) * inv_freq / cfg.rope_factor + smooth * inv_freq


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (batch, heads, seq, head_dim); cos, sin: (seq, head_dim) for the positions of x.

    The tables are cast to x's dtype: under bf16 autocast q and k are bf16, and rotating them in
    fp32 would double the memory traffic of this purely elementwise step for no gain in accuracy
    that the bf16 attention after it could keep.
    """
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return x * cos + rotate_half(x) * sin


class Attention(nn.Module):
    """Causal self-attention with grouped-query heads: n_kv_heads key/value heads, each shared by
    n_heads / n_kv_heads query heads (n_kv_heads == n_heads is MHA, n_kv_heads == 1 is MQA)."""

    def __init__(self, cfg: ModelConfig, layer_id: int) -> None:
        super().__init__()
        self.layer_id = layer_id
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.wk = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wv = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCacheLike | None = None,
                start_pos: int = 0, positions: torch.Tensor | None = None, mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        """cos, sin: the whole RoPE tables. They are sliced here, where x holds the full sequence: under
        sequence parallelism a block's residual stream is only a shard of it.

        positions: (batch, seq) position of every token, when they are not start_pos, start_pos + 1, ...
        for every row (packed conversations restart at 0; a batch of cached sequences sits at different
        lengths). mask: boolean, broadcastable to (batch, heads, seq, keys), True where a query may attend
        a key; None is causal attention over the cache and the new tokens.
        """
        batch, seq, _ = x.shape
        if positions is None:
            cos, sin = cos[start_pos:start_pos + seq], sin[start_pos:start_pos + seq]
        else:  # one row of the tables per token, broadcast over the heads
            cos, sin = cos[positions].unsqueeze(1), sin[positions].unsqueeze(1)
        # -1 instead of n_heads: under tensor parallelism this rank holds only its share of the heads.
        q = self.wq(x).view(batch, seq, -1, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(batch, seq, -1, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(batch, seq, -1, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer_id, start_pos, k, v)
        causal = mask is None
        if mask is None and k.shape[2] != seq:  # decoding with a cache: queries sit at the end of the keys
            causal = False
            if seq > 1:  # several new tokens: each sees the cache and the new tokens up to itself
                mask = torch.ones(seq, k.shape[2], dtype=torch.bool, device=x.device).tril(k.shape[2] - seq)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                             enable_gqa=q.shape[1] != k.shape[1])
        return self.wo(out.transpose(1, 2).reshape(batch, seq, -1))


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x). The gate w1 decides how much of the value w3 passes."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    """Pre-norm residual block: h = x + attn(norm(x)); out = h + ffn(norm(h))."""

    def __init__(self, cfg: ModelConfig, layer_id: int) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention = Attention(cfg, layer_id)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.feed_forward = FeedForward(cfg.dim, cfg.ffn_hidden_dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCacheLike | None = None,
                start_pos: int = 0, positions: torch.Tensor | None = None, mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), cos, sin, cache, start_pos, positions, mask)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings: nn.Embedding | None = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleDict({str(i): TransformerBlock(cfg, i) for i in range(cfg.n_layers)})
        self.norm: RMSNorm | None = RMSNorm(cfg.dim, cfg.norm_eps)
        # Tied: the head multiplies by the embedding matrix itself, so there is one tensor to keep in
        # sync, to shard and to save (a separate Linear sharing the weight breaks under to_empty).
        lm_head = cfg.head == "lm" and not cfg.tie_embeddings
        self.output: nn.Linear | None = nn.Linear(cfg.dim, cfg.vocab_size, bias=False) if lm_head else None
        # A reward model reads one number per position instead of a distribution over the vocabulary.
        self.score: nn.Linear | None = nn.Linear(cfg.dim, 1, bias=False) if cfg.head == "score" else None
        cos, sin = rope_tables(cfg)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(self, tokens: torch.Tensor, cache: KVCacheLike | None = None, start_pos: int = 0,
                positions: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """tokens: (batch, seq) ids -> logits (batch, seq, vocab), or with the score head scores (batch, seq).
        positions and mask: see Attention.forward (packed sequences: positions_and_mask; the inference
        engine: its own for paged caches).

        A pipeline stage without the embedding takes hidden states (batch, seq, dim) instead, and
        one without the head returns hidden states.
        """
        h = self.tok_embeddings(tokens) if self.tok_embeddings is not None else tokens
        for layer in self.layers.values():
            h = layer(h, self.rope_cos, self.rope_sin, cache, start_pos, positions, mask)
        if self.norm is None:
            return h
        h = self.norm(h)
        if self.score is not None:
            return self.score(h).squeeze(-1)
        if self.output is not None:
            return self.output(h)
        return F.linear(h, self.tok_embeddings.weight)

    @torch.no_grad()
    def init_weights(self, seed: int = 0) -> None:
        """Initialise every parameter and recompute the RoPE tables (after to_empty from meta)."""
        self.init_buffers()
        for name, param in self.named_parameters():
            self.init_parameter(name, param, parameter_generator(seed, name, param.device))

    @torch.no_grad()
    def init_buffers(self) -> None:
        cos, sin = rope_tables(self.cfg, device=self.rope_cos.device)
        self.rope_cos.copy_(cos)
        self.rope_sin.copy_(sin)

    @torch.no_grad()
    def init_parameter(self, name: str, tensor: torch.Tensor, generator: torch.Generator) -> None:
        """Initialise the parameter called `name` (its name in the full model) into `tensor`, in place.

        Each parameter draws from its own generator, seeded by its name (parameter_generator), so its
        values do not depend on which other parameters a module holds: a pipeline stage with some of
        the layers, or a rank that fills a shard of a parameter, gets what the whole model would.
        Residual-branch output projections (wo, w2) start smaller, by 1/sqrt(2 n_layers), so the
        residual stream's variance does not grow with depth (GPT-2's scheme).
        """
        std = self.cfg.init_std
        if name.endswith("norm.weight"):
            nn.init.ones_(tensor)
        elif name == "tok_embeddings.weight":
            nn.init.normal_(tensor, std=std, generator=generator)
        else:
            if name.endswith(("wo.weight", "w2.weight")):
                std = std / math.sqrt(2 * self.cfg.n_layers)
            nn.init.trunc_normal_(tensor, std=std, a=-3 * std, b=3 * std, generator=generator)


def positions_and_mask(segments: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For rows that pack several sequences: segments (batch, seq) numbers each token's sequence within its
    row (0, 0, 0, 1, 1, 2, ...; equal neighbours belong together). Returns the positions, restarting at 0
    where a sequence starts, and the attention mask (batch, 1, seq, seq): causal, and never across two
    sequences, so a packed row computes what its sequences would one by one."""
    seq = segments.shape[1]
    index = torch.arange(seq, device=segments.device).expand_as(segments)
    starts = torch.ones_like(segments, dtype=torch.bool)
    starts[:, 1:] = segments[:, 1:] != segments[:, :-1]
    first = torch.where(starts, index, torch.zeros_like(index)).cummax(dim=1).values
    same = segments.unsqueeze(2) == segments.unsqueeze(1)
    causal = torch.ones(seq, seq, dtype=torch.bool, device=segments.device).tril()
    return index - first, (same & causal).unsqueeze(1)


def parameter_generator(seed: int, name: str, device: torch.device | str) -> torch.Generator:
    """A generator for one parameter, seeded by the run's seed and the parameter's name."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))


def build_model(cfg: ModelConfig, device: torch.device | str = "cpu", seed: int = 0) -> Transformer:
    """Construct on the meta device (no memory), then materialise on `device` and initialise."""
    with torch.device("meta"):
        model = Transformer(cfg)
    model.to_empty(device=device)
    model.init_weights(seed)
    return model


def num_params(cfg: ModelConfig, embedding: bool = True) -> int:
    """Parameter count from the shapes alone (works for a 70B config without memory)."""
    d, hd = cfg.dim, cfg.head_dim
    attn = d * cfg.n_heads * hd * 2 + d * cfg.n_kv_heads * hd * 2
    ffn = 3 * d * cfg.ffn_hidden_dim
    per_layer = attn + ffn + 2 * d
    emb = cfg.vocab_size * d
    head = d if cfg.head == "score" else 0 if cfg.tie_embeddings else cfg.vocab_size * d
    return cfg.n_layers * per_layer + d + head + (emb if embedding else 0)


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token: 6 N + 12 L d T (forward + backward).

    N counts the weights that do matrix products: every parameter but the embedding lookup, plus
    the head (which is the embedding matrix again when tied). 12 L d T is the attention's q k^T and
    attention-times-v products, which no parameter count sees.
    """
    tied_head = cfg.tie_embeddings and cfg.head == "lm"
    n_matmul = num_params(cfg, embedding=False) + (cfg.vocab_size * cfg.dim if tied_head else 0)
    return 6 * n_matmul + 12 * cfg.n_layers * cfg.dim * seq_len
