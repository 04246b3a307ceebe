"""`scratchlm eval`: the files it writes (the contract), chat by lineage, pass@k, and one clear line for
each bad input."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from trained_run import hub_folder, trained_run, write_jsonl

from scratchlm.chat import load_chat_format
from scratchlm.cli import main
from scratchlm.data import corpus
from scratchlm.eval import gsm8k
from scratchlm.eval.evaluate import TASKS, evaluate
from scratchlm.eval.task import EvalOptions
from scratchlm.run import load_tokenizer

from conftest import ScriptedModel


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return trained_run(tmp_path_factory.getbasetemp() / "eval-trained")


def cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_gsm8k_writes_the_contract(trained, capsys):
    code, out, _ = cli(capsys, "eval", str(trained.run), "--tasks", "gsm8k", "--limit", "3", "--fewshot", "2",
                       "--max-new-tokens", "48", "--no-chat")
    assert code == 0
    summary = json.loads((trained.run / "eval" / "gsm8k.json").read_text())
    assert summary["task"] == "gsm8k" and summary["n"] == 3
    assert set(summary["metrics"]) == {"strict_match", "strict_match_stderr", "flexible_extract",
                                       "flexible_extract_stderr"}
    assert summary["settings"]["fewshot"] == 2 and summary["settings"]["max_new_tokens"] == 48
    assert summary["checkpoint"] == "step_000300" and len(summary["data_fingerprint"]) == 16
    samples = [json.loads(line) for line in (trained.run / "eval" / "gsm8k_samples.jsonl").open()]
    assert len(samples) == 3
    assert {"prompt", "completion", "strict_match", "flexible_extract", "gold", "strict_correct"} <= set(samples[0])
    assert samples[0]["prompt"].startswith("<|bos|>Question: ") and samples[0]["prompt"].count("Question: ") == 3
    assert out.startswith("gsm8k (n=3): strict_match ") and str(trained.run / "eval" / "gsm8k.json") in out


def test_gsm8k_with_the_calculator(trained, capsys, monkeypatch):
    """--tools calculator reaches the engine: a model made to open a call right after the prompt finds the
    calculator's result in its completion, and the summary records the flag."""
    from scratchlm.eval import runner as runner_module

    tokenizer = load_tokenizer(trained.run)
    problem = next(iter(corpus.math_problems("heldout", 1)))
    start = len(tokenizer.encode(gsm8k.prompt_text([], problem), bos=True))
    call = tokenizer.encode(" 123 * 457 = <<123*457=")
    real_load_run = runner_module.load_run

    def load_calling_run(*args, **kwargs):
        cfg, tok, model = real_load_run(*args, **kwargs)
        return cfg, tok, ScriptedModel(model, {start + i: t for i, t in enumerate(call)})

    monkeypatch.setattr(runner_module, "load_run", load_calling_run)
    code, out, _ = cli(capsys, "eval", str(trained.run), "--tasks", "gsm8k", "--limit", "1", "--fewshot", "0",
                       "--max-new-tokens", "40", "--no-chat", "--tools", "calculator")
    assert code == 0 and out.startswith("gsm8k (n=1)")
    summary = json.loads((trained.run / "eval" / "gsm8k.json").read_text())
    assert summary["settings"]["tools"] == ["calculator"]
    (sample,) = [json.loads(line) for line in (trained.run / "eval" / "gsm8k_samples.jsonl").open()]
    assert sample["completion"].startswith(" 123 * 457 = <<123*457=56211>>")


def test_the_fingerprint_changes_with_the_data(trained):
    first = evaluate(trained.run, ["gsm8k"], EvalOptions(limit=2, fewshot=0, max_new_tokens=8))[0]
    again = evaluate(trained.run, ["gsm8k"], EvalOptions(limit=2, fewshot=0, max_new_tokens=8))[0]
    other = evaluate(trained.run, ["gsm8k"], EvalOptions(limit=3, fewshot=0, max_new_tokens=8))[0]
    assert first.fingerprint == again.fingerprint != other.fingerprint
    assert first.samples == again.samples  # greedy: the same completions


def test_pass_at_k_from_sampled_completions(trained):
    options = EvalOptions(limit=4, fewshot=1, max_new_tokens=40, samples=3, temperature=1.0, seed=7)
    result = evaluate(trained.run, ["gsm8k"], options)[0]
    m = result.metrics
    for key in ("strict_match", "flexible_extract"):
        assert m[f"{key}_pass@1"] <= m[f"{key}_pass@3"]
        assert m[f"{key}_pass@1"] == pytest.approx(sum(s[f"{key.split('_')[0]}_correct_count"]
                                                       for s in result.samples) / 12)
    assert all(len(s["completions"]) == 3 for s in result.samples)
    assert len({c for s in result.samples for c in s["completions"]}) > 4  # sampled, not one greedy answer
    assert evaluate(trained.run, ["gsm8k"], options)[0].samples == result.samples  # seeded


