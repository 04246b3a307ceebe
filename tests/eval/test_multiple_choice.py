"""Multiple choice: the embedded story task is well formed, and on ARC, HellaSwag and MMLU files
`scratchlm eval` gives the acc and acc_norm that lm-eval's own arc, hellaswag and mmlu tasks give the
export with its `hf` model, from log-likelihoods within 1e-4."""

from __future__ import annotations

import json
from itertools import islice

import pytest
from trained_run import arc_records, hf_args, lm_eval_run, local_dataset, task_yaml, trained_run, write_jsonl

from scratchlm.data import corpus
from scratchlm.data.corpus.stories import story_stream
from scratchlm.errors import ScratchError
from scratchlm.eval import multiple_choice
from scratchlm.eval.evaluate import evaluate
from scratchlm.eval.task import EvalOptions
from scratchlm.run import load_tokenizer

from conftest import run_cli

transformers = pytest.importorskip("transformers")
pytest.importorskip("lm_eval")

TOL = 1e-4


def test_story_questions_ask_about_the_story_s_facts():
    questions = multiple_choice.story_questions(40)
    stories = list(islice(story_stream("heldout", 0), 40))
    assert len(questions) == 40
    for i, (q, story) in enumerate(zip(questions, stories, strict=True)):
        assert q.context.startswith(story.text + "\n\nQuestion: ") and q.context.endswith("\nAnswer:")
        assert q.choices[q.gold] == (story.name, story.place, story.event, story.friend)[i % 4]
        assert len(set(q.choices)) == 4
        assert not any(c in story.text for j, c in enumerate(q.choices) if j != q.gold)
        if i % 4 == 2:  # what happened: every choice starts with the hero's pronoun
            assert len({c.split()[0] for c in q.choices}) == 1
    assert len({q.gold for q in questions}) > 1  # the answer is not always in one place
    assert multiple_choice.story_questions(5) == questions[:5]  # fixed, and nested


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return trained_run(tmp_path_factory.getbasetemp() / "eval-trained")


@pytest.mark.parametrize(("context", "continuation"), [("Question: who?\nAnswer:", " Mia"),
                                                         ("The end ", "of it"), ("a\n\n", " b c")])
def test_pairs_split_as_lm_eval_splits_them(trained, context, continuation):
    """Context and continuation ids as lm-eval's TemplateLM gets them from the exported tokenizer."""
    from lm_eval.api.model import TemplateLM

    hf_tok = transformers.AutoTokenizer.from_pretrained(trained.hf)

    class Exported(TemplateLM):  # the pair encoding of lm-eval's causal models, on the exported tokenizer
        eot_token_id = hf_tok.eos_token_id

        def tok_encode(self, string, add_special_tokens=None, **kwargs):
            return hf_tok(string).input_ids

        _loglikelihood_tokens = loglikelihood_rolling = generate_until = None

    assert multiple_choice.encode_pair(load_tokenizer(trained.run), context, continuation) == \
        Exported()._encode_pair(context, continuation)


def hellaswag_records(n: int) -> list[dict]:
    """Stories cut into a context (two halves, as HellaSwag's ctx_a and ctx_b) and four endings: the story's
    own and three others'; some carry WikiHow's [title] and [step] marks, which preprocessing removes."""
    stories = list(corpus.stories("heldout", n + 3))
    records = []
    for i in range(n):
        words = stories[i].split()[:40]
        endings = [" ".join(s.split()[40:52]) for s in stories[i:i + 4]]
        order = [(i + j) % 4 for j in range(4)]
        records.append({"ind": i, "activity_label": "Story time" + (" [title]" if i % 3 == 0 else ""),
                        "ctx_a": " ".join(words[:25]), "ctx_b": " ".join(words[25:]) + (" [step]" if i % 2 else ""),
                        "endings": [endings[o] for o in order], "label": str(order.index(0)), "split": "val"})
    return records


def mmlu_records(n: int) -> list[dict]:
    return [{"question": q.context[-250:], "subject": "high_school_biology",
             "choices": q.choices, "answer": q.gold} for q in multiple_choice.story_questions(n)]


FORMATS = {
    # task: (records, lm-eval task file to include, the splits it reads, extra YAML fields)
    "arc": (arc_records, "arc/arc_easy.yaml", ("train", "validation", "test"), {}),
    "hellaswag": (hellaswag_records, "hellaswag/hellaswag.yaml", ("train", "validation"), {}),
    "mmlu": (mmlu_records, "mmlu/default/_default_template_yaml", ("test", "dev"),
             {"description": "The following are multiple choice questions (with answers) about high school "
                             "biology.\n\n"}),
}


@pytest.mark.slow
@pytest.mark.parametrize("task", list(FORMATS))
def test_file_formats_score_as_lm_eval(task, trained, tmp_path):
    make, include, splits, extra = FORMATS[task]
    records = make(12)
    test = write_jsonl(tmp_path / f"{task}.jsonl", records)
    run_cli("eval", str(trained.run), "--tasks", task, "--data", str(test))
    ours = json.loads((trained.run / "eval" / f"{task}.json").read_text())
    samples = [json.loads(line) for line in (trained.run / "eval" / f"{task}_samples.jsonl").open()]

    task_yaml(tmp_path / "tasks", f"{task}_local", include=include, **local_dataset(**dict.fromkeys(splits, test)),
              **extra)
    theirs = lm_eval_run("hf", hf_args(trained), tmp_path / "tasks", f"{task}_local")
    results = theirs["results"][f"{task}_local"]
    metrics = ["acc", "acc_norm"] if task != "mmlu" else ["acc"]  # lm-eval's mmlu reports acc alone
    for metric in metrics:
        assert ours["metrics"][metric] == pytest.approx(results[f"{metric},none"], abs=1e-12)
        assert ours["metrics"][f"{metric}_stderr"] == pytest.approx(results[f"{metric}_stderr,none"], abs=1e-12)
    logged = sorted(theirs["samples"][f"{task}_local"], key=lambda s: s["doc_id"])
    theirs_lp = [[r[0][0] for r in s["resps"]] for s in logged]
    for mine, other in zip([s["logprobs"] for s in samples], theirs_lp, strict=True):
        assert mine == pytest.approx(other, abs=TOL)
    assert [s["context"] for s in samples] == [s["arguments"][0][0] for s in logged]


def test_story_questions_runs_and_refuses_a_data_file(trained, tmp_path):
    result = evaluate(trained.run, ["story_questions"], EvalOptions(limit=8))[0]
    assert len(result.samples) == 8 and 0 <= result.metrics["acc"] <= 1
    assert result.metrics["acc_stderr"] is not None
    with pytest.raises(ScratchError, match="reads no --data"):
        evaluate(trained.run, ["story_questions"], EvalOptions(data=str(tmp_path / "x.jsonl")))


def test_a_record_without_a_field_is_named(trained, tmp_path):
    bad = write_jsonl(tmp_path / "arc.jsonl", [{"question": "q", "choices": {"text": ["a"], "label": ["A"]}}])
    proc = run_cli("eval", str(trained.run), "--tasks", "arc", "--data", str(bad), check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == \
        f"error: {bad} record 1 has no field 'answerKey'; this task reads question, choices, answerKey"
