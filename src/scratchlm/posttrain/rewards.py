"""Verifiable rewards: a completion scored by a rule against the problem's known answer (no reward model;
the learned one is scratchlm.posttrain.reward).

    gsm8k   1 when the completion's "#### <number>" line holds the gold answer, as the evaluation's
            strict-match scores it (scratchlm.eval.scorer), plus rl.format_reward when the completion has
            such a line at all, right or wrong

A reward function takes (completion text, the problem record, the rl config) and returns the reward and
whether the answer is right (pass@1 of the batch). The text is what the evaluation would score: special
tokens dropped, cut before gsm8k's stop strings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from scratchlm.config import RLConfig
from scratchlm.eval import scorer

RewardFn = Callable[[str, dict[str, Any], RLConfig], tuple[float, bool]]


def gsm8k(completion: str, problem: dict[str, Any], rl: RLConfig) -> tuple[float, bool]:
    answer = scorer.strict_match(completion)
    correct = scorer.exact_match(answer, problem["answer"])
    formatted = answer != scorer.INVALID
    return float(correct) + rl.format_reward * formatted, correct


REWARDS: dict[str, RewardFn] = {"gsm8k": gsm8k}
