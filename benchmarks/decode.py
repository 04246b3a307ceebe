"""Decode speed: scratchlm's engine against transformers' `generate`, and the engine's batching gain.

1. Batch-1 decode: one greedy sequence of --new-tokens tokens after a --prompt-tokens prompt, through
   scratchlm's Engine and through transformers' LlamaForCausalLM.generate on the same weights, in the
   same dtype (fp32, and bf16 weights). Runs of the two alternate in rounds; each figure is the median.
2. Concurrency: the engine's output tokens/s with 1, 4, 16 and 64 sequences submitted at once (distinct
   random prompts, no stop tokens, every sequence generates --new-tokens).

    python benchmarks/decode.py                       # tiny preset and a ~29M-parameter shape
    python benchmarks/decode.py --shapes tiny --rounds 3

Needs transformers (pip install -e '.[hf]'). The last line is `decode_ratio_b1: X speedup_16: Y`: X is
scratchlm / transformers batch-1 tokens/s, Y the output tokens/s of 16 concurrent sequences over one;
both the worst over shapes and precisions.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from scratchlm.config import ModelConfig, load_config
from scratchlm.hardware import cpu_model
from scratchlm.infer.engine import Engine
from scratchlm.infer.sampling import SamplingParams
from scratchlm.interop.hf import rename
from scratchlm.model import Transformer, build_model, num_params

SHAPES = {
    "tiny": load_config("tiny").model,
    "29m": ModelConfig(vocab_size=8192, dim=512, n_layers=8, n_heads=8, n_kv_heads=4, ffn_hidden_dim=1536,
                       max_seq_len=512),
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
CONCURRENCY = (1, 4, 16, 64)


def hf_twin(model: Transformer):
    """transformers' Llama holding exactly our weights (SDPA attention, its default cache)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = model.cfg
    hf_cfg = LlamaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.dim, intermediate_size=cfg.ffn_hidden_dim,
                         num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
                         num_key_value_heads=cfg.n_kv_heads, max_position_embeddings=cfg.max_seq_len,
                         rope_theta=cfg.rope_theta, rms_norm_eps=cfg.norm_eps, tie_word_embeddings=cfg.tie_embeddings,
                         attn_implementation="sdpa", bos_token_id=None, eos_token_id=None, pad_token_id=0)
    hf = LlamaForCausalLM(hf_cfg)
    hf.load_state_dict({rename(k, to_hf=True): v for k, v in model.state_dict().items()}, strict=False)
    if cfg.tie_embeddings:
        hf.tie_weights()
    return hf.to(next(model.parameters()).dtype).eval()


def batch1(model: Transformer, dtype: torch.dtype, rounds: int, prompt_len: int, new: int) -> tuple[float, float]:
    """Batch-1 greedy decode tokens/s of (scratchlm, transformers), medians over alternating rounds."""
    hf = hf_twin(model)
    prompt = list(range(10, 10 + prompt_len))
    engine = Engine(model, max_running=1, cache_tokens=prompt_len + new)
    greedy = SamplingParams(max_new_tokens=new, temperature=0)
    ids = torch.tensor([prompt])

    def ours() -> list[int]:
        return engine.generate([prompt], greedy)[0].token_ids

    def theirs() -> list[int]:
        with torch.inference_mode():
            out = hf.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False)
        return out[0, prompt_len:].tolist()

    if dtype == torch.float32:  # the two agree token for token (bf16 rounding may part them)
        assert ours() == theirs(), "scratchlm and transformers decode different tokens from the same weights"
    times: dict[str, list[float]] = {"ours": [], "theirs": []}
    for run in (ours, theirs):  # warm-up
        run()
    for _ in range(rounds):
        for side, run in (("ours", ours), ("theirs", theirs)):
            start = time.perf_counter()
            run()
            times[side].append(time.perf_counter() - start)
    return new / statistics.median(times["ours"]), new / statistics.median(times["theirs"])


def concurrent(model: Transformer, prompt_len: int, new: int) -> dict[int, float]:
    """Output tokens/s of the engine with n sequences submitted together, their prompts between half and
    one and a half times prompt_len tokens long."""
    engine = Engine(model, max_running=max(CONCURRENCY))
    rng = random.Random(0)

    def prompts(n: int) -> list[list[int]]:
        lengths = [rng.randint(prompt_len // 2, prompt_len * 3 // 2) for _ in range(n)]
        return [[rng.randrange(model.cfg.vocab_size) for _ in range(length)] for length in lengths]

    params = SamplingParams(max_new_tokens=new, temperature=0)
    engine.generate(prompts(4), params)  # warm-up
    result = {}
    for n in CONCURRENCY:
        batch = prompts(n)
        start = time.perf_counter()
        done = engine.generate(batch, params)
        elapsed = time.perf_counter() - start
        result[n] = sum(len(c.token_ids) for c in done) / elapsed
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    ratios, speedups = [], []
    for shape in args.shapes:
        cfg = SHAPES[shape]
        for name in args.dtypes:
            model = build_model(cfg, seed=0).to(DTYPES[name]).eval()
            ours, theirs = batch1(model, DTYPES[name], args.rounds, args.prompt_tokens, args.new_tokens)
            rates = concurrent(model, args.prompt_tokens, args.new_tokens)
            ratios.append(ours / theirs)
            speedups.append(rates[16] / rates[1])
            line = ", ".join(f"{n}: {r:,.0f}" for n, r in rates.items())
            print(f"{shape:>5} {name} ({num_params(cfg) / 1e6:.1f}M params): batch-1 decode scratchlm {ours:,.0f} "
                  f"tok/s, transformers {theirs:,.0f} tok/s, ratio {ours / theirs:.2f}; engine output tok/s at "
                  f"concurrency {line} (16 vs 1: {rates[16] / rates[1]:.1f}x)", flush=True)
    print(f"decode_ratio_b1: {min(ratios):.2f} speedup_16: {min(speedups):.1f}")


if __name__ == "__main__":
    main()
