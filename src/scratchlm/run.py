"""The run directory: the unit of output that every command reads or writes.

    RUN_DIR/config.yaml      the fully resolved config (repeat the run with --config RUN_DIR/config.yaml)
    RUN_DIR/tokenizer.json   the tokenizer the model was trained with
    RUN_DIR/special_tokens.json  which tokens are bos, eos, pad, for an imported model (absent: ours)
    RUN_DIR/checkpoints/     step_NNNNNN/ folders (scratchlm.train.checkpoint)
    RUN_DIR/metrics.jsonl    one JSON object per optimizer step
    RUN_DIR/plots/           loss.png, lr.png
    RUN_DIR/tensorboard/     event files for `tensorboard --logdir RUN_DIR`
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from scratchlm import atomic
from scratchlm.config import Config, ModelConfig, load_config
from scratchlm.errors import ScratchError
from scratchlm.hardware import check_memory
from scratchlm.model import Transformer, build_model, num_params
from scratchlm.tokenizer import TOKENIZER_FILE, BPETokenizer
from scratchlm.train.checkpoint import is_sharded, latest_checkpoint, load_weights

CONFIG_FILE = "config.yaml"
# What fixes the stream of training examples: resuming with another value would skip or repeat data.
RESUME_KEYS = ("train.seq_len", "train.global_batch_tokens", "train.seed", "data.source", "data.seed", "rl.group_size",
               "rl.steps_per_rollout", "ppo.epochs")
SPECIAL_TOKENS_FILE = "special_tokens.json"


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


def load_tokenizer(run_dir: Path) -> BPETokenizer:
    """The run's tokenizer, with the conventions an imported model brought, if any: its bos/eos/pad
    tokens, whether a prompt starts with bos, and every id that ends a sequence."""
    conventions_file = Path(run_dir) / SPECIAL_TOKENS_FILE
    conventions = None
    if conventions_file.is_file():
        try:
            conventions = json.loads(conventions_file.read_text())
        except ValueError as exc:
            raise ScratchError(f"{conventions_file} is not valid JSON ({exc}); import the model again") from None
    return BPETokenizer.load(Path(run_dir) / TOKENIZER_FILE, conventions)


def check_run_dir(run_dir: Path, cfg: Config, resume: bool, announce: bool = True) -> Path | None:
    """Check that run_dir can take this run, before any data is prepared or anything is written.
    Every rank of a torchrun job checks, so all refuse alike; only one announces.

    Returns the checkpoint to resume from, or None to start from step 0.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ScratchError(f"--out {run_dir} is a file, not a run directory; choose another --out")
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        if resume:  # a typo in --out must not silently start a new run
            where = "does not exist" if not run_dir.exists() else "holds no checkpoint"
            raise ScratchError(f"--resume: {run_dir} {where}; drop --resume to start a new run there")
        return None
    stored = read_config(run_dir)
    # The vocabulary comes from the tokenizer, which start_run compares once it is known.
    ours = dataclasses.replace(cfg.model, vocab_size=stored.model.vocab_size)
    if stored.model != ours:
        raise ScratchError(f"{run_dir} holds a checkpoint of another model (model."
                           f"{_first_difference(ours, stored.model)}); choose another --out")
    if not resume:
        raise ScratchError(f"{run_dir} already holds checkpoints (latest: {ckpt.name}); pass --resume to "
                           "continue it, or choose another --out")
    for key in RESUME_KEYS:  # any of these changes which data each step sees
        section, name = key.split(".")
        then, now = getattr(getattr(stored, section), name), getattr(getattr(cfg, section), name)
        if then != now:
            raise ScratchError(f"--resume with {key} {now}, but {run_dir} was trained with {then}: the data "
                               f"stream would jump or repeat; resume with --{key} {then}, or start a new run elsewhere")
    if not is_sharded(ckpt) and not (ckpt / "optimizer.pt").is_file():
        raise ScratchError(f"{ckpt} holds weights only (an imported model), not a training state to resume; "
                           "train into another --out")
    if cfg.train.max_minutes:  # the budget chose the run's length when it started; resuming keeps that length
        cfg.train.max_steps = stored.train.max_steps
    if announce and stored.train.max_steps != cfg.train.max_steps and cfg.optim.follows_max_steps:
        print(f"note: max_steps changed from {stored.train.max_steps} to {cfg.train.max_steps}, so the cosine "
              "schedule stretches with it; set --optim.lr_decay_steps to keep one schedule across runs")
    return ckpt


def check_start(run_dir: Path, tokenizer: BPETokenizer, ckpt: Path | None) -> None:
    """Refuse a checkpoint trained with another tokenizer, or a run directory that cannot be written."""
    run_dir = Path(run_dir)
    atomic.check_output_dir(run_dir, "--out")
    if ckpt is not None:
        stored_tok = load_tokenizer(run_dir)
        if stored_tok.fingerprint() != tokenizer.fingerprint():
            raise ScratchError(f"{run_dir} holds a checkpoint trained with another tokenizer; choose another --out "
                               f"or train on data prepared with --data.tokenizer {run_dir / TOKENIZER_FILE}")


def start_run(run_dir: Path, cfg: Config, tokenizer: BPETokenizer) -> None:
    """Write config.yaml and tokenizer.json (after check_start, and after reading what a resumed run continues
    from, so that a refusal leaves the directory as it was)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(run_dir / CONFIG_FILE)
    tokenizer.save(run_dir / TOKENIZER_FILE)


def open_run(run_dir: str | Path) -> tuple[Config, BPETokenizer, Path]:
    """The config, tokenizer and latest checkpoint folder of a trained run, or a clear refusal."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ScratchError(f"run directory {run_dir} does not exist")
    cfg = read_config(run_dir)
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise ScratchError(f"{run_dir} has no checkpoint yet; train it first (scratchlm pretrain --out {run_dir})")
    return cfg, load_tokenizer(run_dir), ckpt


def load_run(run_dir: str | Path, device: torch.device | str = "cpu"
             ) -> tuple[Config, BPETokenizer, Transformer]:
    """The config, tokenizer and latest weights of a run, ready for inference."""
    cfg, tokenizer, ckpt = open_run(run_dir)
    model = inference_model(cfg.model, torch.device(device), f"the model of {run_dir}")
    load_weights(model, ckpt)
    return cfg, tokenizer, model.eval()


def inference_model(cfg: ModelConfig, device: torch.device, what: str,
                    fix: str = "run it on a machine or GPU with more memory") -> Transformer:
    """A plain model of this shape on device, in the default dtype, for weights to be loaded into; refused
    first, in one line, when they cannot fit there."""
    check_memory(num_params(cfg) * torch.get_default_dtype().itemsize, device,
                 f"{what} ({num_params(cfg) / 1e9:.2f}B parameters)", fix)
    return build_model(cfg, device)
