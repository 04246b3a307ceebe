"""Text in, text out: `scratchlm generate` and the samples printed after training."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from scratchlm.chat import find_chat_format, generation_stop_ids
from scratchlm.errors import ScratchError
from scratchlm.hardware import resolve_device
from scratchlm.infer.engine import Engine
from scratchlm.infer.sampling import SamplingParams
from scratchlm.run import load_run
from scratchlm.tokenizer import BPETokenizer

SAMPLE_PROMPTS = ["Once upon a time", "Question: Tom has 3 boxes with 12 apples in each box.",
                  "One morning, Lily"]


def stop_ids(run_dir: str | Path, tokenizer: BPETokenizer) -> list[int]:
    """Where plain generation stops: every eos id the model knows, its chat format's end of turn, and bos
    (a model that starts the next document has ended this one). export-hf writes the same list."""
    return generation_stop_ids(tokenizer, find_chat_format(run_dir, tokenizer))


def generate_text(run_dir: str | Path, prompt: str, params: SamplingParams, device: str = "auto"
                  ) -> Iterator[str]:
    """The continuation of prompt, piece by piece as it is generated."""
    if not prompt:
        raise ScratchError("the prompt is empty; give --prompt TEXT")
    params.check()
    _, tokenizer, model = load_run(run_dir, resolve_device(device))
    ids = tokenizer.encode(prompt, bos=tokenizer.add_bos)  # as the model's own tokenizer starts a text
    # One sequence: a cache for it alone, not for a server's worth of them.
    cache_tokens = min(len(ids) + params.max_new_tokens, model.cfg.max_seq_len)
    engine = Engine(model, stop_ids(run_dir, tokenizer), tokenizer, max_running=1, cache_tokens=cache_tokens)
    for out in engine.stream(ids, params):
        yield out.text


def print_samples(run_dir: Path, n: int = 3, max_new_tokens: int = 160) -> None:
    """n samples from the run's latest weights, generated together as one batch."""
    _, tokenizer, model = load_run(run_dir, resolve_device("auto"))
    engine = Engine(model, stop_ids(run_dir, tokenizer), tokenizer, max_running=n)
    prompts = (SAMPLE_PROMPTS * n)[:n]
    params = [SamplingParams(max_new_tokens=max_new_tokens, temperature=0.8, top_k=50, seed=i) for i in range(n)]
    done = engine.generate([tokenizer.encode(p, bos=tokenizer.add_bos) for p in prompts], params)
    for i, (prompt, completion) in enumerate(zip(prompts, done, strict=True)):
        print(f"\n--- sample {i + 1} ---\n{prompt}{completion.text}")
