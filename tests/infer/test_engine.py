"""The engine against the model's own full forward, against itself run alone, and against transformers."""

import random
from collections import Counter

import pytest
import torch

from scratchlm.errors import ScratchError
from scratchlm.infer import engine as engine_module
from scratchlm.infer.engine import Completion, Engine
from scratchlm.infer.sampling import SamplingParams
from scratchlm.interop.hf import rename
from scratchlm.model import build_model
from scratchlm.tokenizer import train_tokenizer

from conftest import WORDS, ScriptedModel, small_model_config
from engine_scenarios import VOCAB, crowded_engine, drive, full_forward, greedy, joining_and_leaving


@pytest.fixture(scope="module")
def model():
    return build_model(small_model_config(), seed=0).eval()


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer([" ".join(WORDS)] * 20, VOCAB)


def assert_same_logprobs(got: list[float], want: torch.Tensor) -> None:
    # fp32 rounding of matrix products of other shapes: about 1e-6 on this model
    torch.testing.assert_close(torch.tensor(got), want, rtol=0, atol=1e-5)


def test_greedy_tokens_and_logprobs_equal_the_full_forward(model):
    prompt = [5, 17, 42, 9]
    got = Engine(model, block_size=4).generate([prompt], greedy(20))[0]
    tokens, logprobs = full_forward(model, prompt, 20)
    assert got.token_ids == tokens and got.finish_reason == "length"
    assert_same_logprobs(got.logprobs, logprobs)


def test_sequences_joining_and_leaving_at_random_steps_decode_as_if_alone(model):
    """Prompts of different lengths, half behind a shared prefix, arriving at random steps and leaving
    after random budgets, five running at most, prompts prefilled in chunks: every sequence's tokens
    are those it gets alone and those of the full forward, and so are its log-probabilities."""
    requests = joining_and_leaving()
    engine = crowded_engine(model)
    got = drive(engine, requests)
    for (_, prompt, params), completion in zip(requests, got, strict=True):
        alone = Engine(model, block_size=4).generate([prompt], params)[0]
        tokens, logprobs = full_forward(model, prompt, params.max_new_tokens)
        assert completion.token_ids == alone.token_ids == tokens
        assert_same_logprobs(completion.logprobs, logprobs)
        assert_same_logprobs(alone.logprobs, logprobs)
    metrics = engine.metrics()
    assert metrics.cached_tokens > 0 and metrics.waiting == metrics.running == metrics.blocks_in_use == 0


