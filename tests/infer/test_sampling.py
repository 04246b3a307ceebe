"""Sampling: each row's support and distribution under its own top-k, top-p and temperature."""

import math
from collections import Counter

import pytest
import torch

from scratchlm.errors import ScratchError
from scratchlm.infer.sampling import SamplingParams, sample

# Four likely tokens (0.4, 0.3, 0.2, 0.1 of the mass) among 50 that are all but impossible
PROBS = torch.tensor([0.4, 0.3, 0.2, 0.1] + [1e-9] * 46)
LOGITS = PROBS.log()


def draws(params: SamplingParams, n: int = 2000, logits: torch.Tensor = LOGITS) -> Counter:
    """n draws, all in one batch of n rows (one shared generator)."""
    gen = torch.Generator().manual_seed(0)
    return Counter(sample(logits.expand(n, -1), [params] * n, [gen] * n).tokens)


@pytest.mark.parametrize("top_k,top_p,support", [
    (0, 1.0, {0, 1, 2, 3}),
    (2, 1.0, {0, 1}),
    (3, 1.0, {0, 1, 2}),
    (0, 0.65, {0, 1}),  # 0.4 < 0.65 <= 0.4 + 0.3
    (0, 0.75, {0, 1, 2}),  # an intermediate top-p: the smallest set reaching 0.75 is the first three
    (0, 0.3, {0}),
    (3, 0.65, {0, 1}),  # top-k first, then top-p of what is left
])
def test_top_k_and_top_p_restrict_the_support_to_exactly_the_expected_tokens(top_k, top_p, support):
    counts = draws(SamplingParams(temperature=1.0, top_k=top_k, top_p=top_p))
    assert set(counts) == support


def test_draws_follow_the_renormalised_distribution():
    counts = draws(SamplingParams(temperature=1.0, top_p=0.75), n=6000)
    for token, p in zip(range(3), PROBS[:3] / PROBS[:3].sum(), strict=True):
        assert abs(counts[token] / 6000 - float(p)) < 0.03


@pytest.mark.parametrize("temperature", [0.3, 3.0])
def test_temperature_scales_the_logits(temperature):
    counts = draws(SamplingParams(temperature=temperature), n=6000)
    want = (LOGITS / temperature).softmax(-1)
    for token in range(4):
        assert abs(counts[token] / 6000 - float(want[token])) < 0.03


def test_each_row_keeps_its_own_parameters_in_one_batch():
    rows = [SamplingParams(temperature=0), SamplingParams(temperature=1.0, top_k=2),
            SamplingParams(temperature=1.0), SamplingParams(temperature=1.0, top_p=0.65)]
    logits = torch.stack([LOGITS, LOGITS.flip(0), LOGITS, LOGITS])
    seen: list[set[int]] = [set() for _ in rows]
    gen = torch.Generator().manual_seed(0)
    for _ in range(400):
        for i, token in enumerate(sample(logits, rows, [gen] * 4).tokens):
            seen[i].add(token)
    assert seen == [{0}, {49, 48}, {0, 1, 2, 3}, {0, 1}]


def test_a_seeded_row_draws_the_same_whatever_the_other_rows():
    params = SamplingParams(temperature=1.0)
    logits = torch.randn(3, 100)

    def row_two(other_logits: torch.Tensor, other_gen: torch.Generator | None) -> list[int]:
        gen = torch.Generator().manual_seed(5)
        batch = torch.stack([other_logits, other_logits, logits[2]])
        return [sample(batch, [params] * 3, [other_gen, None, gen]).tokens[2] for _ in range(20)]

    assert row_two(logits[0], None) == row_two(torch.randn(100), torch.Generator().manual_seed(9))


def test_logprobs_are_the_models_whatever_the_sampling():
    logits = torch.randn(2, 30)
    params = [SamplingParams(temperature=0.5, top_k=3), SamplingParams(temperature=0)]
    out = sample(logits, params, [None, None])
    want = logits.log_softmax(-1)[torch.arange(2), torch.tensor(out.tokens)]
    torch.testing.assert_close(torch.tensor(out.logprobs), want)
    assert out.tokens[1] == int(logits[1].argmax())


def test_top_logprobs_per_row():
    logits = torch.randn(2, 30)
    out = sample(logits, [SamplingParams(temperature=0, top_logprobs=4), SamplingParams(temperature=0)], [None, None])
    values, ids = logits[0].log_softmax(-1).topk(4)
    assert [t for t, _ in out.top[0]] == ids.tolist() and out.top[1] == []
    torch.testing.assert_close(torch.tensor([lp for _, lp in out.top[0]]), values)


@pytest.mark.parametrize("params,message", [
    (SamplingParams(temperature=math.nan), "temperature must be 0"),
    (SamplingParams(temperature=math.inf), "temperature must be 0"),
    (SamplingParams(temperature=-1), "temperature must be 0"),
    (SamplingParams(top_p=math.nan), "top-p must be in"),
    (SamplingParams(top_p=0), "top-p must be in"),
    (SamplingParams(top_k=-2), "top-k"),
    (SamplingParams(max_new_tokens=0), "max-new-tokens"),
    (SamplingParams(top_logprobs=21), "top_logprobs"),
    (SamplingParams(stop=[""]), "stop strings"),
])
def test_bad_parameters_are_refused(params, message):
    with pytest.raises(ScratchError, match=message):
        params.check()
