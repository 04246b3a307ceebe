"""The run directory: the unit of output that every command reads or writes.

    RUN_DIR/config.yaml      the fully resolved config (repeat the run with --config RUN_DIR/config.yaml)
    RUN_DIR/tokenizer.json   the tokenizer the model was trained with
    RUN_DIR/checkpoints/     step_XXXXXX/ folders (scratchlm.train.checkpoint)
    RUN_DIR/metrics.jsonl    one JSON object per optimizer step
    RUN_DIR/plots/           loss.png, lr.png
    RUN_DIR/tensorboard/     event files for `tensorboard --logdir RUN_DIR`
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from scratchlm.config import Config, load_config
from scratchlm.errors import ScratchError
from scratchlm.model import Transformer, build_model
from scratchlm.tokenizer import BPETokenizer
from scratchlm.train.checkpoint import latest_checkpoint, load_weights

CONFIG_FILE = "config.yaml"
TOKENIZER_FILE = "tokenizer.json"


def read_config(run_dir: Path) -> Config:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise ScratchError(f"{run_dir} is not a run directory (no {CONFIG_FILE}); train one with scratchlm pretrain")
    return load_config(config_file=path)


def _first_difference(a: object, b: object) -> str:
    for f in dataclasses.fields(a):
        if getattr(a, f.name) != getattr(b, f.name):
            return f"{f.name} {getattr(b, f.name)} there, {getattr(a, f.name)} here"
    return ""


def start_run(run_dir: Path, cfg: Config, tokenizer: BPETokenizer, resume: bool, write: bool = True) -> Path | None:
    """Check that run_dir can take this run, then write config.yaml and tokenizer.json (unless write is
    False: the other ranks of a torchrun job only check).

    Returns the checkpoint to resume from, or None to start from step 0. Every refusal happens
    before anything in run_dir is touched.
    """
    run_dir = Path(run_dir)
    ckpt = latest_checkpoint(run_dir)
    if ckpt is not None:
        stored = read_config(run_dir)
        if stored.model != cfg.model:
            raise ScratchError(f"{run_dir} holds a checkpoint of another model (model."
                               f"{_first_difference(cfg.model, stored.model)}); choose another --out")
        stored_tok = BPETokenizer.load(run_dir / TOKENIZER_FILE)
        if stored_tok.fingerprint() != tokenizer.fingerprint():
            raise ScratchError(f"{run_dir} holds a checkpoint trained with another tokenizer; choose another --out "
                               f"or train on data prepared with --data.tokenizer {run_dir / TOKENIZER_FILE}")
        if not resume:
            raise ScratchError(f"{run_dir} already holds checkpoints (latest: {ckpt.name}); pass --resume to "
                               "continue it, or choose another --out")
        if write and stored.train.max_steps != cfg.train.max_steps and not cfg.optim.lr_decay_steps:
            print(f"note: max_steps changed from {stored.train.max_steps} to {cfg.train.max_steps}, so the cosine "
                  "schedule stretches with it; set --optim.lr_decay_steps to keep one schedule across runs")
    if write:
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(run_dir / CONFIG_FILE)
        tokenizer.save(run_dir / TOKENIZER_FILE)
    return ckpt if resume else None


def load_run(run_dir: str | Path, device: torch.device | str = "cpu"
             ) -> tuple[Config, BPETokenizer, Transformer]:
    """The config, tokenizer and latest weights of a run, ready for inference."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ScratchError(f"run directory {run_dir} does not exist")
    cfg = read_config(run_dir)
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise ScratchError(f"{run_dir} has no checkpoint yet; train it first (scratchlm pretrain --out {run_dir})")
    tokenizer = BPETokenizer.load(run_dir / TOKENIZER_FILE)
    model = build_model(cfg.model, device)
    load_weights(model, ckpt)
    return cfg, tokenizer, model.eval()