def test_greedy_tokens_and_logprobs_match_transformers():
    """A random transformers Llama and the engine, same weights: the same greedy tokens for a batch of
    prompts of different lengths, and the log-probabilities of transformers' logits."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = small_model_config(tie_embeddings=False)
    torch.manual_seed(0)
    hf = LlamaForCausalLM(LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.dim, intermediate_size=cfg.ffn_hidden_dim,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
        max_position_embeddings=cfg.max_seq_len, rope_theta=cfg.rope_theta, rms_norm_eps=cfg.norm_eps,
        tie_word_embeddings=False, bos_token_id=None, eos_token_id=None, pad_token_id=0)).eval()
    ours = build_model(cfg)
    ours.load_state_dict({rename(k, to_hf=False): v for k, v in hf.state_dict().items()})
    prompts = [[3, 1, 4, 1, 5], [9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2], [27]]
    got = Engine(ours.eval(), block_size=4).generate(prompts, greedy(12))
    for prompt, completion in zip(prompts, got, strict=True):
        with torch.no_grad():
            out = hf.generate(torch.tensor([prompt]), max_new_tokens=12, min_new_tokens=12, do_sample=False,
                              output_logits=True, return_dict_in_generate=True)
        new = out.sequences[0, len(prompt):]
        assert completion.token_ids == new.tolist()
        logprobs = torch.cat(out.logits).log_softmax(-1)  # (new tokens, vocab)
        assert_same_logprobs(completion.logprobs, logprobs[torch.arange(len(new)), new])


def test_top_logprobs_are_the_full_forwards_most_likely_tokens(model):
    prompt = [8, 6, 7, 5, 3, 0, 9]
    got = Engine(model).generate([prompt], greedy(6, top_logprobs=3))[0]
    with torch.no_grad():
        logprobs = model(torch.tensor([prompt + got.token_ids]))[0, len(prompt) - 1:-1].log_softmax(-1)
    values, ids = logprobs.topk(3, dim=-1)
    assert [[t for t, _ in step] for step in got.top_logprobs] == ids.tolist()
    torch.testing.assert_close(torch.tensor([[lp for _, lp in step] for step in got.top_logprobs]), values,
                               rtol=0, atol=1e-5)


def test_a_cached_prefix_skips_its_prefill(model):
    system = list(range(1, 35))  # 34 tokens: four full blocks of 8
    engine = Engine(model, block_size=8)
    engine.generate([system + [40, 41]], greedy(5))
    before = engine.metrics()
    second = engine.generate([system + [50, 51, 52]], greedy(5))[0]
    after = engine.metrics()
    assert second.cached_tokens == 32 and after.cached_tokens - before.cached_tokens == 32
    assert after.prefilled_tokens - before.prefilled_tokens == len(system) + 3 - 32
    assert second.token_ids == Engine(model, block_size=8).generate([system + [50, 51, 52]], greedy(5))[0].token_ids


def test_samples_of_one_prompt_share_one_prefill_and_keep_their_seeds(model):
    """The G samples of an RL prompt, submitted together: the prompt is prefilled once, the others wait
    a step and take its blocks; each sample is what its seed gives alone."""
    prompt = list(range(100, 130))  # 30 tokens: three full blocks of 8, then 6 tokens
    params = [SamplingParams(max_new_tokens=8, temperature=1.0, seed=s) for s in range(4)]
    engine = Engine(model, block_size=8)
    got = engine.generate([prompt] * 4, params)
    metrics = engine.metrics()
    assert metrics.prefilled_tokens == 30 + 3 * 6 and metrics.cached_tokens == 3 * 24
    for p, completion in zip(params, got, strict=True):
        assert completion.token_ids == Engine(model, block_size=8).generate([prompt], p)[0].token_ids
    assert len({tuple(c.token_ids) for c in got}) > 1


def test_cached_blocks_are_evicted_deepest_first_under_memory_pressure(model):
    engine = Engine(model, block_size=4, cache_tokens=64)  # 16 blocks
    a = list(range(1, 18))  # 17 tokens: four full blocks
    engine.generate([a], greedy(1))
    assert engine.metrics().blocks_cached == 4 and engine.metrics().blocks_in_use == 0
    b = list(range(200, 240))  # 40 tokens + 10 generated: 13 blocks, one more than the 12 never cached
    engine.generate([b], greedy(10))
    assert engine.metrics().blocks_cached < 4 + 13
    again = engine.generate([a], greedy(1))[0]
    assert again.cached_tokens == 12  # a's last full block went first; its first three survive


def test_a_full_pool_makes_requests_wait_and_preempts_and_all_finish_exactly(model):
    engine = Engine(model, block_size=4, cache_tokens=48, max_running=8)  # 12 blocks for 6 x 28 tokens
    prompts = [[i + 1] * 8 + [i + 50] for i in range(6)]
    ids = [engine.add_request(p, greedy(19)) for p in prompts]
    done = {i: Completion(i) for i in ids}
    seen_waiting = 0
    while engine.has_work():
        for out in engine.step():
            done[out.request_id].add(out)
        seen_waiting = max(seen_waiting, engine.metrics().waiting)
        assert engine.metrics().blocks_in_use <= 12
    metrics = engine.metrics()
    assert seen_waiting > 0 and metrics.preemptions > 0 and metrics.blocks_in_use == 0
    for prompt, i in zip(prompts, ids, strict=True):
        assert done[i].token_ids == full_forward(model, prompt, 19)[0]


def check_pool(engine: Engine) -> None:
    """The pool's books balance: every block is free, cached and unheld, or held as often as tables list it."""
    pool, held = engine.pool, Counter()
    for seq in engine.scheduler.running:
        held.update(seq.blocks)
    assert all(pool.refs[b] == held[b] for b in range(1, pool.num_blocks))
    assert all(pool.refs[b] == 0 and b in pool.hash_of for b in pool.evictable)
    assert all(pool.refs[b] == 0 and b not in pool.hash_of for b in pool.free)
    assert len(held) + pool.available == pool.usable
    assert all(not s.blocks for s in engine.scheduler.waiting)


