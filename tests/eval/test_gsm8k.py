"""GSM8K: prompts and shots as lm-eval builds them, and `scratchlm eval` scoring a trained run exactly as
lm-eval's own gsm8k task scores its export with lm-eval's `hf` model (same completions, same extracted
answers, same metrics with both filters)."""

from __future__ import annotations

import json

import pytest
from trained_run import hf_args, lm_eval_run, local_dataset, task_yaml, trained_run, write_jsonl

from scratchlm.data import corpus
from scratchlm.eval import gsm8k, scorer
from scratchlm.eval.evaluate import evaluate
from scratchlm.eval.task import EvalOptions

from conftest import run_cli

lm_eval = pytest.importorskip("lm_eval")
from lm_eval.api.samplers import ContextSampler, FirstNSampler  # noqa: E402


def test_prompt_is_lm_eval_s_format():
    shots = [{"question": "Q1?", "answer": "A1\n#### 1"}, {"question": "Q2?", "answer": "A2\n#### 2"}]
    assert gsm8k.prompt_text(shots, {"question": "Q3?"}) == \
        "Question: Q1?\nAnswer: A1\n#### 1\n\nQuestion: Q2?\nAnswer: A2\n#### 2\n\nQuestion: Q3?\nAnswer:"
    assert gsm8k.prompt_text([], {"question": "Q3?"}) == "Question: Q3?\nAnswer:"


@pytest.mark.parametrize("sampler", ["first_n", "random"])
def test_shots_are_those_lm_eval_s_samplers_draw(sampler):
    pool = list(corpus.math_problems("train", 40))
    ours = gsm8k.choose_shots(pool, 5, 12, sampler, seed=1234)
    theirs = (FirstNSampler if sampler == "first_n" else ContextSampler)(pool, rnd=1234)
    assert ours == [theirs.sample(5) for _ in range(12)]
    assert sampler == "first_n" or ours[0] != ours[1]  # a fresh draw per question


def test_more_shots_than_the_pool_holds_is_refused():
    with pytest.raises(Exception, match="more examples than the few-shot data holds"):
        gsm8k.choose_shots([{"question": "q", "answer": "a"}] * 3, 5, 1, "first_n", 0)


# ------------------------------------------------------------------------------ agreement with lm-eval


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return trained_run(tmp_path_factory.getbasetemp() / "eval-trained")


@pytest.fixture(scope="module")
def gsm8k_files(trained, tmp_path_factory):
    """GSM8K-format test and train files. Half of the test golds are set to the answer the model gives (first
    pass, greedy, 5-shot), so both scores sit between 0 and 1 and a disagreement in any answer shows."""
    root = tmp_path_factory.mktemp("gsm8k")
    problems = list(corpus.math_problems("heldout", 10))
    train = write_jsonl(root / "train.jsonl", list(corpus.math_problems("train", 30)))
    first = write_jsonl(root / "first.jsonl", problems)
    result = evaluate(trained.run, ["gsm8k"], EvalOptions(data=str(first), fewshot_data=str(train)))[0]
    for i, sample in enumerate(result.samples[::2]):
        answer = sample["strict_match"] if sample["strict_match"] != scorer.INVALID else sample["flexible_extract"]
        problems[2 * i] = {**problems[2 * i], "answer": f"worked by the model\n#### {answer}"}
    return write_jsonl(root / "test.jsonl", problems), train


def lm_eval_gsm8k(trained, tmp_path, test, train, sampler: str | None) -> dict:
    fields = local_dataset(train=train, test=test)
    if sampler:
        fields["fewshot_config"] = {"sampler": sampler}
    task_yaml(tmp_path / "tasks", "gsm8k_local", include="gsm8k/gsm8k.yaml", **fields)
    return lm_eval_run("hf", hf_args(trained), tmp_path / "tasks", "gsm8k_local")


def assert_same_as_lm_eval(theirs: dict, run_dir, shots_sampler: str, train) -> None:
    ours = json.loads((run_dir / "eval" / "gsm8k.json").read_text())
    samples = [json.loads(line) for line in (run_dir / "eval" / "gsm8k_samples.jsonl").open()]
    results = theirs["results"]["gsm8k_local"]
    for key, lm_key in (("strict_match", "strict-match"), ("flexible_extract", "flexible-extract")):
        assert ours["metrics"][key] == pytest.approx(results[f"exact_match,{lm_key}"], abs=1e-12)
        assert ours["metrics"][f"{key}_stderr"] == pytest.approx(results[f"exact_match_stderr,{lm_key}"], abs=1e-12)
        logged = sorted((s for s in theirs["samples"]["gsm8k_local"] if s["filter"] == lm_key),
                        key=lambda s: s["doc_id"])
        assert [s["filtered_resps"][0] for s in logged] == [s[key] for s in samples]
        assert [s["resps"][0][0] for s in logged] == [s["completion"] for s in samples]
    pool = [json.loads(line) for line in train.open()]
    shots = gsm8k.choose_shots(pool, 5, len(samples), shots_sampler, 1234)
    prompts = [s["arguments"][0][0] for s in logged]
    assert prompts == [gsm8k.prompt_text(sh, {"question": s["question"]}) for sh, s in zip(shots, samples, strict=True)]
    assert ours["settings"]["prompts_cut"] == len(samples)  # 5 shots outgrow 512 - 256 tokens: cut as lm-eval cuts


@pytest.mark.slow
def test_first_n_shots_score_as_lm_eval_gsm8k(trained, gsm8k_files, tmp_path):
    test, train = gsm8k_files
    run_cli("eval", str(trained.run), "--tasks", "gsm8k", "--data", str(test), "--fewshot-data", str(train))
    theirs = lm_eval_gsm8k(trained, tmp_path, test, train, "first_n")
    assert_same_as_lm_eval(theirs, trained.run, "first_n", train)
    ours = json.loads((trained.run / "eval" / "gsm8k.json").read_text())["metrics"]
    assert 0 < ours["strict_match"] < 1 and 0 < ours["flexible_extract"] < 1


@pytest.mark.slow
def test_stock_random_shots_score_as_lm_eval_gsm8k(trained, gsm8k_files, tmp_path):
    """lm-eval's stock gsm8k draws shots with random.Random(1234); --fewshot-sampler random draws the same."""
    test, train = gsm8k_files
    run_cli("eval", str(trained.run), "--tasks", "gsm8k", "--data", str(test), "--fewshot-data", str(train),
            "--fewshot-sampler", "random")
    theirs = lm_eval_gsm8k(trained, tmp_path, test, train, None)
    assert_same_as_lm_eval(theirs, trained.run, "random", train)
