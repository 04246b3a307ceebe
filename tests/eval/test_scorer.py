"""The scorer against lm-evaluation-harness itself: its gsm8k filters and exact_match, built from the
installed gsm8k.yaml, on hand-written completions; its mean_stderr; its acc / acc_norm rule."""

from __future__ import annotations

import math
import random
from itertools import combinations
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchlm.eval import scorer

lm_eval = pytest.importorskip("lm_eval")
from lm_eval.api.metrics import exact_match_hf_evaluate  # noqa: E402
from lm_eval.api.metrics import mean_stderr as lm_eval_mean_stderr  # noqa: E402
from lm_eval.filters import get_filter  # noqa: E402  (importing lm_eval.filters registers them)

GSM8K_YAML = Path(lm_eval.__file__).parent / "tasks" / "gsm8k" / "gsm8k.yaml"
GOLD = "Tom has 3 boxes.\nSo 3 * 400 = <<3*400=1200>>1200 apples.\n#### 1200"

# (completion, strict-match, flexible-extract), written out by hand.
COMPLETIONS = [
    ("3 * 400 = 1200.\n#### 1200", "1200", "1200"),
    ("He pays $1,200 in all.\n#### $1,200", "[invalid]", "$1,200"),  # '$' after '####' defeats strict
    ("#### 1,200\n\nQuestion: what next", "1,200", "1,200"),  # thousands separator
    ("The change is -15 dollars.\n#### -15", "-15", "-15"),  # negative
    ("Each costs 2.50, so 4 cost 10.00.\n#### 10.00", "10.00", "10.00"),  # decimals
    ("#### 12\nOr maybe\n#### 13", "12", "13"),  # several '####' lines: strict takes the first
    ("I do not know the answer", "[invalid]", "[invalid]"),  # no number at all
    ("#### 1200 apples, because 3 boxes hold 400 each", "1200", "400"),  # trailing text after the answer
    ("The answer is 1200.", "[invalid]", "1200."),  # trailing period kept by the filter, dropped by normalize
    ("It is 7", "[invalid]", "7"),  # a lone digit: the second alternative of the flexible pattern
    ("#### -3.5.", "-3.5.", "-3.5."),
    ("", "[invalid]", "[invalid]"),
]


def lm_eval_gsm8k() -> tuple[dict[str, list], dict]:
    """gsm8k.yaml's filter pipelines (by name) and its exact_match options."""
    config = yaml.safe_load(GSM8K_YAML.read_text())
    filters = {f["name"]: f["filter"] for f in config["filter_list"]}
    metric = {k: v for k, v in config["metric_list"][0].items()
              if k in ("ignore_case", "ignore_punctuation", "regexes_to_ignore")}
    return filters, metric


def lm_eval_extract(pipeline: list[dict], completion: str) -> str:
    responses = [[completion]]
    for step in pipeline:
        kwargs = {k: v for k, v in step.items() if k != "function"}
        responses = list(get_filter(step["function"])(**kwargs).apply(responses, [{}]))
    return responses[0]


def lm_eval_correct(prediction: str, gold: str, metric: dict) -> bool:
    return bool(exact_match_hf_evaluate(predictions=[prediction], references=[gold], **metric)["exact_match"])


@pytest.mark.parametrize(("completion", "strict", "flexible"), COMPLETIONS)
def test_filters_extract_what_lm_eval_extracts(completion, strict, flexible):
    filters, _ = lm_eval_gsm8k()
    assert scorer.strict_match(completion) == strict == lm_eval_extract(filters["strict-match"], completion)
    assert scorer.flexible_extract(completion) == flexible == lm_eval_extract(filters["flexible-extract"], completion)


@pytest.mark.parametrize(("completion", "strict", "flexible"), COMPLETIONS)
def test_exact_match_as_lm_eval(completion, strict, flexible):
    _, metric = lm_eval_gsm8k()
    for extracted in (strict, flexible):
        assert scorer.exact_match(extracted, GOLD) == lm_eval_correct(extracted, GOLD, metric)


def test_normalisation_drops_commas_dollars_and_a_trailing_period():
    assert scorer.exact_match("$1,200", GOLD)
    assert scorer.exact_match("1200.", GOLD)
    assert not scorer.exact_match("1200.0", GOLD)  # a number is compared as text, as lm-eval does
    assert not scorer.exact_match("[invalid]", GOLD)
    assert scorer.normalize(GOLD) == "1200"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789$.,-# \nab", max_size=40))
