"""A run and its ancestors, newest first, followed through config.yaml's `parent` (base -> sft -> rl)."""

from __future__ import annotations

from pathlib import Path

from scratchlm.config import Config
from scratchlm.run import read_config


def _parent_dir(run_dir: Path, parent: str) -> Path | None:
    """Where a parent run lives: its recorded path as given, else beside the child run."""
    for candidate in (Path(parent), run_dir.parent / parent):
        if candidate.is_dir():
            return candidate
    return None


def lineage(run_dir: str | Path) -> list[tuple[Path, Config]]:
    """(run directory, config) of run_dir, its parent, the parent's parent, ...; stops at a parent that is
    gone (moved or deleted) and at a cycle."""
    chain: list[tuple[Path, Config]] = []
    current: Path | None = Path(run_dir)
    seen: set[Path] = set()
    while current is not None and current.resolve() not in seen:
        seen.add(current.resolve())
        cfg = read_config(current)
        chain.append((current, cfg))
        current = _parent_dir(current, cfg.parent) if cfg.parent else None
    return chain


def has_sft(run_dir: str | Path) -> bool:
    """Whether the run or an ancestor was trained by the SFT stage: its model answers in the chat format."""
    return any(cfg.stage == "sft" for _, cfg in lineage(run_dir))
