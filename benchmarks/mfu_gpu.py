"""MFU of the 125m, 350m and 1b presets on one GPU: bf16 autocast, compiled as the trainer compiles, seq 2048.

    python benchmarks/mfu_gpu.py [--presets 125m 350m 1b] [--steps 20] [--micro-batch 0] [--compile model]

--compile model (the default, what train.compile auto picks in one process): the model's forward and its
loss as one graph; blocks: each block on its own, as under FSDP, TP and pipeline parallel.

MFU = achieved model FLOPs / the GPU's dense bf16 peak, with FLOPs per token = 6 N + 12 L d T
(scratchlm.model.flops_per_token). Random tokens: the speed of a step does not depend on the data.
Needs a CUDA GPU; prints one line per preset.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from scratchlm.config import preset
from scratchlm.hardware import peak_flops
from scratchlm.model import build_model, flops_per_token
from scratchlm.parallel.parallelize import apply_compile
from scratchlm.train.compile import compile_loss
from scratchlm.train.optim import build_optimizer
from scratchlm.train.stage import next_token_loss


def measure(name: str, steps: int, micro_batch: int, seq_len: int, mode: str) -> dict[str, float]:
    cfg = preset(name)
    device = torch.device("cuda")
    model = build_model(cfg.model, device)
    loss_fn = next_token_loss
    if mode == "model":
        loss_fn = compile_loss(next_token_loss)
    else:
        apply_compile(model)
    optimizer = build_optimizer(model, cfg.optim)
    batch = micro_batch or cfg.train.micro_batch_size
    tokens = torch.randint(0, cfg.model.vocab_size, (batch, seq_len + 1), device=device)
    data = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = loss_fn(model, data) / data["targets"].numel()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):  # compile and warm up
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    tokens_per_s = batch * seq_len / seconds
    mfu = tokens_per_s * flops_per_token(cfg.model, seq_len) / peak_flops(device, "bf16")
    return {"tokens_per_s": tokens_per_s, "mfu": mfu, "batch": batch,
            "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["125m", "350m", "1b"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--micro-batch", type=int, default=0, help="0: the preset's train.micro_batch_size")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--compile", choices=["model", "blocks"], default="model")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("error: this benchmark needs a CUDA GPU")
    if peak_flops(torch.device("cuda"), "bf16") is None:
        sys.exit(f"error: the bf16 peak of {torch.cuda.get_device_name()} is not in GPU_PEAK_BF16; MFU needs it")
    print(f"{torch.cuda.get_device_name()}: bf16 autocast, torch.compile {args.compile}, seq {args.seq_len}")
    for name in args.presets:
        torch.cuda.reset_peak_memory_stats()
        r = measure(name, args.steps, args.micro_batch, args.seq_len, args.compile)
        torch.cuda.empty_cache()
        print(f"{name:>5}: batch {r['batch']}, {r['tokens_per_s']:,.0f} tokens/s, MFU {r['mfu']:.1%}, "
              f"peak memory {r['peak_mem_gib']:.1f} GiB")


if __name__ == "__main__":
    main()
