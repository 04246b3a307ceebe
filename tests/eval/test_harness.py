"""The lm-eval adapter: lm-eval with model "scratchlm" on a run gives what lm-eval with its `hf` model gives
on the run's export: the same gsm8k completions and scores, multiple-choice log-likelihoods within 1e-4
and the same accuracies, the same rolling log-likelihoods and bits per byte."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from trained_run import arc_records, hf_args, lm_eval_run, local_dataset, task_yaml, trained_run, write_jsonl

from scratchlm.data import corpus

from conftest import ROOT

pytest.importorskip("lm_eval")

TOL = 1e-4


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return trained_run(tmp_path_factory.getbasetemp() / "eval-trained")


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    """Task YAMLs over local files: lm-eval's own gsm8k and arc_easy, and a rolling log-likelihood task."""
    root = tmp_path_factory.mktemp("harness")
    gsm_test = write_jsonl(root / "gsm_test.jsonl", list(corpus.math_problems("heldout", 6)))
    gsm_train = write_jsonl(root / "gsm_train.jsonl", list(corpus.math_problems("train", 10)))
    arc = write_jsonl(root / "arc.jsonl", arc_records(10))
    stories = list(corpus.stories("heldout", 6))
    text = write_jsonl(root / "text.jsonl", [{"text": t} for t in [" ".join(stories[:3]), *stories[3:]]])
    folder = root / "tasks"
    task_yaml(folder, "gsm8k_local", include="gsm8k/gsm8k.yaml", fewshot_config={"sampler": "first_n"},
              num_fewshot=3, **local_dataset(train=gsm_train, test=gsm_test))
    task_yaml(folder, "arc_local", include="arc/arc_easy.yaml", **local_dataset(train=arc, validation=arc, test=arc))
    task_yaml(folder, "text_local", output_type="loglikelihood_rolling", test_split="test", doc_to_text="",
              doc_to_target="{{text}}", **local_dataset(test=text),
              metric_list=[{"metric": m, "aggregation": a, "higher_is_better": False} for m, a in
                           (("word_perplexity", "weighted_perplexity"), ("byte_perplexity", "weighted_perplexity"),
                            ("bits_per_byte", "bits_per_byte"))])
    return folder


def both(trained, tasks, task: str) -> tuple[dict, dict]:
    ours = lm_eval_run("scratchlm", {"run": str(trained.run)}, tasks, task)
    theirs = lm_eval_run("hf", hf_args(trained), tasks, task)
    return ours, theirs


def by_doc(result: dict, task: str, filter_name: str = "none") -> list[dict]:
    return sorted((s for s in result["samples"][task] if s["filter"] == filter_name), key=lambda s: s["doc_id"])


def test_the_model_is_in_lm_eval_s_registry():
    from lm_eval.api.registry import get_model

    from scratchlm.eval.harness import ScratchLM

    assert get_model("scratchlm") is ScratchLM


def test_chat_template_is_the_export_s(trained):
    """--apply_chat_template renders as the export's template renders in transformers."""
    transformers = pytest.importorskip("transformers")
    from scratchlm.eval.harness import ScratchLM

    messages = [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "5"},
                {"role": "user", "content": "And 4 + 4?"}]
    expected = transformers.AutoTokenizer.from_pretrained(trained.hf).apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True)
    assert ScratchLM(run=str(trained.run), device="cpu").apply_chat_template(messages) == expected


@pytest.mark.slow
def test_generate_until_as_hf(trained, tasks):
    ours, theirs = both(trained, tasks, "gsm8k_local")
    for name in ("strict-match", "flexible-extract"):
        assert ours["results"]["gsm8k_local"][f"exact_match,{name}"] == \
            theirs["results"]["gsm8k_local"][f"exact_match,{name}"]
        assert [s["resps"] for s in by_doc(ours, "gsm8k_local", name)] == \
            [s["resps"] for s in by_doc(theirs, "gsm8k_local", name)]
        assert [s["filtered_resps"] for s in by_doc(ours, "gsm8k_local", name)] == \
            [s["filtered_resps"] for s in by_doc(theirs, "gsm8k_local", name)]


@pytest.mark.slow
def test_loglikelihood_as_hf(trained, tasks):
    ours, theirs = both(trained, tasks, "arc_local")
    for metric in ("acc", "acc_norm"):
        assert ours["results"]["arc_local"][f"{metric},none"] == theirs["results"]["arc_local"][f"{metric},none"]
    for mine, other in zip(by_doc(ours, "arc_local"), by_doc(theirs, "arc_local"), strict=True):
        for choice, their_choice in zip(mine["resps"], other["resps"], strict=True):  # [(log-likelihood, greedy)]
            assert choice[0][0] == pytest.approx(their_choice[0][0], abs=TOL)
            assert choice[0][1] == their_choice[0][1]


@pytest.mark.slow
def test_loglikelihood_rolling_as_hf(trained, tasks):
    ours, theirs = both(trained, tasks, "text_local")
    for mine, other in zip(by_doc(ours, "text_local"), by_doc(theirs, "text_local"), strict=True):
        assert mine["resps"][0][0] == pytest.approx(other["resps"][0][0], rel=1e-7)  # sums of fp32 log-probs
    for metric in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
        assert ours["results"]["text_local"][f"{metric},none"] == \
            pytest.approx(theirs["results"]["text_local"][f"{metric},none"], rel=1e-6)


@pytest.mark.slow
def test_lm_eval_command_line_with_the_model_registered(trained, tasks, tmp_path):
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "scratchlm.eval", "--model", "scratchlm", "--model_args",
                           f"run={trained.run}", "--include_path", str(tasks), "--tasks", "arc_local", "--limit", "4",
                           "--output_path", str(out)], capture_output=True, text=True, timeout=600,
                          env={"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin",
                               "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(next(out.rglob("results_*.json")).read_text())
    assert results["results"]["arc_local"]["acc,none"] >= 0 and results["n-samples"]["arc_local"]["effective"] == 4
