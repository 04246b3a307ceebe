"""The one training loop. A stage is a source of batches and a loss (pretraining: windows of token
shards; SFT: conversations with only the assistant's tokens trained; both: next-token cross-entropy);
this loop owns everything else:

    for each optimizer step:
        lr <- schedule(step)
        batch <- the stage's batch for this step (this data-parallel rank's share)
        N <- units the loss averages over (trained tokens), summed over the whole global batch
        for each micro-batch: loss = stage loss summed over its units x dp / N; backward
          (with pipeline parallel, the pipeline schedule's step does the micro-batches instead)
        gradient norm (over all shards and stages); not finite: skip the update, count it
        clip; AdamW step
        every log_every:  losses to metrics.jsonl + TensorBoard + progress bar; spike/plateau watch
        every eval_every: validation loss (sum over a fixed set of windows / their trained tokens), and with
                          train.eval_tasks the tasks' scores (scratchlm.train.task_scores)
        every save_every: checkpoint (after the watch has seen every loss up to it)
    with train.max_minutes: after the first steps, max_steps becomes the steps that fit the budget

A stage may bring a companion (scratchlm.train.companion: PPO's value model), a second model that its loss
also trains: it takes the same learning rate, its own clip and AdamW step (skipped with the model's), and a
checkpoint beside each of the model's.

Why divide by N and not average per micro-batch: once a mask decides which tokens are trained, a
micro-batch of short answers holds fewer of them, and a mean per micro-batch would weight each of
its tokens more. Summing and dividing by the global count gives every trained token the same weight,
so one micro-batch, four micro-batches and FSDP on two ranks compute the same loss and gradients;
data-parallel gradient averaging is undone by the factor dp. A micro-batch with no trained token
adds 0, never a NaN.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor
from tqdm import tqdm

from scratchlm.config import Config, budget_step
from scratchlm.hardware import peak_flops
from scratchlm.model import flops_per_token
from scratchlm.parallel.parallelize import set_gradient_sync
from scratchlm.parallel.pipeline import Pipeline
from scratchlm.parallel.world import World
from scratchlm.run import CONFIG_FILE, read_config
from scratchlm.train.checkpoint import save_checkpoint
from scratchlm.train.companion import Companion
from scratchlm.train.compile import compile_loss
from scratchlm.train.metrics import LossWatch, MetricsLog, TrainingDiverged, plot_run
from scratchlm.train.optim import lr_at
from scratchlm.train.stage import Batch, Stage

# What a validation also runs when train.eval_tasks is set (scratchlm.train.task_scores): the model and the step
# -> {"eval/<task>/<metric>": score}, on the logging rank.
TaskScoresFn = Callable[[nn.Module, int], dict[str, float | None]]
MAX_SKIPPED_IN_A_ROW = 3  # non-finite gradients this many steps running mean the run has diverged
# Share of train.max_minutes left for what the steps' pace does not show: validations, checkpoints, plots.
BUDGET_RESERVE = 0.05


def clip_grad_norm(params: list[nn.Parameter], max_norm: float, world: World) -> tuple[torch.Tensor, bool]:
    """The norm of the whole model's gradient, and whether it is finite; clips only a finite one.

    Sharded gradients (DTensors) give their norm over all shards; pipeline stages each hold some layers,
    so their squared norms are summed over pp. Every rank gets the same norm, so all skip alike."""
    grads = [p.grad for p in params if p.grad is not None]
    total = nn.utils.get_total_norm(grads)
    if isinstance(total, DTensor):
        total = total.full_tensor()
    if world.dims.pp > 1:
        squared = total**2
        dist.all_reduce(squared, group=world.submesh("pp").get_group())
        total = squared.sqrt()
    finite = bool(torch.isfinite(total))  # one scalar to the host per step: the price of never stepping on NaN
    if finite:
        nn.utils.clip_grads_with_norm_(params, max_norm, total)
    return total, finite


@dataclass
class Pending:
    """A step's numbers, kept as tensors until the next log step so the loop never waits on .item()."""

    step: int
    loss: torch.Tensor
    grad_norm: torch.Tensor
    lr: float
    tokens: int  # read so far, this step included
    step_tokens: int  # read by this step: its rows as the stage cut them, over the data-parallel ranks
    skipped: bool
    extra: dict[str, float]  # the batch source's numbers
    values: dict[str, torch.Tensor]  # the loss's other values, scaled as the loss is


