"""Checkpoints in a run directory, in one of two formats.

One process:

    RUN_DIR/checkpoints/step_000200/
        model.safetensors   weights (safetensors: no code runs when loading)
        optimizer.pt        AdamW state keyed by parameter name (loaded with weights_only=True)
        state.json          optimizer step reached (which fixes the data position) and tokens seen
        rng.pt              torch RNG states

Several processes (torchrun): the same folder holds a torch.distributed.checkpoint (DCP) instead of
the first two files: every rank writes its own shards (__RANK_0.distcp) and rank 0 the .metadata
that says which slice of which tensor lives where. Tensors are stored by their names in the whole
model, so a checkpoint saved on one layout loads on any other (DCP reshards on load), one process
included: `generate` and export read a sharded run without a process group.

The optimizer state goes through get/set_optimizer_state_dict, flattened to one entry per parameter
("state.layers.0.attention.wq.weight.exp_avg"), so it is keyed by names too and reshards the same way.

A checkpoint is written to step_NNNNNN.tmp, flushed to disk (every file and the folder), and renamed
when complete; the rename is flushed too. A crash or a power loss mid-write leaves the previous
checkpoint as the latest, never an empty one. Only the last `keep` are kept.

Reading one that is damaged all the same (a file deleted, truncated by a full disk, overwritten)
is one line that names the checkpoint, the file, and the earlier checkpoint to fall back on.
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
import warnings
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.tensor import DTensor, distribute_tensor

from scratchlm import atomic
from scratchlm.errors import ScratchError

STEP_DIR = re.compile(r"^step_(\d+)$")
DCP_METADATA = ".metadata"
FLAT = StateDictOptions(flatten_optimizer_state_dict=True)
# What reading a damaged file raises: missing or unreadable (OSError), cut short (EOFError, and pickle's
# and safetensors' own errors), garbled text or JSON (ValueError); DCP gathers any of them from every rank.
READ_ERRORS = (OSError, EOFError, ValueError, pickle.UnpicklingError, SafetensorError, CheckpointException)
TORCH_LOAD_ERRORS = (*READ_ERRORS, RuntimeError)  # torch.load reports a damaged zip archive as a RuntimeError


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary folders of interrupted writes are ignored)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


@contextmanager
def _reading(ckpt: Path, what: str, errors: tuple[type[BaseException], ...] = READ_ERRORS) -> Iterator[None]:
    """Turn a failure to read `what` of checkpoint ckpt into one line that says how to get back on track."""
    try:
        yield
    except errors as exc:
        raise ScratchError(f"checkpoint {ckpt} is damaged: {what} {_problem(exc, what)}; {_way_back(ckpt)}"
                           ) from None


def _problem(exc: BaseException, what: str) -> str:
    if isinstance(exc, CheckpointException):  # one entry per failed rank: (exception, traceback)
        exc = next(iter(exc.failures.values()))[0]
    if isinstance(exc, FileNotFoundError):
        name = Path(exc.filename).name if exc.filename else what
        return "is missing" if name == what else f"is missing ({name})"
    first_sentence = str(exc).splitlines()[0].split(". ")[0] if str(exc) else ""
    return f"cannot be read ({type(exc).__name__}{': ' + first_sentence if first_sentence else ''})"


def _way_back(ckpt: Path) -> str:
    """The checkpoint before ckpt in its run, which the user can fall back on."""
    step = int(m.group(1)) if (m := STEP_DIR.match(ckpt.name)) else 0
    earlier = [p for p in checkpoint_dirs(ckpt.parent.parent) if int(STEP_DIR.match(p.name).group(1)) < step]
    if earlier:
        return f"delete it to go back to {earlier[-1].name}, the checkpoint before it"
    return "no earlier checkpoint is left: restore this one from a copy or train again"


def latest_checkpoint(run_dir: Path) -> Path | None:
    dirs = checkpoint_dirs(run_dir)
    return dirs[-1] if dirs else None


def is_sharded(ckpt: Path) -> bool:
    return (Path(ckpt) / DCP_METADATA).is_file()


def _distributed() -> bool:
    return dist.is_initialized() and dist.get_world_size() > 1


def _is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


class _Names:
    """Pipeline-parallel ranks hold their stages in an nn.ModuleList, which prefixes every name with the
    stage's index ("0.layers.3..."); checkpoints store the model's own names ("layers.3...")."""

    def __init__(self, model: nn.Module) -> None:
        self.parts = isinstance(model, nn.ModuleList)
        self.index = {name: str(i) for i, part in enumerate(model) for name in part.state_dict()} if self.parts else {}

    @staticmethod
    def _split(key: str, optim: bool) -> tuple[str, str, str]:
        """-> (head, parameter name, leaf): 'state.layers.0.w.weight.exp_avg' -> 'state.', 'layers.0.w.weight',
        '.exp_avg'; a model key is its own parameter name."""
        if not optim:
            return "", key, ""
        head, rest = key.split(".", 1)
        name, leaf = rest.rsplit(".", 1)
        return head + ".", name, "." + leaf

    def own(self, sd: dict[str, Any], optim: bool = False) -> dict[str, Any]:
        if not self.parts:
            return sd
        out = {}
        for key, value in sd.items():
            head, name, leaf = self._split(key, optim)
            out[head + name.split(".", 1)[1] + leaf] = value
        return out

    def local(self, sd: dict[str, Any], optim: bool = False) -> dict[str, Any]:
        if not self.parts:
            return sd
        out = {}
        for key, value in sd.items():
            head, name, leaf = self._split(key, optim)
            if name in self.index:  # a full state dict also holds other stages' tensors
                out[f"{head}{self.index[name]}.{name}{leaf}"] = value
        return out


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Full (unsharded) CPU tensors by name, for the single-file format."""
    sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v.detach().contiguous() for k, v in _Names(model).own(sd).items()}


