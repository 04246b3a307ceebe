"""Checkpoints in a run directory.

    RUN_DIR/checkpoints/step_000200/
        model.safetensors   weights (safetensors: no code runs when loading)
        optimizer.pt        AdamW moments and step counts (loaded with weights_only=True)
        state.json          optimizer step reached (which fixes the data position) and tokens seen
        rng.pt              torch RNG states

A checkpoint is written to step_XXXXXX.tmp and renamed when complete: a crash mid-write leaves
the previous checkpoint as the latest. Only the last `keep` are kept.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from scratchlm.errors import ScratchError

STEP_DIR = re.compile(r"^step_(\d+)$")


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary folders of interrupted writes are ignored)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: Path) -> Path | None:
    dirs = checkpoint_dirs(run_dir)
    return dirs[-1] if dirs else None


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}


def save_checkpoint(run_dir: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer | None,
                    state: dict[str, Any], keep: int) -> Path:
    root = Path(run_dir) / "checkpoints"
    final = root / f"step_{step:06d}"
    tmp = root / f"step_{step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(model_state(model), tmp / "model.safetensors", metadata={"format": "pt"})
    if optimizer is not None:
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    torch.save(rng, tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step, **state}, indent=2))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    for old in checkpoint_dirs(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_weights(model: nn.Module, ckpt: Path) -> None:
    """Load model.safetensors into model, refusing a checkpoint whose tensors do not match."""
    weights = load_file(ckpt / "model.safetensors", device=str(next(model.parameters()).device))
    expected = model.state_dict()
    mismatched = [k for k in expected if k in weights and weights[k].shape != expected[k].shape]
    missing = [k for k in expected if k not in weights]
    if mismatched or missing:
        what = (f"{mismatched[0]} is {tuple(weights[mismatched[0]].shape)}, the model wants "
                f"{tuple(expected[mismatched[0]].shape)}" if mismatched else f"{missing[0]} is missing")
        raise ScratchError(f"checkpoint {ckpt} belongs to another model ({what})")
    model.load_state_dict(weights, strict=True)


def load_checkpoint(ckpt: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
    """Restore weights, optimizer and RNG; return state.json (the step to continue from and more)."""
    load_weights(model, ckpt)
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True, map_location="cpu"))
    rng = torch.load(ckpt / "rng.pt", weights_only=True)
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    return json.loads((ckpt / "state.json").read_text())