class Trainer:
    def __init__(self, cfg: Config, run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                 stage: Stage, world: World, start_step: int = 0, state: dict[str, Any] | None = None,
                 pipeline: Pipeline | None = None, autocast: bool = True, peak: float | None = None,
                 task_scores: TaskScoresFn | None = None) -> None:
        """world: this process's place in the run (one process, or a rank of a torchrun job); it gives the
        device, the data-parallel size and whether this rank logs. pipeline: the schedule that replaces
        forward/backward when the model (then a ModuleList of stages) is pipelined.
        autocast: False when FSDP's mixed-precision policy already computes in bf16.
        peak: the device's FLOP/s for MFU, as launch measured it once for all ranks (None: look it up).
        task_scores: what each validation also scores (train.eval_tasks), on the logging rank."""
        self.cfg, self.run_dir, self.model, self.optimizer = cfg, Path(run_dir), model, optimizer
        self.task_scores = task_scores
        self.stage, self.world, self.pipeline, self.device = stage, world, pipeline, world.device
        self.params = [p for p in model.parameters() if p.requires_grad]
        # A second model that the stage trains from the same loss (PPO's value model), if any.
        # Restored with the model's checkpoint when resuming (scratchlm.train.launch).
        self.companion: Companion | None = getattr(stage, "companion", None)
        # train.compile model (as launch resolved it): the training loss runs compiled; validation stays eager,
        # since its forward-only graph would be a second compile for a small share of the steps.
        self.compiled_loss = compile_loss(stage.loss) if cfg.train.compile == "model" else None
        self.step = start_step
        self.state = {"tokens": 0, "skipped_steps": 0, **(state or {})}
        self.skipped_in_a_row = 0
        self.is_main = world.is_main
        t = cfg.train
        self.autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if t.precision == "bf16" and autocast
                         else nullcontext())
        self.metrics = MetricsLog(self.run_dir, enabled=self.is_main)
        self.metrics.truncate_after(start_step)
        self.watch = LossWatch(cfg.optim.warmup_steps, cfg.optim.lr)
        self.flops_per_token = flops_per_token(cfg.model, t.seq_len)
        self.peak = peak or t.peak_flops or peak_flops(self.device, t.precision)
        if self.peak is None and self.is_main:
            tqdm.write(f"note: the bf16 peak of '{torch.cuda.get_device_name(self.device)}' is not known, so MFU is "
                       "not reported; give it with --train.peak_flops (FLOP/s per GPU)")

    def _sum_over_batch(self, values: list[float]) -> list[float]:
        """Sum per-rank numbers over the data-parallel ranks (World.sum_over_batch), in one collective."""
        if not self.world.distributed:
            return values
        return self.world.sum_over_batch(torch.tensor(values, dtype=torch.float64, device=self.device)).tolist()

    def _moved(self, batch: Batch) -> Batch:
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def train_step(self) -> Pending:
        cfg = self.cfg
        lr = lr_at(self.step, cfg.optim, cfg.train.max_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.companion is not None:
            self.companion.set_lr(lr)
        batch = self.stage.batch_for(self.step)
        micro = [batch] if self.pipeline is not None else self.stage.micro_batches(batch, cfg.train.micro_batch_size)
        # The tokens the forward reads, for tokens/s, MFU and the tokens trained: pretraining's rows are full
        # (global_batch_tokens), while SFT's and RL's end where their text does, well short of the budget.
        count, read = self._sum_over_batch([self.stage.count(batch), sum(part["inputs"].numel() for part in micro)])
        scale = self.world.dims.dp / max(count, 1)  # data-parallel averaging x dp, then / the global count
        sums: dict[str, torch.Tensor] = {}
        if self.pipeline is not None:
            with self.autocast:
                total = self.pipeline.step(batch["inputs"].to(self.device), batch["targets"].to(self.device), scale)
        else:
            loss_fn = self.compiled_loss or self.stage.loss
            total = torch.zeros((), device=self.device)
            for i, part in enumerate(micro):
                set_gradient_sync(self.model, i == len(micro) - 1)
                if self.companion is not None:
                    self.companion.set_gradient_sync(i == len(micro) - 1)
                with self.autocast:
                    loss, values = loss_fn(self.model, self._moved(part))
                (loss * scale).backward()
                total += loss.detach() * scale
                for key, value in values.items():
                    sums[key] = sums.get(key, 0) + value.detach().float() * scale
        grad_norm, finite = clip_grad_norm(self.params, cfg.optim.grad_clip or float("inf"), self.world)
        if self.companion is not None:  # clipped on its own; a non-finite gradient in either skips both
            companion_norm, companion_finite = clip_grad_norm(self.companion.params, cfg.optim.grad_clip or
                                                              float("inf"), self.world)
            if finite and not companion_finite:
                grad_norm, finite = companion_norm, False
        skipped = not finite or count == 0
        if skipped:
            self._skip(grad_norm, count)
        else:
            self.optimizer.step()
            if self.companion is not None:
                self.companion.step()
            self.skipped_in_a_row = 0
        self.optimizer.zero_grad(set_to_none=True)
        if self.companion is not None:
            self.companion.zero_grad()
        self.step += 1
        self.state["tokens"] += int(read)
        return Pending(self.step, total, grad_norm, lr, self.state["tokens"], int(read), skipped,
                       self.stage.log_values(self.step - 1), sums)

    def _skip(self, grad_norm: torch.Tensor, count: float) -> None:
        """Leave weights and optimizer state untouched: the step's batch is consumed, its update is not."""
        self.state["skipped_steps"] += 1
        self.skipped_in_a_row += 1
        why = "no trained token in the batch" if count == 0 else f"gradient norm {grad_norm.item()}"
        if self.is_main:
            tqdm.write(f"warning: step {self.step + 1} skipped ({why}); {self.state['skipped_steps']} skipped so far")
        if count and self.skipped_in_a_row >= MAX_SKIPPED_IN_A_ROW:
            raise TrainingDiverged(
                f"the gradient was not finite for {self.skipped_in_a_row} steps in a row (up to step {self.step + 1}): "
                "training diverged. The last good checkpoint is kept; resume from it with a lower --optim.lr "
                f"(now {self.optimizer.param_groups[0]['lr']:.3g}) or more --optim.warmup_steps")

    @torch.no_grad()
    def validation(self) -> dict[str, float]:
        """Loss (and the loss's other values) summed over the fixed validation set and divided by its units,
        over all ranks: {"val_loss": ..., "val_<value>": ...}."""
        self.model.eval()
        sums: dict[str, torch.Tensor] = {"loss": torch.zeros((), dtype=torch.float64, device=self.device)}
        count = 0
        for batch in self.stage.validation:
            with self.autocast:
                if self.pipeline is not None:
                    values = {"loss": self.pipeline.eval(batch["inputs"].to(self.device),
                                                         batch["targets"].to(self.device))}
                    count += self.stage.count(batch) if self.pipeline.has_last else 0
                else:
                    loss, values = self.stage.loss(self.model, self._moved(batch))
                    values = {"loss": loss, **values}
                    count += self.stage.count(batch)
            for key, value in values.items():
                sums[key] = sums.get(key, 0) + value.detach().double()
        self.model.train()
        names = list(sums)
        totals = torch.stack([sums[k] for k in names] + [torch.tensor(float(count), dtype=torch.float64,
                                                                      device=self.device)])
        if self.world.distributed:  # tensor-parallel copies count in every sum alike and cancel in the ratios
            dist.all_reduce(totals)
        *values, count = totals.tolist()
        return {f"val_{k}": v / max(count, 1) for k, v in zip(names, values, strict=True)}

    def _flush(self, pending: list[Pending], seconds: float, val: dict[str, float | None] | None, bar: tqdm) -> None:
        """Materialise the pending steps' numbers: watch them, log them, show them. val: the validation's numbers
        (val_*) and the task scores (eval/...), which go into the last step's record."""
        if not pending:
            return
        tokens_per_s = sum(p.step_tokens for p in pending) / max(seconds, 1e-9)
        world_size = self.world.dims.world_size
        mfu = tokens_per_s * self.flops_per_token / (self.peak * world_size) if self.peak else None
        records = []
        losses = self.world.mean_over_batch(torch.stack([p.loss for p in pending])).tolist()
        names = sorted(pending[0].values)
        values = [[]] * len(pending)
        if names:  # the loss's other values, averaged over the global batch as the loss is
            stacked = torch.stack([torch.stack([p.values[k] for k in names]) for p in pending])
            values = self.world.mean_over_batch(stacked).tolist()
        for p, loss, row in zip(pending, losses, values, strict=True):
            record = {"step": p.step, "loss": round(loss, 5) if math.isfinite(loss) else None, "lr": p.lr,
                      "grad_norm": round(p.grad_norm.item(), 5) if not p.skipped else None,
                      "tokens_per_s": round(tokens_per_s, 1), "mfu": round(mfu, 4) if mfu is not None else None,
                      "tokens": p.tokens, **p.extra, **{k: round(v, 5) for k, v in zip(names, row, strict=True)}}
            if p.skipped:
                record["skipped"] = True
            else:
                warning = self.watch.check(p.step, loss, p.lr)
                if warning:
                    tqdm.write(f"warning: {warning}")
            records.append(record)
        if val is not None:  # task scores (eval/...) as computed: `scratchlm eval` gives the same numbers
            records[-1].update({k: round(v, 5) if k.startswith("val_") else v for k, v in val.items()})
        self.metrics.write(records)
        last = records[-1]
        shown = {"loss": f"{last['loss']:.3f}" if last["loss"] is not None else "skipped", "lr": f"{last['lr']:.2e}",
                 "tok/s": f"{tokens_per_s:,.0f}"}
        if mfu is not None:
            shown["mfu"] = f"{mfu:.1%}"
        if val is not None:
            shown["val"] = f"{val['val_loss']:.3f}"
        bar.set_postfix(shown, refresh=False)
        bar.update(len(pending))
        pending.clear()

    def _fit_budget(self, started: float, paced_from: tuple[int, float], bar: tqdm) -> None:
        """train.max_minutes: lower max_steps to the steps that fit in what is left of the budget, at the pace of
        the steps since the first of this process (which compiled). Rank 0 decides for all; config.yaml keeps
        the count, so that a resume runs the same schedule."""
        t = self.cfg.train
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        pace = (now - paced_from[1]) / (self.step - paced_from[0])
        left = t.max_minutes * 60 * (1 - BUDGET_RESERVE) - (now - started)
        steps = self.world.from_main(lambda: min(t.max_steps, self.step + max(0, int(left / pace))))
        if self.cfg.stage == "rl":  # a checkpoint must fall between rollouts: end on the current one's last step
            k = self.cfg.rl.steps_per_rollout
            steps = min(t.max_steps, -(-steps // k) * k)
        if steps >= t.max_steps:
            return
        if self.is_main:
            tqdm.write(f"train.max_minutes {t.max_minutes:g}: {steps} steps of {t.max_steps} fit, at "
                       f"{pace:.2f} s per step after {now - started:.0f} s for the first {self.step}")
            stored = read_config(self.run_dir)
            stored.train.max_steps = steps
            stored.save(self.run_dir / CONFIG_FILE)
        t.max_steps = bar.total = steps
        bar.refresh()

    def save(self) -> None:
        # Under torchrun every rank calls it: each writes its own shards. The companion first: a complete
        # checkpoint of the run then always has its companion's.
        if self.companion is not None:
            self.companion.save(self.run_dir, self.step, self.cfg.train.keep_checkpoints)
        save_checkpoint(self.run_dir, self.step, self.model, self.optimizer, self.state,
                        self.cfg.train.keep_checkpoints)

    def fit(self) -> dict[str, float]:
        """Train to train.max_steps; return the last validation loss and step."""
        t = self.cfg.train
        self.model.train()
        pending: list[Pending] = []
        last_val = None
        bar = tqdm(total=t.max_steps, initial=self.step, desc=self.stage.name, unit="step", dynamic_ncols=True,
                   disable=not self.is_main)
        tick = started = time.perf_counter()
        # train.max_minutes: the step that fixes the run's length, if this process times at least one step before it
        decide_at = budget_step(self.cfg)
        decide_at = decide_at if t.max_minutes and self.step + 1 < decide_at else None
        paced_from = None  # (step, time) at the end of this process's first step
        try:
            while self.step < t.max_steps:
                pending.append(self.train_step())
                if decide_at is not None:
                    paced_from = paced_from or (self.step, time.perf_counter())
                    if self.step == decide_at:
                        self._fit_budget(started, paced_from, bar)
                step, done = self.step, self.step == t.max_steps
                evaluate, save = step % t.eval_every == 0 or done, step % t.save_every == 0 or done
                if step % t.log_every == 0 or evaluate or save:
                    if self.device.type == "cuda":
                        torch.cuda.synchronize()  # the GPU runs ahead of Python; time the work, not the queueing
                    seconds = time.perf_counter() - tick
                    # A stage without a validation set (RL: its measure is an evaluation of the finished run) logs none.
                    val = self.validation() if evaluate and self.stage.validation else None
                    if val is not None:
                        last_val = val["val_loss"]
                        if self.task_scores is not None:
                            val.update(self.task_scores(self.model, step))
                    self._flush(pending, seconds, val, bar)
                    if save:
                        self.save()
                        if self.is_main:
                            plot_run(self.run_dir)
                    tick = time.perf_counter()
        finally:
            bar.close()
            self.metrics.close()
        return {"val_loss": last_val if last_val is not None else float("nan"), "step": self.step}
