"""The runner: log-likelihoods of a batched, padded forward equal one forward per request; windows equal
lm-eval's; generation stops where it should and cuts prompts from the left."""

from __future__ import annotations

import json
import random

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from trained_run import trained_run

from scratchlm.errors import ScratchError
from scratchlm.eval.runner import Runner, batches, rolling_windows

from conftest import ScriptedModel

lm_eval_utils = pytest.importorskip("lm_eval.utils")


@pytest.fixture(scope="module")
def runner(tmp_path_factory) -> Runner:
    return Runner.from_run(trained_run(tmp_path_factory.getbasetemp() / "eval-trained").run, device="cpu", batch_size=4)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 60), max_len=st.integers(1, 17))
def test_rolling_windows_are_lm_eval_s(n, max_len):
    tokens = list(range(100, 100 + n))
    theirs = [lm_eval_utils.make_disjoint_window(w)
              for w in lm_eval_utils.get_rolling_token_windows(tokens, prefix_token=1, max_seq_len=max_len,
                                                                 context_len=1)]
    ours = rolling_windows(tokens, 1, max_len)
    assert ours == [(list(a), list(b)) for a, b in theirs]
    assert [t for _, cont in ours for t in cont] == tokens  # every token scored once


def one_at_a_time(runner: Runner, context: list[int], continuation: list[int]) -> tuple[float, bool]:
    tokens = (context + continuation)[-(runner.context_len + 1):][:-1]
    with torch.no_grad():
        logits = runner.model(torch.tensor([tokens]))[0, -len(continuation):]
    logprobs = F.log_softmax(logits.float(), dim=-1)
    target = torch.tensor(continuation)
    return float(logprobs[range(len(continuation)), target].sum()), bool((logprobs.argmax(-1) == target).all())


def test_batched_loglikelihoods_equal_one_forward_each(runner):
    rng = random.Random(0)
    vocab = runner.model.cfg.vocab_size
    requests = []
    for _ in range(11):  # short and long, some longer than the context: cut from the left
        ctx_len = rng.choice([1, 3, 40, 300, 700])
        requests.append(([rng.randrange(vocab) for _ in range(ctx_len)],
                         [rng.randrange(vocab) for _ in range(rng.randint(1, 12))]))
    ours = runner.loglikelihoods(requests)
    for (context, continuation), (logprob, greedy) in zip(requests, ours, strict=True):
        expected, expected_greedy = one_at_a_time(runner, context, continuation)
        assert logprob == pytest.approx(expected, abs=1e-4)
        assert greedy == expected_greedy


def test_the_greedy_continuation_is_reported_greedy(runner):
    prompt = runner.tokenizer.encode("Question: Tom has 3 boxes with 12 apples in each box.\nAnswer:", bos=True)
    text = runner.generate([prompt], 30, stop=[])[0]
    continuation = runner.tokenizer.encode(text)
    (logprob, greedy), = runner.loglikelihoods([(prompt, continuation)])
    assert greedy and logprob < 0
    (_, other_greedy), = runner.loglikelihoods([(prompt, continuation[:-1] + [(continuation[-1] + 1) % 300])])
    assert not other_greedy


def test_batches_keep_row_and_token_limits():
    lengths = [50, 40, 40, 30, 10, 10]
    assert list(batches([0, 1, 2, 3, 4, 5], lengths, max_rows=3, max_tokens=100)) == [[0, 1], [2, 3], [4, 5]]
    assert list(batches([0, 1, 2, 3, 4, 5], lengths, max_rows=2, max_tokens=1000)) == [[0, 1], [2, 3], [4, 5]]
    assert list(batches([0, 1], lengths, max_rows=4, max_tokens=10)) == [[0], [1]]  # a row alone may exceed


def test_generation_stops_at_a_stop_string_and_at_the_budget(runner):
    prompt = runner.tokenizer.encode("Question: Mia has 5 pens and buys 7 more. How many pens does she have?\n"
                                     "Answer:", bos=True)
    full = runner.generate([prompt], 40, stop=[])[0]
    assert len(runner.tokenizer.encode(full)) <= 40
    stop = full[len(full) // 2:len(full) // 2 + 3]
    cut = runner.generate([prompt], 40, stop=[stop])[0]
    assert cut == full[:full.index(stop)]


def test_generation_stops_where_the_export_stops(runner, tmp_path_factory):
    export = trained_run(tmp_path_factory.getbasetemp() / "eval-trained").hf
    assert runner.stop_ids == set(json.loads((export / "generation_config.json").read_text())["eos_token_id"])


def test_prompts_are_cut_from_the_left(runner):
    long = list(range(10, 10 + runner.context_len))
    fitted, cut = runner.fit_prompt(long, 100)
    assert cut and fitted == long[-(runner.context_len - 100):]
    assert runner.fit_prompt([5, 6], 100) == ([5, 6], False)
    with pytest.raises(ScratchError, match="leaves no room"):
        runner.fit_prompt([5], runner.context_len)


def test_the_calculator_answers_a_call_in_a_completion(runner, monkeypatch):
    prompt = runner.tokenizer.encode("Question: Mia has 5 boxes of 7 pens.\nAnswer:", bos=True)
    call = runner.tokenizer.encode(" 123 * 457 = <<123*457=")
    monkeypatch.setattr(runner, "model", ScriptedModel(runner.model, {len(prompt) + i: t for i, t in enumerate(call)}))
    assert runner.generate([prompt], 30, stop=[], tools=("calculator",))[0].startswith(" 123 * 457 = <<123*457=56211>>")
    assert runner.generate([prompt], 30, stop=[])[0].startswith(" 123 * 457 = <<123*457=")
