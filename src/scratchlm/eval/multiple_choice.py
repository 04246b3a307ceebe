"""Multiple choice by log-likelihood, scored as lm-evaluation-harness's `acc` and `acc_norm`.

A question is a context and its choices. The model scores each choice as the continuation
" <choice>" of the context (lm-eval's target delimiter); `acc` takes the most likely choice, `acc_norm`
the most likely per character of the choice (scratchlm.eval.scorer.multiple_choice). Context and
continuation are tokenized as lm-eval tokenizes them: the context's trailing whitespace moves into the
continuation, and the continuation's tokens are those that context + continuation adds to the
context's own (both with bos, as the run's exported tokenizer adds it).

Tasks:
    story_questions   embedded: a held-out story, then a question about it: who it is about, where the hero
                      lives, what happened, or who the friend is; the wrong choices are those facts of other
                      stories
    arc               question, choices {text, label}, answerKey; "Question: ...\\nAnswer:" (lm-eval's arc_*)
    hellaswag         activity_label, ctx_a, ctx_b, endings, label; lm-eval's hellaswag preprocessing
    mmlu              question, choices (four), answer (index), subject (optional); lm-eval's mmlu prompt
                      with letters A-D as the choices
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from typing import Any

from scratchlm.data.corpus import Story
from scratchlm.data.corpus.stories import story_stream
from scratchlm.errors import ScratchError
from scratchlm.eval import data, scorer
from scratchlm.eval.runner import Runner
from scratchlm.eval.task import EvalOptions, TaskResult
from scratchlm.tokenizer import BPETokenizer

DELIMITER = " "  # lm-eval's target_delimiter


@dataclass
class Question:
    context: str
    choices: list[str]
    gold: int


def encode_pair(tokenizer: BPETokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of context and continuation as lm-eval's causal models split them."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer.encode(context + continuation, bos=True)
    context_ids = tokenizer.encode(context, bos=True)
    return context_ids, whole[len(context_ids):]


# ------------------------------------------------------------------------------------------- the embedded task

EMBEDDED_STORIES = 500
DISTRACTOR_STORIES = 2000  # held-out stories whose facts serve as wrong choices


def _story_question(story: Story, kind: int, others: list[Story], rng: random.Random) -> Question:
    """Who the story is about, where the hero lives, what happened, or who the friend is (kind 0 to 3). The wrong
    choices are the same fact of other stories, never one this story mentions (or, for what happened, one of
    another hero of the same pronoun, so the pronoun gives nothing away)."""
    if kind == 0:
        question, answer, pool = "Who is this story about?", story.name, {o.name for o in others}
    elif kind == 1:
        question, answer, pool = f"Where does {story.name} live?", story.place, {o.place for o in others}
    elif kind == 2:
        pronoun = story.event.split()[0]
        question, answer = "What happened in the story?", story.event
        pool = {o.event for o in others if o.event.split()[0] == pronoun}
    else:
        question, answer, pool = f"Who is {story.name}'s friend?", story.friend, {o.friend for o in others}
    wrong = rng.sample(sorted(c for c in pool if c != answer and c not in story.text), 3)
    choices = [answer, *wrong]
    rng.shuffle(choices)
    return Question(f"{story.text}\n\nQuestion: {question}\nAnswer:", choices, choices.index(answer))


def story_questions(n: int) -> list[Question]:
    """n questions about the first n held-out stories, one each, their kinds in turn (who, where, what
    happened, who is the friend); the choice order is shuffled with a fixed seed per story."""
    others = list(islice(story_stream("heldout", 0), DISTRACTOR_STORIES))
    return [_story_question(story, i % 4, others, random.Random(i))
            for i, story in enumerate(islice(story_stream("heldout", 0), n))]


# ------------------------------------------------------------------------------------------- file formats


def _arc(record: dict[str, Any]) -> Question:
    choices = record["choices"]
    if not isinstance(choices, dict) or "text" not in choices or "label" not in choices:
        raise ScratchError("an arc record's choices must be {\"text\": [...], \"label\": [...]}, as in ai2_arc")
    if record["answerKey"] not in choices["label"]:
        raise ScratchError(f"arc answerKey '{record['answerKey']}' is not one of the labels {choices['label']}")
    return Question(f"Question: {record['question']}\nAnswer:", list(choices["text"]),
                    list(choices["label"]).index(record["answerKey"]))


def _hellaswag_clean(text: str) -> str:
    """HellaSwag's WikiHow artefacts out, as lm-eval's hellaswag task cleans them."""
    text = text.strip().replace(" [title]", ". ")
    return re.sub(r"\[.*?\]", "", text).replace("  ", " ")


def _hellaswag(record: dict[str, Any]) -> Question:
    context = f"{record['ctx_a']} {record['ctx_b'].capitalize()}"
    return Question(_hellaswag_clean(f"{record['activity_label']}: {context}"),
                    [_hellaswag_clean(e) for e in record["endings"]], int(record["label"]))


def _mmlu(record: dict[str, Any]) -> Question:
    choices = record["choices"]
    if len(choices) != 4:
        raise ScratchError(f"an mmlu record has 4 choices, this one {len(choices)}")
    subject = record.get("subject")
    about = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n" \
        if subject else ""
    lines = [record["question"].strip(), *(f"{letter}. {c}" for letter, c in zip("ABCD", choices, strict=True))]
    return Question(about + "\n".join(lines) + "\nAnswer:", list("ABCD"), int(record["answer"]))


@dataclass
class Format:
    fields: tuple[str, ...]
    question: Callable[[dict[str, Any]], Question]
    default_source: str  # the hub dataset lm-eval's task reads


FORMATS = {
    "arc": Format(("question", "choices", "answerKey"), _arc, "hf:allenai/ai2_arc:ARC-Easy:test"),
    "hellaswag": Format(("activity_label", "ctx_a", "ctx_b", "endings", "label"), _hellaswag,
                        "hf:Rowan/hellaswag::validation"),
    "mmlu": Format(("question", "choices", "answer"), _mmlu, "hf:cais/mmlu:all:test"),
}


def _questions(task: str, options: EvalOptions) -> tuple[list[Question], str]:
    if task == "story_questions":
        if options.data:
            raise ScratchError("story_questions is built from the embedded corpus and reads no --data; "
                               "use --tasks arc, hellaswag or mmlu for a file")
        return story_questions(options.limit or EMBEDDED_STORIES), "embedded"
    fmt = FORMATS[task]
    source = options.data or fmt.default_source
    records = data.read_records(source, fmt.fields, "test", options.limit)
    questions = [fmt.question(r) for r in records]
    for number, q in enumerate(questions, 1):
        if not 0 <= q.gold < len(q.choices) or not all(q.choices):
            raise ScratchError(f"{source} record {number}: the answer must index one of its choices, and no "
                               "choice may be empty")
    return questions, data.describe(source, "test")


def run(task: str, runner: Runner, options: EvalOptions) -> TaskResult:
    questions, source = _questions(task, options)
    requests = [encode_pair(runner.tokenizer, q.context, DELIMITER + c) for q in questions for c in q.choices]
    logprobs = iter(runner.loglikelihoods(requests, desc=task))
    samples = []
    for q in questions:
        lps = [next(logprobs)[0] for _ in q.choices]
        pred, pred_norm = scorer.multiple_choice(lps, q.choices)
        samples.append({"context": q.context, "choices": q.choices, "gold": q.gold, "logprobs": lps,
                        "pred": pred, "pred_norm": pred_norm, "acc": pred == q.gold, "acc_norm": pred_norm == q.gold})
    metrics: dict[str, float | None] = {}
    for key in ("acc", "acc_norm"):
        values = [float(s[key]) for s in samples]
        metrics[key], metrics[f"{key}_stderr"] = scorer.mean(values), scorer.mean_stderr(values)
    fingerprint = data.fingerprint([[q.context, q.choices, q.gold] for q in questions])
    return TaskResult(task, metrics, {"data": source, "choices_per_question": max(len(q.choices) for q in questions)},
                      fingerprint, samples)
