"""A second model that a stage trains beside the run's own, from the same loss: PPO's value model.

The stage's loss uses it, so one backward fills both models' gradients; the loop (scratchlm.train.trainer)
then clips each model's gradient on its own, steps both at the same learning rate or skips both, and saves
the companion beside every checkpoint of the run, before it (a complete checkpoint of the run always has
its companion's). The companion lives in its own run directory inside the run, RUN_DIR/<name>/, with its
config.yaml and tokenizer.json, so it is a run like any other (a value model can be exported or scored).
The run's own checkpoints hold the policy alone, which every command that reads a run loads.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from scratchlm.config import Config
from scratchlm.errors import ScratchError
from scratchlm.parallel.parallelize import set_gradient_sync
from scratchlm.parallel.world import World
from scratchlm.run import CONFIG_FILE
from scratchlm.tokenizer import TOKENIZER_FILE, BPETokenizer
from scratchlm.train.checkpoint import checkpoint_dirs, load_checkpoint, save_checkpoint
from scratchlm.train.optim import build_optimizer


class Companion:
    def __init__(self, name: str, cfg: Config, model: nn.Module, world: World, tokenizer: BPETokenizer) -> None:
        """cfg: the companion's own config (its model), written to RUN_DIR/<name>/config.yaml."""
        self.name, self.cfg, self.model, self.world, self.tokenizer = name, cfg, model, world, tokenizer
        self.optimizer = build_optimizer(model, cfg.optim)
        self.params = [p for p in model.parameters() if p.requires_grad]

    def run_dir(self, run_dir: Path) -> Path:
        return Path(run_dir) / self.name

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def set_gradient_sync(self, sync: bool) -> None:
        set_gradient_sync(self.model, sync)

    def step(self) -> None:
        self.optimizer.step()

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def save(self, run_dir: Path, step: int, keep: int) -> None:
        """Every rank calls it, as the run's own save; rank 0 writes the companion's config and tokenizer."""
        here = self.run_dir(run_dir)
        if self.world.is_main:
            here.mkdir(parents=True, exist_ok=True)
            self.cfg.save(here / CONFIG_FILE)
            self.tokenizer.save(here / TOKENIZER_FILE)
        save_checkpoint(self.run_dir(run_dir), step, self.model, self.optimizer, {}, keep)

    def load(self, run_dir: Path, step: int) -> None:
        """Restore the companion as it was saved with the run's checkpoint of `step`."""
        here = self.run_dir(run_dir)
        found = {int(p.name.split("_")[1]): p for p in checkpoint_dirs(here)}
        if step not in found:
            raise ScratchError(f"{here} has no checkpoint of step {step} to resume the {self.name} model from "
                               f"(it has {sorted(found) or 'none'}); the run cannot continue; start it again "
                               "in another --out")
        # The companion's RNG state is the run's (saved at the same moment): loading it again changes nothing.
        load_checkpoint(found[step], self.model, self.optimizer)