def _sharded_state(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
    names = _Names(model)
    state: dict[str, Any] = {"model": names.own(get_model_state_dict(model))}
    if optimizer is not None:
        state["optim"] = names.own(get_optimizer_state_dict(model, optimizer, options=FLAT), optim=True)
    return state


def save_checkpoint(run_dir: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer | None,
                    state: dict[str, Any], keep: int) -> Path:
    """Every rank calls this under torchrun (each writes its shards); one process writes the single-file format."""
    root = Path(run_dir) / "checkpoints"
    final = root / f"step_{step:06d}"
    tmp = root / f"step_{step:06d}.tmp"
    main, sharded = _is_main(), _distributed()
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    if sharded:
        dist.barrier()  # the folder exists before any rank writes into it
        dcp.save(_sharded_state(model, optimizer), checkpoint_id=tmp)
    else:
        save_file(model_state(model), tmp / "model.safetensors", metadata={"format": "pt"})
        if optimizer is not None:
            torch.save(get_optimizer_state_dict(model, optimizer, options=FLAT), tmp / "optimizer.pt")
    if main:
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state()
        torch.save(rng, tmp / "rng.pt")
        # step last: the state of a resumed run still holds the step it resumed from
        (tmp / "state.json").write_text(json.dumps({**state, "step": step}, indent=2))
        # Every rank's files are complete (DCP's save returns on rank 0 once all ranks have written theirs);
        # they reach the disk before the name says the checkpoint is there, and the name before old ones go.
        atomic.sync_tree(tmp)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        atomic.sync_dir(root)
        for old in checkpoint_dirs(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    if sharded:
        dist.barrier()  # nobody goes on (or loads) before the checkpoint is complete
    return final


def stored_shapes(ckpt: Path) -> dict[str, tuple[int, ...]]:
    """Name -> full shape of every weight in a checkpoint of either format, read without loading tensors."""
    if is_sharded(ckpt):
        with _reading(ckpt, DCP_METADATA):
            meta = dcp.FileSystemReader(str(ckpt)).read_metadata().state_dict_metadata
        return {k[len("model."):]: tuple(v.size) for k, v in meta.items() if k.startswith("model.") and
                hasattr(v, "size")}
    with _reading(ckpt, "model.safetensors"), safe_open(str(ckpt / "model.safetensors"), framework="pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 - safe_open is no dict


def check_compatible(model: nn.Module, ckpt: Path, fresh: Collection[str] = ()) -> None:
    """Refuse a checkpoint whose tensors do not match this model (DTensor shapes are the full shapes);
    the `fresh` ones may be missing (see load_weights)."""
    stored = stored_shapes(ckpt)
    expected = _Names(model).own(model.state_dict())
    for name, tensor in expected.items():
        if name in fresh and name not in stored:
            continue
        if name not in stored:
            raise ScratchError(f"checkpoint {ckpt} belongs to another model ({name} is missing)")
        if stored[name] != tuple(tensor.shape):
            raise ScratchError(f"checkpoint {ckpt} belongs to another model ({name} is {stored[name]}, the model "
                               f"wants {tuple(tensor.shape)})")


def _shard_like(full: dict[str, Any], local: dict[str, Any]) -> dict[str, Any]:
    """Cut a full state dict (the single-file format) to this rank's shards: each tensor takes the
    placements of its local counterpart (distribute_tensor without src_data_rank slices locally)."""
    out = {}
    for key, value in full.items():
        ref = local.get(key)
        if isinstance(ref, DTensor):
            value = distribute_tensor(value.to(ref.device), ref.device_mesh, ref.placements, src_data_rank=None)
        elif isinstance(ref, torch.Tensor):
            value = value.to(ref.device)
        out[key] = value
    return out


def _dcp_load(state: dict[str, Any], ckpt: Path) -> None:
    """Fill state in place from a DCP checkpoint, resharding to this layout."""
    with warnings.catch_warnings(), _reading(ckpt, "a shard file"):
        # Without a process group DCP reads in this process alone, as meant.
        warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process")
        dcp.load(state, checkpoint_id=ckpt)


def load_weights(model: nn.Module, ckpt: Path, fresh: Collection[str] = ()) -> None:
    """Load a checkpoint's weights into model, whatever layout wrote them and however model is sharded.

    fresh: parameters that a checkpoint of another head lacks and that keep their initial values (a
    reward model's score head, started from a language model); the checkpoint's tensors that the model
    has no place for (that language model's head) are then left out too. Empty: every tensor must fit."""
    ckpt = Path(ckpt)
    check_compatible(model, ckpt, fresh)
    names = _Names(model)
    missing = set(fresh) - set(stored_shapes(ckpt))
    options = StateDictOptions(strict=not fresh)
    if is_sharded(ckpt):
        sd = _sharded_state(model, None)
        sd["model"] = {k: v for k, v in sd["model"].items() if k not in missing}
        _dcp_load(sd, ckpt)
        set_model_state_dict(model, names.local(sd["model"]), options=options)
        return
    local = get_model_state_dict(model)
    with _reading(ckpt, "model.safetensors"):
        full = names.local(load_file(ckpt / "model.safetensors"))
    if fresh:
        full = {k: v for k, v in full.items() if k in local}
    set_model_state_dict(model, _shard_like(full, local), options=options)


def load_checkpoint(ckpt: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
    """Restore weights, optimizer and RNG; return state.json (the step to continue from and more)."""
    ckpt = Path(ckpt)
    load_weights(model, ckpt)
    if optimizer is not None:
        names = _Names(model)
        if is_sharded(ckpt):
            sd = {"optim": _sharded_state(model, optimizer)["optim"]}
            _dcp_load(sd, ckpt)
            set_optimizer_state_dict(model, optimizer, names.local(sd["optim"], optim=True), options=FLAT)
        else:
            with _reading(ckpt, "optimizer.pt", TORCH_LOAD_ERRORS):
                full = torch.load(ckpt / "optimizer.pt", weights_only=True, map_location="cpu")
            local = get_optimizer_state_dict(model, optimizer, options=FLAT)
            set_optimizer_state_dict(model, optimizer, _shard_like(names.local(full, optim=True), local), options=FLAT)
    with _reading(ckpt, "rng.pt", TORCH_LOAD_ERRORS):
        rng = torch.load(ckpt / "rng.pt", weights_only=True)
    with _reading(ckpt, "state.json"):
        state = json.loads((ckpt / "state.json").read_text())
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    return state
