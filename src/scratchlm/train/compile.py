"""torch.compile in training: the modes, what `auto` picks, and where the compiled kernels are kept.

    off     eager PyTorch.
    model   one process: the stage's loss function is compiled, so the model's forward and the loss become
            one graph, and AOTAutograd derives their backward as a second. Inductor fuses the elementwise
            work between the matrix products (RMSNorm, RoPE, SwiGLU's gate, autocast's casts, the
            cross-entropy's upcast and softmax) into a few kernels.
    blocks  each Transformer block compiled on its own, as torchtitan does: what FSDP, TP and pipeline
            parallel need, since their hooks and collectives run between blocks, outside the graphs.
    auto    the run's eager duration estimated from its FLOPs and this device's peak; it compiles (model in
            one process, blocks in a distributed one) only when the time saved exceeds a first compile.

A first compile costs tens of seconds on a CPU (dynamo traces the Python, inductor writes and builds C++
or Triton kernels). Inductor keeps what it built in scratchlm's cache directory, keyed by the graph, so a
second run of the same shape traces again (seconds) but builds nothing. `auto` still counts a first
compile: its choice must not depend on the cache, or a run would not repeat bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from scratchlm.config import Config
from scratchlm.errors import ScratchError
from scratchlm.model import flops_per_token
from scratchlm.parallel.parallelize import keep_kernels_in_cache
from scratchlm.parallel.world import ParallelDims
from scratchlm.train.stage import LossOutput

LossFn = Callable[[nn.Module, dict[str, torch.Tensor]], LossOutput]

# What eager training reaches of the device's peak, roughly, per device type. CPUs differ most: the tiny
# preset's bf16 step reaches 15% of the measured peak on a Xeon with AMX (its matrix peak is high, its
# elementwise work is not) and 42% on an EPYC with avx512_bf16. The CPU figure leans low: overestimating the
# eager time favours compiling, which is the right side to err on for the long runs where it matters.
EAGER_MFU = {"cpu": 0.2, "cuda": 0.4}
# Share of an eager step's time that compiling saves. Measured on a CPU (benchmarks/README.md): the whole
# model with its loss, 20-28% at the tiny shape in bf16 (10.5-11k -> 13.5-15k tokens/s); blocks alone, 3%,
# since the loss and the glue between blocks stay eager. On a GPU, where eager elementwise kernels weigh
# more, per-block compile is reported to save about a fifth.
SAVED = {"cpu": {"model": 0.2, "blocks": 0.03}, "cuda": {"model": 0.25, "blocks": 0.2}}
# A first compile, in seconds, on a 2-core CPU: a fixed part (tracing, deriving the backward, building the
# kernels of the embedding, head and loss) and a part per block in the graph (model mode inlines them all).
# The tiny preset's (4 blocks) measured 53 s of CPU time, 62 s with the dynamic width, half of it in the
# C++ compiler's parallel processes.
FIRST_COMPILE_SECONDS = 20.0
FIRST_COMPILE_SECONDS_PER_BLOCK = 4.0


def first_compile_seconds(mode: str, n_layers: int) -> float:
    return FIRST_COMPILE_SECONDS + FIRST_COMPILE_SECONDS_PER_BLOCK * (n_layers if mode == "model" else 1)


def choose_compile(cfg: Config, dims: ParallelDims, device: torch.device, peak: float | None) -> tuple[str, str | None]:
    """-> (off | model | blocks, a one-line note when auto chose). peak: this device's FLOP/s (None: unknown).

    model is refused under data, tensor or pipeline parallel: their collectives and schedules run between
    blocks and need the blocks compiled one by one."""
    t = cfg.train
    one_process = dims.world_size == 1
    if t.compile == "model" and not one_process:
        raise ScratchError(f"train.compile model compiles one process's whole model and loss, not a layout of "
                           f"{dims.world_size} processes ({dims}); use --train.compile blocks or auto")
    if t.compile != "auto":
        return t.compile, None
    mode = "model" if one_process else "blocks"
    compile_s = first_compile_seconds(mode, cfg.model.n_layers)
    if peak is None:
        return mode, f"compile auto: {mode} (this device's peak is unknown; a long run repays ~{compile_s:.0f} s)"
    flops = t.max_steps * t.global_batch_tokens * flops_per_token(cfg.model, t.seq_len) / dims.world_size
    kind = "cuda" if device.type == "cuda" else "cpu"
    eager_s = flops / (peak * EAGER_MFU[kind])
    saved_s = eager_s * SAVED[kind][mode]
    if saved_s < compile_s:
        return "off", (f"compile auto: off (~{eager_s:.0f} s of eager training would save ~{saved_s:.0f} s "
                       f"compiled, less than a first compile of ~{compile_s:.0f} s); --train.compile {mode} forces it")
    return mode, (f"compile auto: {mode} (~{eager_s:.0f} s of eager training, ~{saved_s:.0f} s shorter compiled, "
                  f"for a first compile of ~{compile_s:.0f} s); --train.compile off skips it")


def compile_loss(loss: LossFn) -> LossFn:
    """The stage's loss (the model's forward and the loss, hence their backward) as compiled graphs.

    The sequence width is dynamic from the first call: SFT's micro-batches end after their last trained
    token, so their widths vary, and one graph then serves them all instead of a compile per width."""
    keep_kernels_in_cache()
    compiled = torch.compile(loss)

    def run(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        for tensor in batch.values():
            if tensor.dim() > 1:
                torch._dynamo.maybe_mark_dynamic(tensor, 1)
        return compiled(model, batch)

    return run
