"""The one training loop. A stage is a source of batches and a loss (pretraining: windows of token
shards and next-token cross-entropy); this loop owns everything else:

    for each optimizer step:
        lr <- schedule(step)
        batch <- stage's batches for this step (this data-parallel rank's share)
        for each micro-batch: loss = stage loss / n_micro; backward   (gradient accumulation)
          (with pipeline parallel, the pipeline schedule's step does the micro-batches instead)
        clip gradient norm (over all shards and stages); AdamW step
        every log_every:  losses to metrics.jsonl + TensorBoard + progress bar; NaN/spike/plateau watch
        every eval_every: validation loss
        every save_every: checkpoint (after the watch has seen every loss up to it)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.tensor import DTensor
from tqdm import tqdm

from scratchlm.config import Config
from scratchlm.hardware import peak_flops
from scratchlm.model import flops_per_token
from scratchlm.parallel.parallelize import set_gradient_sync
from scratchlm.parallel.pipeline import Pipeline
from scratchlm.parallel.world import World
from scratchlm.train.checkpoint import save_checkpoint
from scratchlm.train.metrics import LossWatch, MetricsLog, plot_run
from scratchlm.train.optim import lr_at

Batch = tuple[torch.Tensor, torch.Tensor]
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]

class BatchSource(Protocol):
    def batch_for(self, step: int) -> Batch: ...


def token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of predicting each next token, in fp32 whatever the compute precision."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


def next_token_loss(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return token_loss(model(inputs), targets)


def clip_grad_norm(params: list[nn.Parameter], max_norm: float, world: World) -> torch.Tensor:
    """Clip by the norm of the whole model's gradient. Sharded gradients (DTensors) give their norm over
    all shards; pipeline stages each hold some layers, so their squared norms are summed over pp."""
    grads = [p.grad for p in params if p.grad is not None]
    total = nn.utils.get_total_norm(grads)
    if isinstance(total, DTensor):
        total = total.full_tensor()
    if world.dims.pp > 1:
        squared = total**2
        dist.all_reduce(squared, group=world.submesh("pp").get_group())
        total = squared.sqrt()
    nn.utils.clip_grads_with_norm_(params, max_norm, total)
    return total


@dataclass
class Pending:
    """A step's numbers, kept as tensors until the next log step so the loop never waits on .item()."""

    step: int
    loss: torch.Tensor
    grad_norm: torch.Tensor
    lr: float
    tokens: int  # seen so far, this step included


