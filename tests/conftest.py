"""Shared fixtures: tiny configs, a small corpus prepared once per session, a tiny pretrained run, a CLI runner,
a log of fsyncs."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scratchlm.config import ModelConfig

ROOT = Path(__file__).resolve().parents[1]

# Tests keep torch to one thread per process: results do not depend on the machine's core count, and
# the distributed tests' processes do not fight over cores.
torch.set_num_threads(1)


def small_model_config(**overrides) -> ModelConfig:
    base = dict(vocab_size=300, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden_dim=128, max_seq_len=64)
    return ModelConfig(**(base | overrides))


WORDS = ("the cat sat on a mat and then ran to the big red house where a dog was waiting for its friend . "
         "Tom had 3 apples and 12 pears ; how many fruits ?").split()


def write_jsonl(path: Path, n_docs: int, seed: int = 0, field: str = "text") -> Path:
    rng = random.Random(seed)
    with path.open("w") as f:
        for _ in range(n_docs):
            f.write(json.dumps({field: " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 120)))}) + "\n")
    return path


@pytest.fixture(scope="session")
def corpus_jsonl(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("corpus") / "docs.jsonl", 400)


@pytest.fixture(scope="session")
def base(tmp_path_factory, corpus_jsonl) -> Path:
    """A tiny pretrained run, the parent that the post-training tests fine-tune (they read it, never write it)."""
    run = tmp_path_factory.mktemp("base") / "run"
    run_cli("pretrain", "--data", str(corpus_jsonl), "--out", str(run), "--max-steps", "4", "--samples", "0", *FAST)
    return run


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Prepared datasets go to a per-session cache, never to the user's ~/.cache."""
    monkeypatch.setenv("SCRATCHLM_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


# Settings that make a CLI run take seconds: a small model, short sequences, few steps.
FAST = ["--model.dim", "64", "--model.n_layers", "2", "--model.n_heads", "4", "--model.n_kv_heads", "2",
        "--model.ffn_hidden_dim", "128", "--model.max_seq_len", "64", "--train.seq_len", "32",
        "--train.micro_batch_size", "4", "--train.global_batch_tokens", "256", "--data.vocab_size", "320",
        "--train.eval_every", "4", "--train.eval_batches", "2", "--train.log_every", "2",
        "--data.workers", "1", "--optim.warmup_steps", "2"]


def free_port() -> int:
    """A loopback port nothing listens on now, for a rendezvous or a server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of a scratchlm subprocess: this checkout's sources, one torch thread per process."""
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", **extra}


def start_ranks(cmd: list[str], nproc: int) -> list[subprocess.Popen]:
    """`cmd` as the nproc ranks of one job on this machine, each in the environment torchrun would give it but
    as a process of its own: torchrun stops the other ranks the moment one exits."""
    env = subprocess_env(WORLD_SIZE=str(nproc), LOCAL_WORLD_SIZE=str(nproc), MASTER_ADDR="127.0.0.1",
                         MASTER_PORT=str(free_port()))
    return [subprocess.Popen(cmd, env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for rank in range(nproc)]


def run_cli(*args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m scratchlm ARGS` in a subprocess, as a user would."""
    proc = subprocess.run([sys.executable, "-m", "scratchlm", *args], capture_output=True, text=True,
                          env=subprocess_env(**(env or {})),
                          timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"scratchlm {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def record_syncs(monkeypatch) -> list[tuple[str, object]]:
    """Every fsync (by the inode it flushed) and every rename or replace (by the source's name), in order."""
    events: list[tuple[str, object]] = []
    real_fsync, real_rename, real_replace = os.fsync, os.rename, os.replace

    def fsync(fd):
        events.append(("fsync", os.fstat(fd).st_ino))
        real_fsync(fd)

    def rename(src, dst, *args, **kwargs):
        events.append(("rename", os.path.basename(src)))
        real_rename(src, dst, *args, **kwargs)

    def replace(src, dst, *args, **kwargs):
        events.append(("rename", os.path.basename(src)))
        real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(os, "replace", replace)
    return events


def synced_before_and_after(events, renamed: str) -> tuple[set, set]:
    """Inodes flushed before the rename of `renamed`, and after it."""
    at = events.index(("rename", renamed))
    return ({ino for kind, ino in events[:at] if kind == "fsync"},
            {ino for kind, ino in events[at + 1:] if kind == "fsync"})


class ScriptedModel(torch.nn.Module):
    """A real model whose logits at some positions are pushed, far beyond the rest, towards a scripted next
    token: a greedy engine then writes the script there (a calculator call, say) and the real model's
    choice everywhere else. script maps a position to the token wanted there (the logits of the position
    before it predict it)."""

    def __init__(self, model: torch.nn.Module, script: dict[int, int]) -> None:
        super().__init__()
        self.inner = model
        self.cfg = model.cfg
        self.script = script

    def forward(self, tokens: torch.Tensor, cache=None, start_pos: int = 0, positions: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.inner(tokens, cache=cache, start_pos=start_pos, positions=positions, mask=mask)
        if positions is None:
            positions = torch.arange(start_pos, start_pos + tokens.shape[1], device=tokens.device).expand_as(tokens)
        for position, token in self.script.items():
            logits[positions + 1 == position, token] += 1000.0
        return logits
