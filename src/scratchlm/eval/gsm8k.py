"""GSM8K: grade-school math word problems, answered by generation and scored as lm-evaluation-harness's
`gsm8k` task scores them (scratchlm.eval.scorer: strict-match and flexible-extract).

A base model gets k-shot prompts in lm-eval's format, k = 5 by default:

    Question: <shot question>\\nAnswer: <shot solution>\\n\\n   (k times)
    Question: <question>\\nAnswer:

A chat model (--chat) gets the bare question as the user's message through the run's chat format,
zero-shot (with --fewshot K, K earlier user/assistant exchanges come first).

Data: held-out embedded math by default (its solutions end in "#### <number>", as GSM8K's do), a local
.jsonl / .parquet with question and answer fields, or hf:openai/gsm8k:main (split test). Shots: the
embedded train problems by default, or --fewshot-data (a hub dataset's train split); the first k
(lm-eval's first_n sampler) or --fewshot-sampler random, lm-eval's draw (random.Random(1234) sampling k
per question, in order), which its stock gsm8k task uses.

Generation is greedy, stops at lm-eval's gsm8k stop strings ("Question:", "</s>", "<|im_end|>") or
the end of the document, and takes at most 256 new tokens. A prompt longer than the context minus
that budget is cut from the left, as lm-eval cuts it, with a warning.

With --tools calculator the engine computes each "<<expression=" the model writes and feeds "result>>"
(scratchlm.infer.tools); the fed text is part of the completion that is scored.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Any

from scratchlm.data import corpus
from scratchlm.errors import ScratchError
from scratchlm.eval import data, scorer
from scratchlm.eval.runner import Runner
from scratchlm.eval.task import EvalOptions, TaskResult

FIELDS = ("question", "answer")
EMBEDDED = "embedded"
EMBEDDED_QUESTIONS = 500  # held-out problems evaluated when no --limit is given
EMBEDDED_FEWSHOT_POOL = 1000  # train problems the random sampler draws shots from
STOP = ("Question:", "</s>", "<|im_end|>")
MAX_NEW_TOKENS = 256  # lm-eval's max_gen_toks
BASE_SHOTS = 5


def read_problems(source: str, split: str, n: int | None) -> list[dict[str, Any]]:
    """The first n problems (question, answer) of a split: embedded (test: the held-out math, else train), a
    file, or a hub dataset's split. RL trains on the train problems (scratchlm.posttrain.rollout)."""
    if source == EMBEDDED:
        embedded_split = "heldout" if split == "test" else "train"
        return list(corpus.math_problems(embedded_split, n if n is not None else EMBEDDED_QUESTIONS))
    return data.read_records(source, FIELDS, split, n)


def shot_text(problem: dict[str, Any]) -> str:
    return f"Question: {problem['question']}\nAnswer: {problem['answer']}\n\n"


def prompt_text(shots: Iterable[dict[str, Any]], problem: dict[str, Any]) -> str:
    """lm-eval's k-shot gsm8k prompt: solved examples, then the question and 'Answer:'."""
    return "".join(shot_text(s) for s in shots) + f"Question: {problem['question']}\nAnswer:"


def chat_messages(shots: Iterable[dict[str, Any]], problem: dict[str, Any]) -> list[dict[str, str]]:
    messages = []
    for shot in shots:
        messages += [{"role": "user", "content": shot["question"]}, {"role": "assistant", "content": shot["answer"]}]
    return [*messages, {"role": "user", "content": problem["question"]}]


def choose_shots(pool: Sequence[dict[str, Any]], k: int, n_questions: int, sampler: str, seed: int
                 ) -> list[list[dict[str, Any]]]:
    """The shots of each question in turn: the first k of the pool for every one (first_n), or k drawn
    without replacement per question from one random.Random(seed), as lm-eval's default sampler draws."""
    if k > len(pool):
        raise ScratchError(f"--fewshot {k} asks for more examples than the few-shot data holds ({len(pool)}); "
                           "lower --fewshot or give a larger --fewshot-data")
    if sampler == "first_n":
        return [list(pool[:k])] * n_questions
    rng = random.Random(seed)
    return [rng.sample(list(pool), k) if k else [] for _ in range(n_questions)]