def test_random_arrivals_aborts_and_preemptions_keep_the_books_and_the_tokens(model):
    rng = random.Random(3)
    engine = Engine(model, block_size=4, cache_tokens=48, max_running=6, max_prefill_tokens=16)
    shared = [rng.randrange(VOCAB) for _ in range(9)]
    prompts, finished, aborted = {}, {}, set()
    for step in range(400):
        if step < 100 and rng.random() < 0.6:
            prompt = (shared if rng.random() < 0.5 else []) + [rng.randrange(VOCAB) for _ in range(rng.randint(1, 8))]
            prompts[engine.add_request(prompt, greedy(rng.randint(4, 24)))] = prompt
        if engine.sequences and rng.random() < 0.05:
            victim = rng.choice(list(engine.sequences))
            engine.abort(victim)
            aborted.add(victim)
        for out in engine.step():
            finished.setdefault(out.request_id, Completion(out.request_id)).add(out)
        check_pool(engine)
    assert not engine.has_work() and engine.metrics().blocks_in_use == 0 and not engine.scheduler.computing
    assert engine.metrics().preemptions > 0 and aborted
    for request_id, completion in finished.items():
        if request_id not in aborted:
            assert completion.token_ids == full_forward(model, prompts[request_id], len(completion.token_ids))[0]


def test_abort_frees_the_sequences_blocks_at_once(model):
    engine = Engine(model, block_size=4)
    ids = [engine.add_request(list(range(1, 20)), greedy(30)) for _ in range(2)]
    ids.append(engine.add_request([7, 7, 7], greedy(30)))
    for _ in range(3):
        engine.step()
    held = engine.metrics().blocks_in_use
    out = engine.abort(ids[2])
    assert out.finished and out.finish_reason == "abort"
    assert engine.metrics().blocks_in_use < held and engine.metrics().running == 2
    assert engine.abort(ids[2]) is None
    for i in ids[:2]:
        engine.abort(i)
    assert engine.metrics().blocks_in_use == 0 and not engine.has_work()


def test_stop_token_ends_the_sequence_and_is_reported(model):
    prompt = [5, 17, 42, 9]
    tokens, _ = full_forward(model, prompt, 12)
    stop = tokens[6]
    got = Engine(model, stop_ids={stop}).generate([prompt], greedy(12))[0]
    assert got.token_ids == tokens[:tokens.index(stop) + 1]  # the stop token included, for RL
    assert got.finish_reason == "stop" and got.stop_reason == stop
    per_request = Engine(model).generate([prompt], greedy(12, stop_token_ids=[stop]))[0]
    assert per_request.token_ids == got.token_ids


def test_stop_string_spanning_two_tokens_cuts_the_text_before_it(model, tokenizer):
    engine = Engine(model, tokenizer=tokenizer)
    prompt = tokenizer.encode("the cat sat", bos=True)
    params = SamplingParams(max_new_tokens=40, temperature=1.0, seed=0)
    free = engine.generate([prompt], params)[0]
    texts = [tokenizer.decode(free.token_ids[:k]) for k in range(len(free.token_ids) + 1)]
    assert texts[-1] == free.text
    # a stop string made of the last character of one token's text and the first of the next's
    k = next(k for k in range(5, len(texts)) if len(texts[k - 1]) < len(texts[k]) and texts[k].startswith(texts[k - 1])
             and texts[k][len(texts[k - 1]) - 1:len(texts[k - 1]) + 1].isalpha())
    stop = texts[k][len(texts[k - 1]) - 1:len(texts[k - 1]) + 1]
    cut = free.text.index(stop)
    pieces = list(engine.stream(prompt, SamplingParams(max_new_tokens=40, temperature=1.0, seed=0, stop=[stop])))
    got = Completion("x")
    for out in pieces:
        got.add(out)
    assert cut > 0 and got.text == free.text[:cut] and got.finish_reason == "stop" and got.stop_reason == stop
    ends = next(j for j in range(len(texts)) if stop in texts[j])
    assert got.token_ids == free.token_ids[:ends]
    assert all(stop not in out.text for out in pieces)


