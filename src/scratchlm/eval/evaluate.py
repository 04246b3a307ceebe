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


def parse_tasks(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in names if t not in TASKS]
    if unknown or not names:
        raise ScratchError(f"unknown task '{unknown[0] if unknown else text}'; known tasks: {', '.join(TASKS)}")
    return list(dict.fromkeys(names))


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
    """Run each task in turn on the run's latest weights, writing its files as soon as it is done.

    options.chat is decided here when the caller leaves it None: chat when the run's lineage holds an SFT stage.
    """
    run_dir = Path(run_dir)
    if len(tasks) > 1 and options.data:
        raise ScratchError("--data names one task's data; evaluate one task at a time with --data")
    options.check()
    runner = Runner(run_dir, device, batch_size)
    if options.chat is None:
        options = dataclasses.replace(options, chat=has_sft(run_dir))
    results = []
    for name in tasks:
        result = TASKS[name](runner, options)
        path = write_result(run_dir, result, runner.checkpoint)
        if on_result is not None:
            on_result(result, path)
        results.append(result)
    return results