def test_a_hub_dataset_gives_its_train_split_as_shots(trained, tmp_path):
    folder = hub_folder(tmp_path / "gsm8k", {"test": list(corpus.math_problems("heldout", 2)),
                                             "train": list(corpus.math_problems("train", 3))})
    result = evaluate(trained.run, ["gsm8k"], EvalOptions(data=f"hf:{folder}:main", fewshot=1, max_new_tokens=8))[0]
    assert result.settings["data"] == f"hf:{folder}:main:test"
    assert result.settings["fewshot_data"] == f"hf:{folder}:main:train"
    shot = next(corpus.math_problems("train", 1))
    assert f"Question: {shot['question']}\nAnswer: {shot['answer']}" in result.samples[0]["prompt"]


@pytest.fixture
def sft_run(trained, tmp_path):
    """A copy of the trained run whose config says an SFT stage trained it from the original."""
    run = tmp_path / "sft"
    shutil.copytree(trained.run, run, ignore=shutil.ignore_patterns("eval"))
    config = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({**config, "stage": "sft", "parent": str(trained.run)}))
    return run


def rendered(run, messages) -> str:
    """The conversation's prompt as the chat renderer gives it to the model."""
    return load_tokenizer(run).decode(load_chat_format(run).prompt_ids(messages))


def test_an_sft_lineage_is_asked_zero_shot_in_chat(sft_run):
    result = evaluate(sft_run, ["gsm8k"], EvalOptions(limit=2, max_new_tokens=16))[0]
    assert result.settings["chat"] is True and result.settings["fewshot"] == 0
    question = next(corpus.math_problems("heldout", 1))["question"]
    assert result.samples[0]["prompt"] == rendered(sft_run, [{"role": "user", "content": question}])
    assert result.samples[0]["prompt"].endswith(f"{question}<|end|><|assistant|>")  # the bare question
    base = evaluate(sft_run, ["gsm8k"], EvalOptions(limit=2, max_new_tokens=16, chat=False))[0]
    assert base.settings["fewshot"] == 5 and base.samples[0]["prompt"].endswith(f"Question: {question}\nAnswer:")


def test_chat_with_shots_puts_them_in_earlier_turns(sft_run):
    result = evaluate(sft_run, ["gsm8k"], EvalOptions(limit=1, fewshot=1, max_new_tokens=8))[0]
    shot = next(corpus.math_problems("train", 1))
    question = next(corpus.math_problems("heldout", 1))["question"]
    assert result.samples[0]["prompt"] == rendered(sft_run, [
        {"role": "user", "content": shot["question"]}, {"role": "assistant", "content": shot["answer"]},
        {"role": "user", "content": question}])


# ------------------------------------------------------------------------------------------- bad input


def one_error_line(capsys, *args: str) -> str:
    code, _, err = cli(capsys, *args)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_unknown_task_names_the_known_ones(trained, capsys):
    line = one_error_line(capsys, "eval", str(trained.run), "--tasks", "gsm8k,gsm9k")
    assert line == f"error: unknown task 'gsm9k'; known tasks: {', '.join(TASKS)}"


def test_a_file_missing_a_field_names_it(trained, tmp_path, capsys):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"question": "What is 2 + 2?", "solution": "4"}])
    line = one_error_line(capsys, "eval", str(trained.run), "--tasks", "gsm8k", "--data", str(bad))
    assert line == f"error: {bad} record 1 has no field 'answer'; this task reads question, answer"


def test_limit_zero_is_refused(trained, capsys):
    assert "--limit must be at least 1" in one_error_line(capsys, "eval", str(trained.run), "--tasks", "gsm8k",
                                                          "--limit", "0")


def test_more_shots_than_the_fewshot_file_holds(trained, tmp_path, capsys):
    shots = write_jsonl(tmp_path / "shots.jsonl", list(corpus.math_problems("train", 3)))
    line = one_error_line(capsys, "eval", str(trained.run), "--tasks", "gsm8k", "--fewshot", "5",
                          "--fewshot-data", str(shots))
    assert "--fewshot 5 asks for more examples than the few-shot data holds (3)" in line


def test_a_run_without_weights(trained, tmp_path, capsys):
    empty = tmp_path / "untrained"
    empty.mkdir()
    shutil.copy(trained.run / "config.yaml", empty)
    shutil.copy(trained.run / "tokenizer.json", empty)
    assert "has no checkpoint yet" in one_error_line(capsys, "eval", str(empty), "--tasks", "gsm8k")
    assert "does not exist" in one_error_line(capsys, "eval", str(tmp_path / "nowhere"), "--tasks", "bpb")


@pytest.mark.parametrize(("args", "message"), [
    (["--samples", "3"], "add --temperature"),
    (["--max-new-tokens", "512"], "leaves no room for a prompt"),
    (["--fewshot-sampler", "best"], "--fewshot-sampler must be one of first_n, random"),
    (["--tools", "abacus"], "unknown tool 'abacus'; known tools: calculator"),
])
def test_other_bad_options(trained, capsys, args, message):
    assert message in one_error_line(capsys, "eval", str(trained.run), "--tasks", "gsm8k", "--limit", "1", *args)


def test_one_data_file_for_several_tasks_is_refused(trained, tmp_path, capsys):
    line = one_error_line(capsys, "eval", str(trained.run), "--tasks", "gsm8k,bpb", "--data", str(tmp_path / "x"))
    assert "evaluate one task at a time with --data" in line