def test_seeded_samples_do_not_depend_on_the_batch(model):
    prompt = [11, 12, 13]
    params = SamplingParams(max_new_tokens=20, temperature=1.0, top_k=50, top_p=0.9, seed=7)
    alone = Engine(model).generate([prompt], params)[0].token_ids
    rng = random.Random(1)
    company = [(rng.randrange(6), [rng.randrange(VOCAB) for _ in range(rng.randint(1, 9))],
                SamplingParams(max_new_tokens=rng.randint(1, 25), temperature=0.7, seed=rng.choice([None, 3])))
               for _ in range(6)]
    got = drive(Engine(model, block_size=4, max_running=4), [*company[:3], (2, prompt, params), *company[3:]])
    assert got[3].token_ids == alone
    other_seed = SamplingParams(max_new_tokens=20, temperature=1.0, top_k=50, top_p=0.9, seed=8)
    assert Engine(model).generate([prompt], other_seed)[0].token_ids != alone


def test_generation_stops_at_the_context_end(model):
    got = Engine(model).generate([list(range(60))], greedy(50))[0]
    assert len(got.token_ids) == 4 and got.finish_reason == "length"  # max_seq_len 64


@pytest.mark.parametrize("prompt,params,message", [
    ([], greedy(1), "the prompt is empty"),
    ([1, VOCAB], greedy(1), f"token id {VOCAB}, outside the model's vocabulary 0..{VOCAB - 1}"),
    (list(range(64)), greedy(1), "the prompt is 64 tokens, but the model's context is 64"),
    ([1], SamplingParams(temperature=float("nan")), "temperature"),
    ([1], greedy(1, stop=["x"]), "stop strings need an engine with a tokenizer"),
    ([1], greedy(1, tools=("calculator",)), "tools need an engine with a tokenizer"),
    ([1], greedy(1, tools=("abacus",)), "unknown tool 'abacus'; known tools: calculator"),
    ([1], greedy(1, tools="calculator"), "tools must be a list of tool names"),
])
def test_bad_requests_are_refused_in_one_line(model, prompt, params, message):
    with pytest.raises(ScratchError, match=message):
        Engine(model).add_request(prompt, params)


def test_the_default_cache_holds_max_running_contexts_up_to_a_ceiling(model, monkeypatch):
    assert Engine(model, max_running=3).capacity == 3 * 64
    monkeypatch.setattr(engine_module, "DEFAULT_CACHE_BYTES", 2**20)
    long_context = build_model(small_model_config(max_seq_len=8192), seed=0)
    per_token = 2 * 2 * 2 * 16 * 4  # keys and values, 2 layers, 2 kv heads, head_dim 16, fp32
    assert Engine(long_context).capacity == 2**20 // per_token


def test_a_request_larger_than_the_whole_cache_is_refused(model):
    with pytest.raises(ScratchError, match="need 40 tokens of KV cache, but it holds 32"):
        Engine(model, block_size=8, cache_tokens=32).add_request(list(range(20)), greedy(20))


CALCULATOR = ("calculator",)


def calling(model, tokenizer, call: str, at: int) -> ScriptedModel:
    """The model, made to write `call` from position `at` on (greedy) and to choose freely elsewhere."""
    return ScriptedModel(model, {at + i: t for i, t in enumerate(tokenizer.encode(call))})


