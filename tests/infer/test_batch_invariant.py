"""Under the batch-invariant mode a sequence's tokens and log-probabilities are bit for bit the same alone, in
any batch, and in a full forward; and the mode computes the model's own function."""

import pytest
import torch
import torch.nn.functional as F

from scratchlm.infer.batch_invariant import batch_invariant
from scratchlm.infer.engine import Engine
from scratchlm.model import build_model, positions_and_mask

from conftest import small_model_config
from engine_scenarios import VOCAB, crowded_engine, drive, full_forward, joining_and_leaving


@pytest.fixture(scope="module")
def model():
    return build_model(small_model_config(), seed=0).eval()


def test_sequences_joining_and_leaving_at_random_steps_get_identical_logprobs(model):
    """The scenario of test_engine's joining-and-leaving test, with the mode on: every sequence's tokens and
    log-probabilities are exactly those it gets alone and those of a full forward in the same mode."""
    requests = joining_and_leaving()
    engine = crowded_engine(model, batch_invariant=True)
    got = drive(engine, requests)
    assert engine.metrics().cached_tokens > 0
    for (_, prompt, params), completion in zip(requests, got, strict=True):
        alone = Engine(model, block_size=4, batch_invariant=True).generate([prompt], params)[0]
        with batch_invariant():
            tokens, logprobs = full_forward(model, prompt, params.max_new_tokens)
        assert completion.token_ids == alone.token_ids == tokens
        assert completion.logprobs == alone.logprobs == logprobs.tolist()


def test_the_mode_computes_the_models_own_function(model):
    """Logits of a causal batch and of packed rows (a mask), with and without the mode: equal up to fp32
    rounding, so the mode changes the order of the sums and nothing else."""
    tokens = torch.randint(0, VOCAB, (3, 21), generator=torch.Generator().manual_seed(0))
    segments = torch.tensor([[0] * 8 + [1] * 13, [0] * 21, [0] * 2 + [1] * 10 + [2] * 9])
    positions, mask = positions_and_mask(segments)
    with torch.no_grad():
        plain = model(tokens), model(tokens, positions=positions, mask=mask)
        with batch_invariant():
            invariant = model(tokens), model(tokens, positions=positions, mask=mask)
    for want, got in zip(plain, invariant, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_the_mode_with_the_engine_samples_what_the_plain_engine_does(model):
    requests = joining_and_leaving(seed=1)
    plain = drive(crowded_engine(model), requests)
    invariant = drive(crowded_engine(model, batch_invariant=True), requests)
    for want, got in zip(plain, invariant, strict=True):
        assert got.token_ids == want.token_ids
        torch.testing.assert_close(torch.tensor(got.logprobs), torch.tensor(want.logprobs), rtol=0, atol=1e-5)


def test_linear_and_silu_compute_each_row_as_if_alone():
    """Rows of 17 features (not a whole number of vectors) in a batch of 9: under the mode, each row's output
    equals what the row gets alone."""
    generator = torch.Generator().manual_seed(0)
    x, weight = torch.randn(9, 17, generator=generator) * 4, torch.randn(37, 17, generator=generator)
    with batch_invariant():
        for op in (F.silu, lambda t: F.linear(t, weight)):
            batch = op(x)
            assert all(torch.equal(batch[i:i + 1], op(x[i:i + 1])) for i in range(len(x)))


def test_dropout_and_additive_masks_are_refused(model):
    q = torch.zeros(1, 2, 3, 4)
    with batch_invariant(), pytest.raises(ValueError, match="without dropout"):
        F.scaled_dot_product_attention(q, q, q, dropout_p=0.1)
    with batch_invariant(), pytest.raises(ValueError, match="boolean attention mask shared by all heads"):
        F.scaled_dot_product_attention(q, q, q, attn_mask=torch.zeros(3, 3))
