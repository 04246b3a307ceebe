"""Training throughput of scratchlm against transformers' LlamaForCausalLM, side by side in one process.

Both models get the identical shape, batch, sequence length, optimizer (fused AdamW, same groups of
hyper-parameters) and precision (fp32, or bf16 autocast over fp32 master weights). Steps of the two
alternate in rounds, so drift in the machine's speed hits both alike; each side's figure is the
median over rounds. MFU is model FLOPs (6N + 12 L d T per token) over a measured bf16 matrix-product
peak of this machine.

    python benchmarks/train_throughput.py                 # tiny preset and a ~29M-parameter shape
    python benchmarks/train_throughput.py --rounds 5 --shapes tiny

Needs transformers (pip install -e '.[hf]'). The last line is
`ratio_bf16: X ratio_fp32: Y mfu_bf16: Z` (ratios are scratchlm / transformers, the worst shape's).
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from scratchlm.config import ModelConfig, load_config
from scratchlm.hardware import cpu_model, cpu_peak_flops
from scratchlm.model import build_model, flops_per_token, num_params
from scratchlm.train.optim import build_optimizer

SHAPES = {
    "tiny": (load_config("tiny").model, 16, 256),
    "29m": (ModelConfig(vocab_size=8192, dim=512, n_layers=8, n_heads=8, n_kv_heads=4, ffn_hidden_dim=1536,
                        max_seq_len=512), 8, 512),
}


def hf_twin(cfg: ModelConfig):
    """transformers' Llama with exactly our shape, using its SDPA attention."""
    from transformers import LlamaConfig, LlamaForCausalLM

    hf_cfg = LlamaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.dim, intermediate_size=cfg.ffn_hidden_dim,
                         num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
                         num_key_value_heads=cfg.n_kv_heads, max_position_embeddings=cfg.max_seq_len,
                         rope_theta=cfg.rope_theta, rms_norm_eps=cfg.norm_eps, tie_word_embeddings=cfg.tie_embeddings,
                         attn_implementation="sdpa", use_cache=False)
    return LlamaForCausalLM(hf_cfg)


def make_step(model, optimizer, autocast, forward):
    def step(x, y):
        with autocast:
            logits = forward(model, x)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def bench_shape(name: str, precision: str, rounds: int, steps: int, peak: float) -> tuple[float, float, float]:
    cfg, batch, seq = SHAPES[name]
    torch.manual_seed(0)
    ours = build_model(cfg, seed=0).train()
    theirs = hf_twin(cfg).train()
    optim_cfg = load_config("tiny").optim
    opt_ours = build_optimizer(ours, optim_cfg)
    opt_theirs = build_optimizer(theirs, optim_cfg)  # same grouping rule: decay on matrices only, fused
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    sides = {
        "scratchlm": make_step(ours, opt_ours, autocast, lambda m, x: m(x)),
        "transformers": make_step(theirs, opt_theirs, autocast, lambda m, x: m(input_ids=x).logits),
    }
    x = torch.randint(0, cfg.vocab_size, (batch, seq))
    y = torch.randint(0, cfg.vocab_size, (batch, seq))
    for step in sides.values():  # warm-up: allocator, kernels, optimizer state
        for _ in range(2):
            step(x, y)
    times: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(rounds):
        for side, step in sides.items():
            start = time.perf_counter()
            for _ in range(steps):
                step(x, y)
            times[side].append((time.perf_counter() - start) / steps)
    tokens = batch * seq
    ours_tps = tokens / statistics.median(times["scratchlm"])
    theirs_tps = tokens / statistics.median(times["transformers"])
    mfu = ours_tps * flops_per_token(cfg, seq) / peak
    print(f"{name:>5} {precision}: {num_params(cfg) / 1e6:5.1f}M params, batch {batch} x {seq}: "
          f"scratchlm {ours_tps:8,.0f} tok/s, transformers {theirs_tps:8,.0f} tok/s, "
          f"ratio {ours_tps / theirs_tps:.2f}, scratchlm MFU {mfu:.1%} of the bf16 peak", flush=True)
    return ours_tps / theirs_tps, mfu, ours_tps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="steps per round and side")
    args = parser.parse_args()
    peak, fp32_peak = cpu_peak_flops(torch.bfloat16), cpu_peak_flops(torch.float32)
    print(f"{cpu_model()}, measured matmul peak on {torch.get_num_threads()} threads: bf16 {peak / 1e9:.0f} GFLOP/s, "
          f"fp32 {fp32_peak / 1e9:.0f} GFLOP/s")
    results = {(s, p): bench_shape(s, p, args.rounds, args.steps, peak) for s in args.shapes for p in ("fp32", "bf16")}
    ratio = {p: min(results[(s, p)][0] for s in args.shapes) for p in ("fp32", "bf16")}
    mfu_bf16 = min(results[(s, "bf16")][1] for s in args.shapes)
    print(f"ratio_bf16: {ratio['bf16']:.2f} ratio_fp32: {ratio['fp32']:.2f} mfu_bf16: {mfu_bf16:.3f}")


if __name__ == "__main__":
    main()
