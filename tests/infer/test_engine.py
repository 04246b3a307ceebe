import pytest
import torch

from scratchlm.errors import ScratchError
from scratchlm.infer.engine import Engine, SamplingParams, sample
from scratchlm.model import build_model

from conftest import small_model_config


@pytest.fixture(scope="module")
def model():
    return build_model(small_model_config(), seed=0).eval()


def greedy_by_full_forward(model, prompt: list[int], n: int) -> list[int]:
    tokens = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            tokens.append(int(model(torch.tensor([tokens]))[0, -1].argmax()))
    return tokens[len(prompt):]


def test_greedy_engine_equals_full_forward_argmax(model):
    prompt = [5, 17, 42, 9]
    assert Engine(model, stop_ids=set()).generate(prompt, SamplingParams(max_new_tokens=20, temperature=0)) == \
        greedy_by_full_forward(model, prompt, 20)


def test_stops_at_stop_token(model):
    prompt = [5, 17, 42, 9]
    full = greedy_by_full_forward(model, prompt, 12)
    stop = full[6]
    out = Engine(model, stop_ids={stop}).generate(prompt, SamplingParams(max_new_tokens=12, temperature=0))
    assert out == full[:full.index(stop)]


def test_seeded_sampling_repeats_and_seeds_differ(model):
    engine = Engine(model, stop_ids=set())
    params = [SamplingParams(max_new_tokens=30, temperature=1.0, seed=s) for s in (1, 1, 2)]
    a, b, c = (engine.generate([1, 2, 3], p) for p in params)
    assert a == b and a != c


def test_top_k_one_and_tiny_top_p_are_greedy():
    logits = torch.randn(4, 50)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(sample(logits, SamplingParams(temperature=1.0, top_k=1), gen), logits.argmax(-1))
    assert torch.equal(sample(logits, SamplingParams(temperature=1.0, top_p=1e-6), gen), logits.argmax(-1))


def test_top_k_only_samples_among_top_k():
    logits = torch.randn(1, 100)
    allowed = set(torch.topk(logits, 5).indices[0].tolist())
    gen = torch.Generator().manual_seed(0)
    draws = {int(sample(logits, SamplingParams(temperature=2.0, top_k=5), gen)) for _ in range(200)}
    assert draws <= allowed and len(draws) > 1


def test_prompt_longer_than_context_is_refused(model):
    engine = Engine(model, stop_ids=set())
    with pytest.raises(ScratchError, match="context"):
        engine.generate(list(range(64)), SamplingParams(temperature=0))
    with pytest.raises(ScratchError, match="temperature"):
        engine.generate([1], SamplingParams(temperature=-1))


def test_generation_stops_at_the_context_end(model):
    out = Engine(model, stop_ids=set()).generate(list(range(60)), SamplingParams(max_new_tokens=50, temperature=0))
    assert len(out) == 4  # max_seq_len 64