def test_a_calculator_call_is_answered_with_forced_tokens_that_the_cache_holds_as_the_full_forward_does(
        model, tokenizer):
    """The model writes " <<12+3*4=": the engine feeds "24>>" (flagged, log-probability 0), and every token
    the model chooses afterwards, and its log-probability, is the full forward's over the whole text."""
    prompt = tokenizer.encode("Tom had 3 apples and", bos=True)
    call = tokenizer.encode(" <<12+3*4=")
    scripted = calling(model, tokenizer, " <<12+3*4=", len(prompt))
    got = Engine(scripted, tokenizer=tokenizer, block_size=4).generate([prompt], greedy(30, tools=CALCULATOR))[0]
    fed = tokenizer.encode("24>>")
    n = len(call)
    assert got.token_ids[:n + len(fed)] == call + fed and "<<12+3*4=24>>" in got.text
    assert got.forced == [False] * n + [True] * len(fed) + [False] * (len(got.token_ids) - n - len(fed))
    assert got.logprobs[n:n + len(fed)] == [0.0] * len(fed)
    with torch.no_grad():
        logprobs = scripted(torch.tensor([prompt + got.token_ids]))[0, len(prompt) - 1:-1].log_softmax(-1)
    chosen = [i for i, forced in enumerate(got.forced) if not forced]
    assert logprobs[chosen].argmax(-1).tolist() == [got.token_ids[i] for i in chosen]
    assert_same_logprobs([got.logprobs[i] for i in chosen],
                         logprobs[chosen, torch.tensor([got.token_ids[i] for i in chosen])])
    without = Engine(scripted, tokenizer=tokenizer, block_size=4).generate([prompt], greedy(30))[0]
    assert without.token_ids[:n] == call and not any(without.forced) and len(without.forced) == 30


@pytest.mark.parametrize(("call", "fed"), [
    (" <<7/0=", None),  # no result: the model writes on
    (" <<2**8=", None),  # refused: no power
    (" <<10/4=", "2.5>>"),
    (" <<(1+2)*-3=", "-9>>"),
])
def test_what_the_calculator_feeds(model, tokenizer, call, fed):
    prompt = tokenizer.encode("the cat sat", bos=True)
    scripted = calling(model, tokenizer, call, len(prompt))
    got = Engine(scripted, tokenizer=tokenizer).generate([prompt], greedy(20, tools=CALCULATOR))[0]
    n = len(tokenizer.encode(call))
    forced = [tokenizer.decode([t]) for t, f in zip(got.token_ids, got.forced, strict=True) if f]
    assert "".join(forced) == (fed or "") and all(got.forced[n:n + len(forced)])


def test_calls_are_answered_alike_alone_and_in_any_batch(model, tokenizer):
    """Sequences with and without the calculator, joining at random steps behind shared prefixes, prompts
    prefilled in chunks, a pool small enough to preempt: each gets the tokens, flags and log-probabilities
    it gets alone."""
    rng = random.Random(2)
    words = tokenizer.encode(" ".join(WORDS))
    scripted = calling(model, tokenizer, " <<3+4*5=", 14)  # every sequence writes the call at 14..
    requests = []
    for i in range(10):
        prompt = words[:rng.randint(2, 12)] if i % 2 else [rng.randrange(VOCAB) for _ in range(rng.randint(2, 12))]
        requests.append((rng.randrange(12), prompt, greedy(rng.randint(24, 40), tools=CALCULATOR if i % 3 else ())))
    engine = Engine(scripted, tokenizer=tokenizer, block_size=4, max_running=4, max_prefill_tokens=16,
                    cache_tokens=96)
    got = drive(engine, requests)
    assert engine.metrics().preemptions > 0
    for (_, prompt, params), completion in zip(requests, got, strict=True):
        alone = Engine(scripted, tokenizer=tokenizer, block_size=4).generate([prompt], params)[0]
        assert completion.token_ids == alone.token_ids and completion.forced == alone.forced
        assert any(completion.forced) == bool(params.tools) and "<<3+4*5=" in completion.text
        assert_same_logprobs(completion.logprobs, torch.tensor(alone.logprobs))


def test_forced_tokens_end_at_the_budget_and_count_in_it(model, tokenizer):
    prompt = tokenizer.encode("the cat", bos=True)
    call = tokenizer.encode(" <<1000+2345=")
    scripted = calling(model, tokenizer, " <<1000+2345=", len(prompt))
    budget = len(call) + 2  # "3345>>" is more than two tokens
    got = Engine(scripted, tokenizer=tokenizer).generate([prompt], greedy(budget, tools=CALCULATOR))[0]
    assert len(got.token_ids) == budget and got.finish_reason == "length" and got.forced[-2:] == [True, True]
    assert got.token_ids[-2:] == tokenizer.encode("3345>>")[:2]
