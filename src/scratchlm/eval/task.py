"""What every task takes (EvalOptions) and gives back (TaskResult).

A task knows its data and its prompt format; it asks the runner for completions or log-likelihoods
and the scorer for scores. scratchlm.eval.evaluate writes what it gives back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from scratchlm.errors import ScratchError
from scratchlm.infer.tools import parse_tools

SAMPLERS = ("first_n", "random")


@dataclass
class EvalOptions:
    """The options of `scratchlm eval`; a task reads those that concern it (see docs/eval.md)."""

    data: str | None = None  # a file or hf:NAME; None: the task's embedded or default data
    limit: int | None = None  # evaluate the first N records
    fewshot: int | None = None  # gsm8k shots; None: 5 for a base model, 0 in chat
    fewshot_data: str | None = None
    fewshot_sampler: str = "first_n"  # first_n: the first k of the few-shot data; random: lm-eval's seeded draw
    fewshot_seed: int = 1234  # lm-eval's fewshot_random_seed
    max_new_tokens: int | None = None  # None: 256 (lm-eval's), or half the context when that is smaller
    chat: bool | None = None  # None: evaluate decides, chat when the run's lineage holds an SFT stage
    samples: int = 1  # completions per question; pass@k over them
    temperature: float = 0.0
    seed: int = 0  # of the sampled completions
    tools: tuple[str, ...] = ()  # gsm8k: tools the engine runs while generating (infer/tools.py), e.g. calculator

    def check(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ScratchError(f"--limit must be at least 1, got {self.limit}; leave it out to evaluate everything")
        if self.fewshot is not None and self.fewshot < 0:
            raise ScratchError(f"--fewshot must be 0 or more, got {self.fewshot}")
        if self.fewshot_sampler not in SAMPLERS:
            raise ScratchError(f"--fewshot-sampler must be one of {', '.join(SAMPLERS)}, got '{self.fewshot_sampler}'")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ScratchError(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")
        if self.samples < 1:
            raise ScratchError(f"--samples must be at least 1, got {self.samples}")
        if self.temperature < 0:
            raise ScratchError(f"--temperature must be 0 (greedy) or more, got {self.temperature}")
        if self.samples > 1 and self.temperature == 0:
            raise ScratchError(f"--samples {self.samples} with greedy decoding repeats one completion; "
                               "add --temperature, e.g. 0.8")
        parse_tools(self.tools)


@dataclass
class TaskResult:
    task: str
    metrics: dict[str, float | None]
    settings: dict[str, Any]
    fingerprint: str  # of the records evaluated (and the few-shot examples), scratchlm.eval.data.fingerprint
    samples: list[dict[str, Any]]  # one per record: prompt, output, extracted answer, gold, correct
    warnings: list[str] = field(default_factory=list)
