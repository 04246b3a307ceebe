"""Scoring: pure functions of model outputs and gold answers, written to score exactly as
lm-evaluation-harness does (its gsm8k task, multiple-choice `acc` / `acc_norm`, `mean_stderr`).

GSM8K keeps two scores of one completion, as lm-eval's gsm8k task does with its two filters:

    strict-match      the number on the first "#### <number>" line
    flexible-extract  the last number anywhere in the completion

Each extracted answer is compared with the gold solution after both go through lm-eval's
normalisation: commas and dollar signs removed, everything up to the last "#### " removed, one
trailing period removed, lower-cased. "[invalid]" stands for a completion with no number.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

INVALID = "[invalid]"
STRICT_PATTERN = re.compile(r"#### (\-?[0-9\.\,]+)")
# Two alternatives: a run of at least two characters of digits, '$', '.' and ',' (so "$1,200.50" is one
# number), or a lone digit run; a match fills one of the two groups.
FLEXIBLE_PATTERN = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
# Removed, in this order, from prediction and gold alike before they are compared (gsm8k's regexes_to_ignore).
IGNORED_PATTERNS = (",", r"\$", r"(?s).*#### ", r"\.$")


def regex_extract(text: str, pattern: re.Pattern[str], group_select: int = 0) -> str:
    """The group_select-th match of pattern in text (0: first, -1: last), stripped; INVALID if none.
    With several groups, a match is the first group that matched."""
    matches = pattern.findall(text)
    if not matches:
        return INVALID
    match = matches[group_select]
    if isinstance(match, tuple):
        match = next((group for group in match if group), INVALID)
    return match.strip()


def strict_match(completion: str) -> str:
    return regex_extract(completion, STRICT_PATTERN)


def flexible_extract(completion: str) -> str:
    return regex_extract(completion, FLEXIBLE_PATTERN, group_select=-1)


def normalize(text: str) -> str:
    for pattern in IGNORED_PATTERNS:
        text = re.sub(pattern, "", text)
    return text.lower()


def exact_match(prediction: str, gold: str) -> bool:
    """gsm8k's exact_match: equal after normalize (gold is the whole solution; only its answer survives)."""
    return normalize(prediction) == normalize(gold)


def cut_at_stops(text: str, stops: Sequence[str]) -> str:
    """The text before the first occurrence of any stop string."""
    for stop in stops:
        if stop:
            text = text.split(stop)[0]
    return text


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def mean_stderr(values: Sequence[float]) -> float | None:
    """Standard error of the mean: sample standard deviation (n - 1) over sqrt(n), as lm-eval reports
    for every mean metric. None for a single value, where lm-eval writes N/A."""
    n = len(values)
    if n < 2:
        return None
    mu = mean(values)
    return math.sqrt(sum((x - mu) ** 2 for x in values) / (n - 1)) / math.sqrt(n)


def argmax(values: Sequence[float]) -> int:
    """Index of the largest value; the first on ties, as numpy's argmax."""
    return max(range(len(values)), key=lambda i: (values[i], -i))


def multiple_choice(logprobs: Sequence[float], choices: Sequence[str]) -> tuple[int, int]:
    """(pred, pred_norm): the choice with the highest log-likelihood, and the highest per character of
    the choice's text (lm-eval's acc and acc_norm)."""
    return argmax(logprobs), argmax([lp / len(choice) for lp, choice in zip(logprobs, choices, strict=True)])


def pass_at_k(n: int, correct: int, k: int) -> float:
    """The unbiased estimate of pass@k from n samples of which `correct` are right: 1 - C(n-c, k) / C(n, k),
    computed as a product so it never overflows."""
    if n - correct < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - correct + 1, n + 1))


def ratio_with_stderr(numerators: Sequence[float], denominators: Sequence[float]) -> tuple[float, float | None]:
    """sum(numerators) / sum(denominators) (lm-eval's weighted mean, e.g. nats per byte over documents) and
    its standard error by the delta method: documents are the sampled units, each contributing its own
    numerator and denominator."""
    n = len(numerators)
    ratio = sum(numerators) / sum(denominators)
    if n < 2:
        return ratio, None
    residuals = [a - ratio * b for a, b in zip(numerators, denominators, strict=True)]
    spread = math.sqrt(sum(r * r for r in residuals) / (n - 1))
    return ratio, spread / (math.sqrt(n) * mean(denominators))


def language_model_metrics(nll: Sequence[float], tokens: Sequence[int], n_bytes: Sequence[int],
                           words: Sequence[int]) -> dict[str, float | None]:
    """bits per byte and perplexities of documents, from each one's negative log-likelihood (nats) and size.

    bits_per_byte, byte_perplexity and word_perplexity are lm-eval's (a document's words are its
    whitespace-separated pieces); perplexity is per token of this model's tokenizer. Each comes with its
    standard error (delta method; exp and division by ln 2 carry it along).
    """
    per_byte, per_byte_se = ratio_with_stderr(nll, n_bytes)
    per_word, per_word_se = ratio_with_stderr(nll, words)
    per_token, per_token_se = ratio_with_stderr(nll, tokens)

    def scaled(se: float | None, factor: float) -> float | None:
        return None if se is None else se * factor

    return {
        "bits_per_byte": per_byte / math.log(2), "bits_per_byte_stderr": scaled(per_byte_se, 1 / math.log(2)),
        "byte_perplexity": math.exp(per_byte), "byte_perplexity_stderr": scaled(per_byte_se, math.exp(per_byte)),
        "word_perplexity": math.exp(per_word), "word_perplexity_stderr": scaled(per_word_se, math.exp(per_word)),
        "perplexity": math.exp(per_token), "perplexity_stderr": scaled(per_token_se, math.exp(per_token)),
    }


def count_words(text: str) -> int:
    """lm-eval's word count for word_perplexity: pieces between runs of whitespace."""
    return len(re.split(r"\s+", text))
