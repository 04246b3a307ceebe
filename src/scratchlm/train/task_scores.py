"""Task scores during training (train.eval_tasks): at each validation, tasks of `scratchlm eval` run on the
weights being trained, and their scores join that step's record in metrics.jsonl and TensorBoard:

    eval/gsm8k/strict_match, eval/gsm8k/strict_match_stderr, eval/gsm8k/flexible_extract, ...

The same runner and tasks as `scratchlm eval` (scratchlm.eval.runner, scratchlm.eval.evaluate.TASKS) with
its defaults, on the first train.eval_limit records: the score logged at a step is the one `scratchlm eval
RUN_DIR --limit N` gives on the checkpoint saved at that step. A base run is asked few-shot, a run whose
lineage holds an SFT stage in its chat format, as `scratchlm eval` decides.

The tasks run on a copy of the weights in a plain Transformer, in the default dtype and outside autocast, as
a checkpoint loads for `scratchlm eval`. Under torchrun every rank takes part in gathering the full weights
(the copy is built on rank 0 alone), rank 0 evaluates and the others wait for it. The trained model is
never touched and the RNG states are restored afterwards, so a run with eval_tasks trains and resumes
exactly as one without. Pipeline parallel is refused up front (scratchlm.parallel.world.check_dims): a
stage holds only its own layers.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from scratchlm.chat import find_chat_format
from scratchlm.config import Config
from scratchlm.eval.evaluate import TASKS, check_tasks, decide_chat, scores_line
from scratchlm.eval.runner import Runner
from scratchlm.eval.task import EvalOptions
from scratchlm.parallel.world import World
from scratchlm.run import inference_model
from scratchlm.tokenizer import BPETokenizer
from scratchlm.train.checkpoint import model_state

Scores = dict[str, float | None]


class TaskScores:
    """What the trainer calls at each validation: cfg.train.eval_tasks on the model's current weights."""

    def __init__(self, cfg: Config, run_dir: Path, tokenizer: BPETokenizer, world: World) -> None:
        self.cfg, self.tokenizer, self.world = cfg, tokenizer, world
        self.tasks = check_tasks(cfg.train.eval_tasks, "train.eval_tasks")
        self.options = EvalOptions(limit=cfg.train.eval_limit or None)
        self.chat_format = None
        if world.is_main:  # only rank 0 evaluates; the run directory's config.yaml gives the lineage
            self.options = decide_chat(run_dir, self.options)
            self.chat_format = find_chat_format(run_dir, tokenizer)
        self.warned: set[str] = set()

    def __call__(self, model: nn.Module, step: int) -> Scores:
        """Every rank calls it; rank 0 gets {"eval/<task>/<metric>": score, ...}, the others {}."""
        state = model_state(model)  # under torchrun a collective, whose full tensors land on rank 0 only
        scores: Scores = {}
        if self.world.is_main:
            scores = self._score(state, step)
        self.world.barrier()
        return scores

    def _score(self, state: dict[str, torch.Tensor], step: int) -> Scores:
        device = self.world.device
        # A task may draw random numbers (sampled completions); the training stream must not see them.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            copy = inference_model(self.cfg.model, device, "a copy of the model for train.eval_tasks",
                                   "leave train.eval_tasks empty and score the checkpoints with scratchlm eval")
            copy.load_state_dict(state)
            runner = Runner(copy, self.tokenizer, self.chat_format)
            scores: Scores = {}
            for task in self.tasks:
                result = TASKS[task](runner, self.options)
                for warning in result.warnings:
                    if warning not in self.warned:  # the same few prompts are cut at every evaluation
                        self.warned.add(warning)
                        tqdm.write(f"warning: {warning}")
                tqdm.write(f"step {step}: {scores_line(result)}")
                scores.update({f"eval/{task}/{metric}": value for metric, value in result.metrics.items()})
        return scores
