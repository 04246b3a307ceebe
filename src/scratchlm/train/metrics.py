"""What a run reports: metrics.jsonl (one JSON object per optimizer step), TensorBoard, plots, and a
watch on the loss that warns early when training goes wrong."""

from __future__ import annotations

import json
import math
from collections import deque
from pathlib import Path
from typing import Any

from scratchlm.errors import ScratchError


class TrainingDiverged(ScratchError):
    """The loss became NaN or Inf."""


class MetricsLog:
    """Appends metrics to RUN_DIR/metrics.jsonl and to TensorBoard under RUN_DIR/tensorboard."""

    def __init__(self, run_dir: Path, enabled: bool = True) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.enabled = enabled
        self.tb = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter  # slow import; only the logging rank pays it

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))

    def truncate_after(self, step: int) -> None:
        """On resume, drop records a crashed run wrote past its last checkpoint, so steps stay unique."""
        if not self.enabled or not self.path.exists():
            return
        kept = [json.dumps(r) for r in _parse_lines(self.path) if r["step"] <= step]
        self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, records: list[dict[str, Any]]) -> None:
        if not self.enabled or not records:
            return
        with self.path.open("a") as f:
            for record in records:
                f.write(json.dumps(record) + "\n")
                for key, value in record.items():
                    if key != "step" and isinstance(value, (int, float)):
                        self.tb.add_scalar(key, value, record["step"])
        self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    return _parse_lines(path) if path.exists() else []


def _parse_lines(path: Path) -> list[dict[str, Any]]:
    """Every complete record; a line cut short by a crash mid-write is skipped, not fatal."""
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def plot_run(run_dir: Path) -> list[Path]:
    """plots/loss.png (train and validation loss) and plots/lr.png from metrics.jsonl; for an RL run also
    plots/reward.png (mean reward and pass@1 of each step's samples, KL to the reference)."""
    # The object-oriented API without pyplot: files only, never a window, and the host process's backend (a
    # notebook's inline plots) left as it is.
    from matplotlib.figure import Figure

    records = read_metrics(run_dir)
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    lr = [(r["step"], r["lr"]) for r in records if "lr" in r]
    if not train:
        return []
    out = Path(run_dir) / "plots"
    out.mkdir(exist_ok=True)

    fig = Figure(figsize=(7, 4.2), dpi=120)
    ax = fig.subplots()
    ax.plot(*zip(*train, strict=True), lw=0.8, alpha=0.45, color="tab:blue", label="train (per step)")
    if len(train) >= 20:  # a moving average shows the trend under the per-batch noise
        k = max(5, len(train) // 40)
        steps, losses = zip(*train, strict=True)
        smooth = [sum(losses[max(0, i - k + 1):i + 1]) / len(losses[max(0, i - k + 1):i + 1])
                  for i in range(len(losses))]
        ax.plot(steps, smooth, lw=1.6, color="tab:blue", label=f"train ({k}-step mean)")
    if val:
        ax.plot(*zip(*val, strict=True), "o-", lw=1.6, ms=3.5, color="tab:orange", label="validation")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy loss (nats/token)")
    ax.set_title(f"loss: {Path(run_dir).name}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss.png")

    fig = Figure(figsize=(7, 3), dpi=120)
    ax = fig.subplots()
    ax.plot(*zip(*lr, strict=True), color="tab:green")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    ax.set_title("learning-rate schedule: warmup, then cosine decay")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "lr.png")
    written = [out / "loss.png", out / "lr.png"]
    if any("reward" in r for r in records):
        written.append(_plot_rewards(records, out / "reward.png"))
    return written


def _plot_rewards(records: list[dict[str, Any]], path: Path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.2), dpi=120)
    ax = fig.subplots()
    for key, color in (("reward", "tab:blue"), ("pass@1", "tab:orange")):
        points = [(r["step"], r[key]) for r in records if key in r]
        if points:
            ax.plot(*zip(*points, strict=True), lw=1.2, color=color, label=f"{key} of the step's samples")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("reward")
    ax.grid(alpha=0.3)
    kl = [(r["step"], r["kl"]) for r in records if "kl" in r]
    if kl:
        right = ax.twinx()
        right.plot(*zip(*kl, strict=True), lw=1.0, ls="--", color="tab:red", label="KL to the reference")
        right.set_ylabel("KL per token (nats)")
        right.legend(loc="lower right")
    ax.legend(loc="upper left")
    ax.set_title("rewards of the policy's own samples")
    fig.tight_layout()
    fig.savefig(path)
    return path


class LossWatch:
    """Stops on NaN/Inf and warns on spikes and plateaus, naming the learning rate as first suspect.

    A plateau is only reported while the learning rate is above half its peak: late in the cosine
    decay a flattening curve is expected, early on it means the rate is wrong.
    """

    def __init__(self, warmup_steps: int, peak_lr: float = 0.0, window: int = 50) -> None:
        self.warmup = warmup_steps
        self.peak_lr = peak_lr
        self.window = window
        self.ema: float | None = None
        self.recent: deque[float] = deque(maxlen=2 * window)
        self.quiet_until = 0  # one warning per window, not one per step

    def check(self, step: int, loss: float, lr: float) -> str | None:
        """Return a warning to show, or None. Raises TrainingDiverged on a non-finite loss."""
        if not math.isfinite(loss):
            raise TrainingDiverged(
                f"loss is {loss} at step {step}: training diverged. The last good checkpoint is kept; "
                f"resume from it with a lower --optim.lr (now {lr:.3g}) or more --optim.warmup_steps")
        warning = None
        if self.ema is not None and step > self.warmup and step >= self.quiet_until:
            if loss > 1.5 * self.ema and loss - self.ema > 0.5:
                warning = (f"loss spiked to {loss:.3f} at step {step} (recent average {self.ema:.3f}); if spikes "
                           f"repeat, lower --optim.lr (now {lr:.3g}) or --optim.grad_clip")
            elif len(self.recent) == self.recent.maxlen and lr >= 0.5 * self.peak_lr:
                older = sum(list(self.recent)[:self.window]) / self.window
                newer = sum(list(self.recent)[self.window:]) / self.window
                if newer > older - 0.002 * abs(older):
                    warning = (f"loss stopped going down ({older:.3f} -> {newer:.3f} over the last "
                               f"{2 * self.window} steps); the learning rate (now {lr:.3g}) is the first suspect: "
                               "too high and the loss bounces, too low and it crawls")
        if warning:
            self.quiet_until = step + 2 * self.window
        self.ema = loss if self.ema is None else 0.9 * self.ema + 0.1 * loss
        self.recent.append(loss)
        return warning
