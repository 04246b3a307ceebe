import pytest
import torch

from scratchlm.model import (
    Transformer,
    apply_rope,
    build_model,
    flops_per_token,
    num_params,
    positions_and_mask,
    rope_tables,
)

from conftest import small_model_config


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1], ids=["MHA", "GQA", "MQA"])
def test_attention_shapes(n_kv_heads):
    cfg = small_model_config(n_kv_heads=n_kv_heads)
    model = build_model(cfg, seed=0)
    attn = model.layers["0"].attention
    assert attn.wq.weight.shape == (cfg.n_heads * cfg.head_dim, cfg.dim)
    assert attn.wk.weight.shape == (n_kv_heads * cfg.head_dim, cfg.dim)
    assert attn.wv.weight.shape == (n_kv_heads * cfg.head_dim, cfg.dim)
    assert model(torch.randint(0, cfg.vocab_size, (3, 10))).shape == (3, 10, cfg.vocab_size)


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
def test_gqa_equals_mha_with_repeated_kv_heads(n_kv_heads):
    """GQA is MHA whose key/value heads are copies: expanding wk, wv must give identical logits."""
    gqa_cfg = small_model_config(n_kv_heads=n_kv_heads)
    gqa = build_model(gqa_cfg, seed=1)
    mha = build_model(small_model_config(n_kv_heads=4), seed=2)
    state = gqa.state_dict()
    repeat = 4 // n_kv_heads
    for key, value in list(state.items()):
        if key.endswith(("wk.weight", "wv.weight")):
            state[key] = value.view(n_kv_heads, gqa_cfg.head_dim, -1).repeat_interleave(repeat, 0).flatten(0, 1)
    mha.load_state_dict(state)
    tokens = torch.randint(0, gqa_cfg.vocab_size, (2, 12))
    torch.testing.assert_close(gqa(tokens), mha(tokens), rtol=1e-5, atol=1e-5)


def test_causality():
    """Changing a later token never changes an earlier position's logits."""
    cfg = small_model_config()
    model = build_model(cfg, seed=0)
    tokens = torch.randint(0, cfg.vocab_size, (1, 16))
    base = model(tokens)
    for t in (3, 9, 15):
        changed = tokens.clone()
        changed[0, t] = (changed[0, t] + 1) % cfg.vocab_size
        out = model(changed)
        torch.testing.assert_close(out[:, :t], base[:, :t], rtol=0, atol=0)
        assert not torch.allclose(out[:, t], base[:, t])


class ContiguousCache:
    """The simplest cache the model's protocol allows: every layer's keys and values at positions 0..max_len."""

    def __init__(self, n_layers: int, batch: int, n_kv_heads: int, max_len: int, head_dim: int) -> None:
        self.k = torch.zeros(n_layers, batch, n_kv_heads, max_len, head_dim)
        self.v = torch.zeros_like(self.k)

    def update(self, layer_id, start_pos, k, v):
        end = start_pos + k.shape[2]
        self.k[layer_id, :, :, start_pos:end], self.v[layer_id, :, :, start_pos:end] = k, v
        return self.k[layer_id, :, :, :end], self.v[layer_id, :, :, :end]


@pytest.mark.parametrize("n_kv_heads", [4, 1])
def test_kv_cache_decoding_equals_full_forward(n_kv_heads):
    cfg = small_model_config(n_kv_heads=n_kv_heads)
    model = build_model(cfg, seed=0).eval()
    tokens = torch.randint(0, cfg.vocab_size, (2, 24))
    full = model(tokens)
    cache = ContiguousCache(cfg.n_layers, 2, cfg.n_kv_heads, 24, cfg.head_dim)
    pieces = [model(tokens[:, :10], cache=cache, start_pos=0),  # prefill
              model(tokens[:, 10:14], cache=cache, start_pos=10)]  # a chunk of several new tokens
    pieces += [model(tokens[:, i:i + 1], cache=cache, start_pos=i) for i in range(14, 24)]  # one at a time
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tie", [True, False])
def test_meta_construction_and_counts(tie):
    cfg = small_model_config(tie_embeddings=tie)
    with torch.device("meta"):
        meta = Transformer(cfg)
    assert sum(p.numel() for p in meta.parameters()) == num_params(cfg)
    model = build_model(cfg, seed=0)
    assert sum(p.numel() for p in model.parameters()) == num_params(cfg)
    assert all(p.device.type == "cpu" and torch.isfinite(p).all() for p in model.parameters())
    assert ("output.weight" in model.state_dict()) is not tie


