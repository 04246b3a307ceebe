"""Bits per byte and perplexity of text: how well the model predicts it, in units that do not depend on
its tokenizer (bits per UTF-8 byte) and in the usual ones (perplexity per token, byte and word).

Each document is scored whole, as lm-evaluation-harness's loglikelihood_rolling scores it: its tokens
follow bos, and a document longer than the context is cut into windows that each predict up to a
context's worth of tokens (scratchlm.eval.runner.rolling_windows). lm-eval's `hf` model with
add_bos_token=False on the exported model scores exactly these tokens.

Text: held-out documents of the embedded corpus by default (stories and worked math), or a .txt (one
document), a .jsonl / .parquet with a text field, or hf:NAME[:CONFIG[:SPLIT]] (split test).
"""

from __future__ import annotations

from scratchlm.data import corpus
from scratchlm.errors import ScratchError
from scratchlm.eval import data, scorer
from scratchlm.eval.runner import Runner, rolling_windows
from scratchlm.eval.task import EvalOptions, TaskResult

EMBEDDED_DOCUMENTS = 200


def _texts(options: EvalOptions) -> tuple[list[str], str]:
    if not options.data:
        return list(corpus.documents("heldout", options.limit or EMBEDDED_DOCUMENTS)), "embedded"
    records = data.read_records(options.data, ("text",), "test", options.limit)
    return [str(r["text"]) for r in records], data.describe(options.data, "test")


def run(runner: Runner, options: EvalOptions) -> TaskResult:
    texts, source = _texts(options)
    tokenizer = runner.tokenizer
    documents = [(text, tokenizer.encode(text)) for text in texts]
    documents = [(text, ids) for text, ids in documents if ids]  # an empty document has nothing to predict
    if not documents:
        raise ScratchError(f"{source} holds no text to score")
    windows = [rolling_windows(ids, tokenizer.bos_id, runner.context_len) for _, ids in documents]
    scores = iter(runner.loglikelihoods([w for doc in windows for w in doc], desc="bpb"))
    nll = [-sum(next(scores)[0] for _ in doc) for doc in windows]
    samples = [{"text": text, "tokens": len(ids), "bytes": len(text.encode("utf-8")),
                "words": scorer.count_words(text), "nll": loss}
               for (text, ids), loss in zip(documents, nll, strict=True)]
    metrics = scorer.language_model_metrics(nll, [s["tokens"] for s in samples], [s["bytes"] for s in samples],
                                            [s["words"] for s in samples])
    settings = {"data": source, "documents_skipped_empty": len(texts) - len(documents)}
    return TaskResult("bpb", metrics, settings, data.fingerprint(texts), samples)
