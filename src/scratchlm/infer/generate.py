"""Text in, text out: `scratchlm generate` and the samples printed after training."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from scratchlm.hardware import resolve_device
from scratchlm.infer.engine import Engine, SamplingParams
from scratchlm.run import load_run
from scratchlm.tokenizer import BPETokenizer

SAMPLE_PROMPTS = ["Once upon a time", "Question: Tom has 3 boxes with 12 apples in each box.",
                  "One morning, Lily"]


def stop_ids(tokenizer: BPETokenizer) -> set[int]:
    """A document ends at <|eos|>; a model that jumps straight to the next <|bos|> has ended it too."""
    return {tokenizer.eos_id, tokenizer.bos_id}


def decode_stream(tokenizer: BPETokenizer, ids: Iterator[int]) -> Iterator[str]:
    """Turn token ids into text pieces as they arrive. A character can span several byte-level tokens,
    so a piece is emitted only once the decoded text stops ending in an unfinished character."""
    done: list[int] = []
    shown = ""
    for token in ids:
        done.append(token)
        text = tokenizer.decode(done)
        if text.endswith("\ufffd"):
            continue
        yield text[len(shown):]
        shown = text
    text = tokenizer.decode(done)
    if text != shown:
        yield text[len(shown):]


def generate_text(run_dir: str | Path, prompt: str, params: SamplingParams, device: str = "auto"
                  ) -> Iterator[str]:
    _, tokenizer, model = load_run(run_dir, resolve_device(device))
    engine = Engine(model, stop_ids(tokenizer))
    yield from decode_stream(tokenizer, engine.stream(tokenizer.encode(prompt, bos=True), params))


def print_samples(run_dir: Path, n: int = 3, max_new_tokens: int = 160) -> None:
    _, tokenizer, model = load_run(run_dir, resolve_device("auto"))
    engine = Engine(model, stop_ids(tokenizer))
    for i, prompt in enumerate((SAMPLE_PROMPTS * n)[:n]):
        params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.8, top_k=50, seed=i)
        text = tokenizer.decode(engine.generate(tokenizer.encode(prompt, bos=True), params))
        print(f"\n--- sample {i + 1} ---\n{prompt}{text}")