def test_filters_and_match_agree_with_lm_eval_on_any_text(text):
    filters, metric = lm_eval_gsm8k()
    for ours, name in ((scorer.strict_match, "strict-match"), (scorer.flexible_extract, "flexible-extract")):
        extracted = ours(text)
        assert extracted == lm_eval_extract(filters[name], text)
        assert scorer.exact_match(extracted, GOLD) == lm_eval_correct(extracted, GOLD, metric)


def test_cut_at_stops_keeps_the_text_before_the_earliest_stop():
    assert scorer.cut_at_stops("a Question: b </s> c", ["</s>", "Question:"]) == "a "
    assert scorer.cut_at_stops("no stop here", ["Question:"]) == "no stop here"


@pytest.mark.parametrize("values", [[1.0, 0.0, 1.0], [0.0] * 5, [0.3, 0.9, 0.2, 0.5]])
def test_mean_stderr_is_lm_eval_s(values):
    assert scorer.mean_stderr(values) == pytest.approx(lm_eval_mean_stderr(values), abs=1e-12)


def test_mean_stderr_of_one_value_is_none():
    assert scorer.mean_stderr([1.0]) is None


def test_multiple_choice_takes_the_best_and_the_best_per_character():
    # Raw: choice 0 is most likely; per character, the long choice 1 wins.
    assert scorer.multiple_choice([-2.0, -3.0, -9.0], ["ab", "abcdefgh", "a"]) == (0, 1)
    assert scorer.multiple_choice([-1.0, -1.0], ["x", "y"]) == (0, 0)  # ties go to the first, as numpy's argmax


def test_pass_at_k_equals_counting_subsets():
    for n, correct, k in [(5, 2, 1), (5, 2, 3), (6, 0, 2), (4, 4, 4), (10, 3, 5)]:
        draws = list(combinations([True] * correct + [False] * (n - correct), k))
        assert scorer.pass_at_k(n, correct, k) == pytest.approx(sum(any(d) for d in draws) / len(draws))


def test_ratio_stderr_with_equal_denominators_is_the_mean_s():
    values = [0.5, 1.5, 2.0, 4.0]
    ratio, se = scorer.ratio_with_stderr(values, [1] * 4)
    assert ratio == pytest.approx(sum(values) / 4)
    assert se == pytest.approx(scorer.mean_stderr(values))


def test_ratio_stderr_matches_the_spread_of_resampled_ratios():
    """The delta method's standard error is what resampling documents shows, for a large sample."""
    rng = random.Random(0)
    sizes = [rng.randint(50, 500) for _ in range(400)]
    losses = [s * rng.uniform(0.5, 1.5) for s in sizes]
    _, se = scorer.ratio_with_stderr(losses, sizes)
    ratios = []
    for _ in range(400):
        pick = [rng.randrange(len(sizes)) for _ in sizes]
        ratios.append(sum(losses[i] for i in pick) / sum(sizes[i] for i in pick))
    mu = sum(ratios) / len(ratios)
    spread = math.sqrt(sum((r - mu) ** 2 for r in ratios) / (len(ratios) - 1))
    assert se == pytest.approx(spread, rel=0.15)


def test_language_model_metrics_relate_as_their_definitions():
    nll, tokens, n_bytes, words = [10.0, 36.0], [5, 10], [20, 60], [4, 12]
    m = scorer.language_model_metrics(nll, tokens, n_bytes, words)
    assert m["bits_per_byte"] == pytest.approx(46 / 80 / math.log(2))
    assert m["byte_perplexity"] == pytest.approx(2 ** m["bits_per_byte"])
    assert m["word_perplexity"] == pytest.approx(math.exp(46 / 16))
    assert m["perplexity"] == pytest.approx(math.exp(46 / 15))
    assert m["byte_perplexity_stderr"] == pytest.approx(m["bits_per_byte_stderr"] * math.log(2) * m["byte_perplexity"])
    same_rate = scorer.language_model_metrics([10.0, 30.0], tokens, n_bytes, words)
    assert m["bits_per_byte_stderr"] > 0 == same_rate["bits_per_byte_stderr"]  # equal rates: nothing uncertain


def test_count_words_as_lm_eval():
    from lm_eval.api.task import PerplexityTask

    for text in ["one two  three\n\nfour", " leading space", "x"]:
        assert scorer.count_words(text) == PerplexityTask.count_words(text)