class Trainer:
    def __init__(self, cfg: Config, run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                 batches: BatchSource, val_batches: list[Batch], world: World,
                 loss_fn: LossFn = next_token_loss, start_step: int = 0, state: dict[str, Any] | None = None,
                 pipeline: Pipeline | None = None, autocast: bool = True) -> None:
        """world: this process's place in the run (one process, or a rank of a torchrun job); it gives the
        device, the data-parallel size and whether this rank logs. pipeline: the schedule that replaces
        forward/backward when the model (then a ModuleList of stages) is pipelined.
        autocast: False when FSDP's mixed-precision policy already computes in bf16."""
        self.cfg, self.run_dir, self.model, self.optimizer = cfg, Path(run_dir), model, optimizer
        self.batches, self.val_batches, self.loss_fn = batches, val_batches, loss_fn
        self.world, self.pipeline, self.device = world, pipeline, world.device
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.step = start_step
        self.state = state or {"tokens": 0}
        self.is_main = world.is_main
        t = cfg.train
        self.tokens_per_step = t.global_batch_tokens
        self.micro_batches = t.global_batch_tokens // (t.micro_batch_size * t.seq_len * world.dims.dp)
        self.autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if t.precision == "bf16" and autocast
                         else nullcontext())
        self.metrics = MetricsLog(self.run_dir, enabled=self.is_main)
        self.metrics.truncate_after(start_step)
        self.watch = LossWatch(cfg.optim.warmup_steps, cfg.optim.lr)
        self.flops_per_token = flops_per_token(cfg.model, t.seq_len)
        self.peak = t.peak_flops or peak_flops(self.device, t.precision)
        if self.peak is None and self.is_main:
            tqdm.write(f"note: the bf16 peak of '{torch.cuda.get_device_name(self.device)}' is not known, so MFU is "
                       "not reported; give it with --train.peak_flops (FLOP/s per GPU)")

    def train_step(self) -> Pending:
        cfg = self.cfg
        lr = lr_at(self.step, cfg.optim, cfg.train.max_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        inputs, targets = self.batches.batch_for(self.step)
        if self.pipeline is not None:
            with self.autocast:
                total = self.pipeline.step(inputs.to(self.device), targets.to(self.device))
        else:
            mb = cfg.train.micro_batch_size
            total = torch.zeros((), device=self.device)
            for i in range(self.micro_batches):
                x = inputs[i * mb:(i + 1) * mb].to(self.device, non_blocking=True)
                y = targets[i * mb:(i + 1) * mb].to(self.device, non_blocking=True)
                set_gradient_sync(self.model, i == self.micro_batches - 1)
                with self.autocast:
                    loss = self.loss_fn(self.model, x, y) / self.micro_batches
                loss.backward()
                total += loss.detach()
        grad_norm = clip_grad_norm(self.params, cfg.optim.grad_clip or float("inf"), self.world)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.state["tokens"] += self.tokens_per_step
        return Pending(self.step, total, grad_norm, lr, self.state["tokens"])

    @torch.no_grad()
    def validation_loss(self) -> float:
        self.model.eval()
        losses = []
        for inputs, targets in self.val_batches:
            x, y = inputs.to(self.device), targets.to(self.device)
            with self.autocast:
                losses.append(self.pipeline.eval(x, y) if self.pipeline is not None else self.loss_fn(self.model, x, y))
        self.model.train()
        return self._mean_over_ranks(torch.stack(losses).mean()).item()

    def _mean_over_ranks(self, value: torch.Tensor) -> torch.Tensor:
        return self.world.mean_over_batch(value)

    def _flush(self, pending: list[Pending], seconds: float, val_loss: float | None, bar: tqdm) -> None:
        """Materialise the pending steps' numbers: watch them, log them, show them."""
        if not pending:
            return
        tokens_per_s = self.tokens_per_step * len(pending) / max(seconds, 1e-9)
        world_size = self.world.dims.world_size
        mfu = tokens_per_s * self.flops_per_token / (self.peak * world_size) if self.peak else None
        records = []
        losses = self._mean_over_ranks(torch.stack([p.loss for p in pending])).tolist()
        for p, loss in zip(pending, losses, strict=True):
            warning = self.watch.check(p.step, loss, p.lr)
            if warning:
                tqdm.write(f"warning: {warning}")
            records.append({"step": p.step, "loss": round(loss, 5), "lr": p.lr,
                            "grad_norm": round(p.grad_norm.item(), 5), "tokens_per_s": round(tokens_per_s, 1),
                            "mfu": round(mfu, 4) if mfu is not None else None, "tokens": p.tokens})
        if val_loss is not None:
            records[-1]["val_loss"] = round(val_loss, 5)
        self.metrics.write(records)
        last = records[-1]
        shown = {"loss": f"{last['loss']:.3f}", "lr": f"{last['lr']:.2e}", "tok/s": f"{tokens_per_s:,.0f}"}
        if mfu is not None:
            shown["mfu"] = f"{mfu:.1%}"
        if val_loss is not None:
            shown["val"] = f"{val_loss:.3f}"
        bar.set_postfix(shown, refresh=False)
        bar.update(len(pending))
        pending.clear()

    def save(self) -> None:
        # Under torchrun every rank calls it: each writes its own shards.
        save_checkpoint(self.run_dir, self.step, self.model, self.optimizer, self.state,
                        self.cfg.train.keep_checkpoints)

    def fit(self) -> dict[str, float]:
        """Train to train.max_steps; return the last losses."""
        t = self.cfg.train
        self.model.train()
        pending: list[Pending] = []
        last_val = None
        bar = tqdm(total=t.max_steps, initial=self.step, desc="pretrain", unit="step", dynamic_ncols=True,
                   disable=not self.is_main)
        tick = time.perf_counter()
        try:
            while self.step < t.max_steps:
                pending.append(self.train_step())
                step, done = self.step, self.step == t.max_steps
                evaluate, save = step % t.eval_every == 0 or done, step % t.save_every == 0 or done
                if step % t.log_every == 0 or evaluate or save:
                    if self.device.type == "cuda":
                        torch.cuda.synchronize()  # the GPU runs ahead of Python; time the work, not the queueing
                    seconds = time.perf_counter() - tick
                    last_val = self.validation_loss() if evaluate else None
                    self._flush(pending, seconds, last_val, bar)
                    if save:
                        self.save()
                        if self.is_main:
                            plot_run(self.run_dir)
                    tick = time.perf_counter()
        finally:
            bar.close()
            self.metrics.close()
        return {"val_loss": last_val if last_val is not None else float("nan"), "step": self.step}
