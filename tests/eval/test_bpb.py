"""Bits per byte: `scratchlm eval --tasks bpb` on documents longer than the context gives the document
log-likelihoods and the bits_per_byte, byte_perplexity and word_perplexity that lm-eval's rolling
log-likelihood gives the export with its `hf` model (add_bos_token=False: bos as the first context only)."""

from __future__ import annotations

import json
import math

import pytest
from trained_run import hf_args, lm_eval_run, local_dataset, task_yaml, trained_run, write_jsonl

from scratchlm.data import corpus
from scratchlm.eval.evaluate import evaluate
from scratchlm.eval.task import EvalOptions

from conftest import run_cli

pytest.importorskip("lm_eval")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return trained_run(tmp_path_factory.getbasetemp() / "eval-trained")


@pytest.mark.slow
def test_bits_per_byte_as_lm_eval_rolling(trained, tmp_path):
    stories = list(corpus.stories("heldout", 12))
    # Four stories in one document: well past the context of 512 tokens, so it is scored in windows.
    texts = [" ".join(stories[:4]), *stories[4:]]
    test = write_jsonl(tmp_path / "text.jsonl", [{"text": t} for t in texts])
    run_cli("eval", str(trained.run), "--tasks", "bpb", "--data", str(test))
    ours = json.loads((trained.run / "eval" / "bpb.json").read_text())
    samples = [json.loads(line) for line in (trained.run / "eval" / "bpb_samples.jsonl").open()]
    assert samples[0]["tokens"] > 2 * 512

    task_yaml(tmp_path / "tasks", "text_local", output_type="loglikelihood_rolling", test_split="test",
              doc_to_text="", doc_to_target="{{text}}",
              metric_list=[{"metric": m} for m in ("word_perplexity", "byte_perplexity", "bits_per_byte")],
              **local_dataset(test=test))
    theirs = lm_eval_run("hf", hf_args(trained, add_bos_token=False), tmp_path / "tasks", "text_local")
    logged = sorted(theirs["samples"]["text_local"], key=lambda s: s["doc_id"])
    for sample, their in zip(samples, logged, strict=True):
        # A document's sum of thousands of fp32 log-probabilities, batched differently on each side: equal to
        # a few units of fp32's precision (epsilon 1.2e-7), far inside the 1e-4 the agreement asks.
        assert -sample["nll"] == pytest.approx(their["resps"][0][0], rel=1e-6)
    results = theirs["results"]["text_local"]
    for metric in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
        assert ours["metrics"][metric] == pytest.approx(results[f"{metric},none"], rel=1e-6)


def test_embedded_text_by_default(trained):
    result = evaluate(trained.run, ["bpb"], EvalOptions(limit=6))[0]
    m = result.metrics
    assert result.settings["data"] == "embedded" and len(result.samples) == 6
    assert 0 < m["bits_per_byte"] < 8 and m["bits_per_byte_stderr"] > 0
    assert m["byte_perplexity"] == pytest.approx(2 ** m["bits_per_byte"])
    # Per token: the same total loss over fewer units than bytes.
    total_nll = sum(s["nll"] for s in result.samples)
    assert m["perplexity"] == pytest.approx(math.exp(total_nll / sum(s["tokens"] for s in result.samples)))


def test_a_text_file_is_one_document(trained, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("Tom had 3 apples.\n\nHe ate one.\n")
    result = evaluate(trained.run, ["bpb"], EvalOptions(data=str(text)))[0]
    assert len(result.samples) == 1 and result.samples[0]["bytes"] == len(text.read_bytes())
    assert result.metrics["bits_per_byte_stderr"] is None  # one document: no spread to measure