def test_init_is_seeded():
    cfg = small_model_config()
    a, b, c = build_model(cfg, seed=0), build_model(cfg, seed=0), build_model(cfg, seed=1)
    for (name, pa), pb, pc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values(),
                                  strict=True):
        assert torch.equal(pa, pb), name
        if "norm" not in name:
            assert not torch.equal(pa, pc), name


def test_rope_rotates_pairs_by_position():
    """RoPE is a rotation: norms are kept, and q.k depends only on the distance between positions."""
    cfg = small_model_config(max_seq_len=32)
    cos, sin = rope_tables(cfg)
    q, k = torch.randn(1, 1, 1, cfg.head_dim), torch.randn(1, 1, 1, cfg.head_dim)
    rotated = apply_rope(q.expand(1, 1, 32, -1), cos, sin)
    torch.testing.assert_close(rotated.norm(dim=-1), q.norm(dim=-1).expand(1, 1, 32))

    def score(i, j):
        return (apply_rope(q, cos[i:i + 1], sin[i:i + 1]) * apply_rope(k, cos[j:j + 1], sin[j:j + 1])).sum()

    torch.testing.assert_close(score(5, 2), score(20, 17))
    assert not torch.allclose(score(5, 2), score(5, 4))


@pytest.mark.parametrize("tie", [True, False])
def test_flops_formula_matches_counted_flops(tie):
    """The 6N part is three times the forward pass's counted matrix products (norm gains aside, under 1%);
    12 L d T is attention's q.k and p.v: 2 products x 2 T d FLOPs per token per layer, times 3 for training.
    (The FLOP counter does not see the CPU's fused attention kernel, so that part is written out.)"""
    from torch.utils.flop_counter import FlopCounterMode

    cfg = small_model_config(tie_embeddings=tie, vocab_size=2000)
    model = build_model(cfg, seed=0)
    seq = 48
    with FlopCounterMode(display=False) as counter:
        model(torch.randint(0, cfg.vocab_size, (1, seq)))
    attention = 3 * 2 * 2 * seq * cfg.dim * cfg.n_layers
    assert flops_per_token(cfg, seq) == pytest.approx(3 * counter.get_total_flops() / seq + attention, rel=0.01)


@pytest.mark.parametrize("tie", [True, False])
def test_a_score_head_reads_one_number_per_position_from_the_final_norm(tie):
    """model.head score: Linear(dim, 1) on the normed hidden states instead of the LM head; counts and FLOPs
    follow (no vocabulary-sized product, tied or not)."""
    from torch.utils.flop_counter import FlopCounterMode

    cfg = small_model_config(tie_embeddings=tie, head="score", vocab_size=2000)
    model = build_model(cfg, seed=0)
    assert model.output is None and sum(p.numel() for p in model.parameters()) == num_params(cfg)
    tokens = torch.randint(0, cfg.vocab_size, (2, 12))
    normed = {}
    model.norm.register_forward_hook(lambda _m, _i, out: normed.setdefault("h", out))
    with FlopCounterMode(display=False) as counter:
        scores = model(tokens)
    assert scores.shape == (2, 12)
    torch.testing.assert_close(scores, normed["h"] @ model.score.weight[0])
    attention = 3 * 2 * 2 * 12 * cfg.dim * cfg.n_layers
    assert flops_per_token(cfg, 12) == pytest.approx(3 * counter.get_total_flops() / 24 + attention, rel=0.01)


def test_packed_rows_compute_each_sequence_alone():
    cfg = small_model_config()
    model = build_model(cfg)
    torch.manual_seed(0)
    pieces = [torch.randint(0, cfg.vocab_size, (1, n)) for n in (5, 1, 7)]
    segments = torch.cat([torch.full((1, p.shape[1]), i) for i, p in enumerate(pieces)], dim=1)
    positions, mask = positions_and_mask(segments)
    assert positions.tolist() == [[0, 1, 2, 3, 4, 0, 0, 1, 2, 3, 4, 5, 6]]
    packed = model(torch.cat(pieces, dim=1), positions=positions, mask=mask)
    start = 0
    for piece in pieces:
        alone = model(piece)
        torch.testing.assert_close(packed[:, start:start + piece.shape[1]], alone, rtol=0, atol=1e-6)
        start += piece.shape[1]
    # Without the mask the later sequences would see the earlier ones: the test can tell.
    unmasked = model(torch.cat(pieces, dim=1), positions=positions)
    assert (unmasked[:, 6:] - packed[:, 6:]).abs().max() > 1e-3