def run(runner: Runner, options: EvalOptions) -> TaskResult:
    source = options.data or EMBEDDED
    problems = read_problems(source, "test", options.limit)
    data_desc = source if source == EMBEDDED else data.describe(source, "test")
    k = options.fewshot if options.fewshot is not None else (0 if options.chat else BASE_SHOTS)
    pool, fewshot_desc = _fewshot_pool(options, source, data_desc) if k else ([], None)
    shots = choose_shots(pool, k, len(problems), options.fewshot_sampler, options.fewshot_seed)
    max_new = options.max_new_tokens or min(MAX_NEW_TOKENS, runner.context_len // 2)

    prompts, stop_ids = _prompts(runner, options.chat, shots, problems, options.tools)
    fitted = [runner.fit_prompt(p, max_new) for p in prompts]
    prompts = [ids for ids, _ in fitted]
    n_cut = sum(cut for _, cut in fitted)
    stops = [*STOP, runner.tokenizer.decode([runner.tokenizer.eos_id])]  # lm-eval's hf adds the eos text too

    # Each question's samples in turn, seeded apart, so a question's completions do not depend on the batch.
    repeated = [p for p in prompts for _ in range(options.samples)]
    seeds = [options.seed * 1_000_003 + i for i in range(len(repeated))] if options.temperature > 0 else None
    outputs = runner.generate(repeated, max_new, stops, options.temperature, seeds, stop_ids, desc="gsm8k",
                              tools=options.tools)
    completions = [outputs[i * options.samples:(i + 1) * options.samples] for i in range(len(problems))]
    samples = [_score(problem, outs, runner.tokenizer.decode(ids))
               for problem, outs, ids in zip(problems, completions, prompts, strict=True)]

    settings = {
        "data": data_desc, "fewshot": k, "fewshot_data": fewshot_desc,
        "fewshot_sampler": options.fewshot_sampler if k else None,
        "fewshot_seed": options.fewshot_seed if k and options.fewshot_sampler == "random" else None,
        "chat": options.chat, "max_new_tokens": max_new, "stop": stops, "temperature": options.temperature,
        "samples": options.samples, "prompts_cut": n_cut, "tools": list(options.tools),
    }
    warnings = []
    if n_cut:
        warnings.append(f"gsm8k: {n_cut} of {len(prompts)} prompts were cut from the left to fit the context of "
                        f"{runner.context_len} tokens with {max_new} new tokens; lower --fewshot or --max-new-tokens")
    shots_seen = pool[:k] if options.fewshot_sampler == "first_n" else pool
    return TaskResult("gsm8k", metrics(samples, options.samples), settings, data.fingerprint(problems, shots_seen),
                      samples, warnings)


def _fewshot_pool(options: EvalOptions, source: str, data_desc: str) -> tuple[list[dict[str, Any]], str]:
    """The problems shots are drawn from, and where they come from: --fewshot-data, else a hub dataset's own
    train split, else the embedded train problems."""
    fewshot_source = options.fewshot_data or (data.with_split(source, "train") if source.startswith("hf:")
                                              else EMBEDDED)
    if fewshot_source == EMBEDDED:
        return read_problems(EMBEDDED, "train", EMBEDDED_FEWSHOT_POOL), EMBEDDED
    fewshot_desc = data.describe(fewshot_source, "train")
    if fewshot_desc == data_desc:
        raise ScratchError("the few-shot examples would come from the evaluated data itself; give another "
                           "--fewshot-data (GSM8K's train split)")
    return read_problems(fewshot_source, "train", None), fewshot_desc


def _prompts(runner: Runner, chat: bool, shots: list[list[dict[str, Any]]], problems: list[dict[str, Any]],
             tools: Sequence[str] = ()) -> tuple[list[list[int]], frozenset[int]]:
    """Each question's prompt ids (in chat, shots encoded as generation with the tools writes them), and the
    tokens that end a completion."""
    if not chat:
        return ([runner.tokenizer.encode(prompt_text(s, p), bos=True) for s, p in zip(shots, problems, strict=True)],
                runner.stop_ids)
    fmt = runner.chat()
    return ([fmt.prompt_ids(chat_messages(s, p), tools) for s, p in zip(shots, problems, strict=True)],
            runner.stop_ids | fmt.stop_ids)


def _score(problem: dict[str, Any], completions: list[str], prompt: str) -> dict[str, Any]:
    """One question's record: the first completion's extracted answers (lm-eval's take_first), and how
    many of all completions each filter gets right."""
    strict = [scorer.strict_match(c) for c in completions]
    flexible = [scorer.flexible_extract(c) for c in completions]
    gold = problem["answer"]
    record = {
        "question": problem["question"], "prompt": prompt, "completion": completions[0],
        "strict_match": strict[0], "flexible_extract": flexible[0], "gold": scorer.normalize(gold),
        "strict_correct": scorer.exact_match(strict[0], gold),
        "flexible_correct": scorer.exact_match(flexible[0], gold),
    }
    if len(completions) > 1:
        record["completions"] = completions
        record["strict_correct_count"] = sum(scorer.exact_match(x, gold) for x in strict)
        record["flexible_correct_count"] = sum(scorer.exact_match(x, gold) for x in flexible)
    return record


def metrics(samples: list[dict[str, Any]], n_samples: int) -> dict[str, float | None]:
    """strict_match and flexible_extract (of the first completion) with their standard errors, and with
    several samples per question pass@1 and pass@n, each the mean of per-question unbiased estimates."""
    out: dict[str, float | None] = {}
    for name in ("strict", "flexible"):
        key = "strict_match" if name == "strict" else "flexible_extract"
        correct = [float(s[f"{name}_correct"]) for s in samples]
        out[key], out[f"{key}_stderr"] = scorer.mean(correct), scorer.mean_stderr(correct)
        if n_samples > 1:
            for k in sorted({1, n_samples}):
                estimates = [scorer.pass_at_k(n_samples, s[f"{name}_correct_count"], k) for s in samples]
                out[f"{key}_pass@{k}"], out[f"{key}_pass@{k}_stderr"] = (scorer.mean(estimates),
                                                                         scorer.mean_stderr(estimates))
    return out
