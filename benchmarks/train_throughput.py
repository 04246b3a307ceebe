"""Training throughput on a CPU: scratchlm as a user runs it (compiled) against transformers' LlamaForCausalLM
as its users run it (eager, SDPA attention), with eager scratchlm for reference; side by side in one process.

Every side gets the identical shape, batch, sequence length, optimizer (fused AdamW, the same groups and
hyper-parameters), gradient clipping and precision (fp32, or bf16 autocast over fp32 master weights).
scratchlm's step is the trainer's (train.compile model: the model and its loss compiled together, the
chunked cross-entropy when eager); transformers' loss is the plain fp32 cross-entropy of its logits.
The sides' steps alternate in rounds, so drift in the machine's speed hits all alike; each figure is the
median over rounds. MFU is model FLOPs (6N + 12 L d T per token) over this machine's measured bf16
matrix-product peak (scratchlm.hardware.cpu_peak_flops).

    python benchmarks/train_throughput.py                 # tiny preset and a ~29M-parameter shape
    python benchmarks/train_throughput.py --rounds 9 --shapes tiny

Needs transformers (pip install -e '.[hf]'). The last line is
`ratio_bf16: X ratio_fp32: Y mfu_bf16: Z mfu_bf16_largest: W`: ratios are compiled scratchlm over
transformers and mfu_bf16 compiled scratchlm's MFU, each the worst shape's; mfu_bf16_largest is at 29m.
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
from scratchlm.train.compile import compile_loss
from scratchlm.train.optim import build_optimizer
from scratchlm.train.stage import next_token_loss

SHAPES = {  # name: (model, batch rows, sequence length)
    "tiny": (load_config("tiny").model, 16, 256),
    "29m": (ModelConfig(vocab_size=8192, dim=512, n_layers=8, n_heads=8, n_kv_heads=4, ffn_hidden_dim=1536,
                        max_seq_len=512), 8, 512),
}
LARGEST = "29m"


def hf_twin(cfg: ModelConfig):
    """transformers' Llama with exactly our shape, using its SDPA attention."""
    from transformers import LlamaConfig, LlamaForCausalLM

    hf_cfg = LlamaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.dim, intermediate_size=cfg.ffn_hidden_dim,
                         num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
                         num_key_value_heads=cfg.n_kv_heads, max_position_embeddings=cfg.max_seq_len,
                         rope_theta=cfg.rope_theta, rms_norm_eps=cfg.norm_eps, tie_word_embeddings=cfg.tie_embeddings,
                         attn_implementation="sdpa", use_cache=False)
    return LlamaForCausalLM(hf_cfg)


def transformers_loss(model, batch):
    logits = model(input_ids=batch["inputs"]).logits
    return F.cross_entropy(logits.flatten(0, 1).float(), batch["targets"].flatten(), reduction="sum")


def make_step(model, loss_fn, precision: str):
    """One optimizer step as the trainer takes it: summed loss / tokens, backward, clip, fused AdamW."""
    optimizer = build_optimizer(model, load_config("tiny").optim)  # the same grouping rule on every side
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else nullcontext()

    def step(batch):
        with autocast:
            loss = loss_fn(model, batch) / batch["targets"].numel()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def bench_shape(name: str, precision: str, rounds: int, steps: int, peak: float, fp32_peak: float
                ) -> dict[str, float]:
    """-> tokens/s of each side, and compiled scratchlm's MFU (of the bf16 peak)."""
    cfg, rows, seq = SHAPES[name]
    torch.manual_seed(0)
    sides = {
        "scratchlm": make_step(build_model(cfg, seed=0).train(), compile_loss(next_token_loss), precision),
        "transformers": make_step(hf_twin(cfg).train(), transformers_loss, precision),
        "scratchlm eager": make_step(build_model(cfg, seed=0).train(), next_token_loss, precision),
    }
    tokens = torch.randint(0, cfg.vocab_size, (rows, seq + 1))
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}
    start = time.perf_counter()
    for _ in range(2):  # compile, then warm up allocator, kernels and optimizer state
        sides["scratchlm"](batch)
    compile_s = time.perf_counter() - start
    for side in ("transformers", "scratchlm eager"):
        for _ in range(2):
            sides[side](batch)
    times: dict[str, list[float]] = {side: [] for side in sides}
    for _ in range(rounds):
        for side, step in sides.items():
            start = time.perf_counter()
            for _ in range(steps):
                step(batch)
            times[side].append((time.perf_counter() - start) / steps)
    tps = {side: rows * seq / statistics.median(t) for side, t in times.items()}
    flops = tps["scratchlm"] * flops_per_token(cfg, seq)
    mfu = flops / peak
    # Without native bf16 units the bf16 peak is an emulation's; an fp32 step is then judged by the fp32 peak.
    of_fp32 = f" ({flops / fp32_peak:.1%} of the fp32 peak)" if precision == "fp32" else ""
    print(f"{name:>5} {precision}: {num_params(cfg) / 1e6:5.1f}M params, batch {rows} x {seq}: compiled scratchlm "
          f"{tps['scratchlm']:7,.0f} tok/s (first compile + 1 step {compile_s:.0f} s), transformers "
          f"{tps['transformers']:7,.0f}, eager scratchlm {tps['scratchlm eager']:7,.0f}; ratio "
          f"{tps['scratchlm'] / tps['transformers']:.2f} (eager {tps['scratchlm eager'] / tps['transformers']:.2f}), "
          f"MFU {mfu:.1%} of the bf16 peak{of_fp32}", flush=True)
    return {**tps, "mfu": mfu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="steps per round and side")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"],
                        help="fp32 alone on a CPU that emulates bf16 (no avx512_bf16 or AMX), where bf16 crawls")
    args = parser.parse_args()
    peak, fp32_peak = cpu_peak_flops(torch.bfloat16), cpu_peak_flops(torch.float32)
    print(f"{cpu_model()}, torch {torch.__version__}, {torch.get_num_threads()} threads; measured matmul peak: "
          f"bf16 {peak / 1e9:.0f} GFLOP/s, fp32 {fp32_peak / 1e9:.0f} GFLOP/s")
    results = {(s, p): bench_shape(s, p, args.rounds, args.steps, peak, fp32_peak)
               for s in args.shapes for p in args.precisions}
    nan = float("nan")  # a precision or shape not run
    ratio = {p: min(results[(s, p)]["scratchlm"] / results[(s, p)]["transformers"] for s in args.shapes)
             if p in args.precisions else nan for p in ("fp32", "bf16")}
    mfu_bf16 = min(results[(s, "bf16")]["mfu"] for s in args.shapes) if "bf16" in args.precisions else nan
    largest = results[(LARGEST, "bf16")]["mfu"] if (LARGEST, "bf16") in results else nan
    print(f"ratio_bf16: {ratio['bf16']:.2f} ratio_fp32: {ratio['fp32']:.2f} mfu_bf16: {mfu_bf16:.3f} "
          f"mfu_bf16_largest: {largest:.3f}")


if __name__ == "__main__":
    main()
