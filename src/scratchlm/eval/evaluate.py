"""`scratchlm eval RUN_DIR --tasks ...`: run tasks on a run's latest weights and write what they found.

    RUN_DIR/eval/<task>.json           {"task", "n", "metrics" (each with its _stderr), "settings",
                                        "data_fingerprint", "checkpoint", "samples_file"}
    RUN_DIR/eval/<task>_samples.jsonl  one record per question or document: prompt, output, extracted
                                       answer, gold, correct (or log-likelihoods, for multiple choice)
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from scratchlm import atomic
from scratchlm.errors import ScratchError
from scratchlm.eval import bpb, gsm8k, multiple_choice
from scratchlm.eval.lineage import has_sft
from scratchlm.eval.runner import Runner
from scratchlm.eval.task import EvalOptions, TaskResult

TASKS: dict[str, Callable[[Runner, EvalOptions], TaskResult]] = {
    "gsm8k": gsm8k.run,
    "story_questions": partial(multiple_choice.run, "story_questions"),
    **{name: partial(multiple_choice.run, name) for name in multiple_choice.FORMATS},
    "bpb": bpb.run,
}
EVAL_DIR = "eval"


def check_tasks(names: list[str], where: str = "") -> list[str]:
    """The names without repeats, or one line naming the first unknown one and the known ones."""
    unknown = [t for t in names if t not in TASKS]
    if unknown:
        prefix = f"{where}: " if where else ""
        raise ScratchError(f"{prefix}unknown task '{unknown[0]}'; known tasks: {', '.join(TASKS)}")
    return list(dict.fromkeys(names))


def parse_tasks(text: str) -> list[str]:
    """--tasks gsm8k,bpb -> ["gsm8k", "bpb"]."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise ScratchError(f"unknown task '{text}'; known tasks: {', '.join(TASKS)}")
    return check_tasks(names)


def check_options(tasks: list[str], options: EvalOptions) -> None:
    if len(tasks) > 1 and options.data:
        raise ScratchError("--data names one task's data; evaluate one task at a time with --data")
    options.check()


def decide_chat(run_dir: Path, options: EvalOptions) -> EvalOptions:
    """options.chat, when the caller leaves it None, decided by the run's lineage: chat when it holds an SFT stage.
    `scratchlm eval` and the scores logged during training decide alike."""
    if options.chat is not None:
        return options
    return dataclasses.replace(options, chat=has_sft(run_dir))


def scores_line(result: TaskResult) -> str:
    """gsm8k (n=500): strict_match 0.1234 ± 0.0147, flexible_extract ..."""
    m = result.metrics
    scores = ", ".join(f"{k} {v:.4f}" + ("" if m.get(f"{k}_stderr") is None else f" ± {m[f'{k}_stderr']:.4f}")
                       for k, v in m.items() if not k.endswith("_stderr"))
    return f"{result.task} (n={len(result.samples)}): {scores}"


def write_result(run_dir: Path, result: TaskResult, checkpoint: str) -> Path:
    out = run_dir / EVAL_DIR
    out.mkdir(exist_ok=True)
    samples_file = out / f"{result.task}_samples.jsonl"
    atomic.write_text(samples_file, "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in result.samples))
    summary = {"task": result.task, "n": len(result.samples), "metrics": result.metrics,
               "settings": result.settings, "data_fingerprint": result.fingerprint, "checkpoint": checkpoint,
               "samples_file": samples_file.name, "warnings": result.warnings}
    path = out / f"{result.task}.json"
    atomic.write_text(path, json.dumps(summary, indent=2) + "\n")
    return path


def evaluate(run_dir: str | Path, tasks: list[str], options: EvalOptions, device: str = "auto",
             batch_size: int = 16, on_result: Callable[[TaskResult, Path], Any] | None = None
             ) -> list[TaskResult]:
    """Run each task in turn on the run's latest weights, writing its files as soon as it is done."""
    run_dir = Path(run_dir)
    check_options(tasks, options)
    runner = Runner.from_run(run_dir, device, batch_size)
    options = decide_chat(run_dir, options)
    results = []
    for name in tasks:
        result = TASKS[name](runner, options)
        path = write_result(run_dir, result, runner.checkpoint)
        if on_result is not None:
            on_result(result, path)
        results.append(result)
    return results
