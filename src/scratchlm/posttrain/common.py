"""What the post-training stages (sft, reward, dpo, rl) share around their losses.

    stage_config      the parent run's config (its model above all), the stage's defaults, --config, overrides
    carry_run_files   an imported parent's chat template and special tokens, copied into the new run
    require_policy    refuses a reward model where a language model is expected
    check_layout      refuses the parallel layouts a stage's loss cannot run under
    frozen_reference  the parent's weights, built and sharded like the policy, never trained (DPO, RL)
    token_logps       log pi of each trained target token, with gradients (DPO sums them, RL weighs them)
    Row, rendered_row a conversation rendered by the chat format into token ids and trained targets
    EpochBatches      a deterministic, resumable order of global batches, dealt out to data-parallel ranks

Every stage starts from its parent's latest weights with a fresh optimizer and schedule, and records
`stage` and `parent` in its config.yaml, so the lineage base -> sft -> reward / dpo / rl can be followed.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from scratchlm.chat import CHAT_TEMPLATE_FILE, Rendered
from scratchlm.config import Config, apply_dict, load_config, read_tree, set_key, validate
from scratchlm.errors import ScratchError
from scratchlm.parallel.build import build_parallel_model
from scratchlm.parallel.world import World
from scratchlm.run import CONFIG_FILE, SPECIAL_TOKENS_FILE
from scratchlm.train.checkpoint import load_weights
from scratchlm.train.stage import IGNORE, token_loss_sum

ROWS_PER_STEP = 16  # conversations (or preference pairs) per optimizer step, the default global batch
RUN_FILES = (SPECIAL_TOKENS_FILE, CHAT_TEMPLATE_FILE)  # an imported parent's conventions, carried along


def stage_config(stage: str, parent_run: Path, defaults: dict[str, Any], config_file: str | None,
                 overrides: dict[str, str]) -> Config:
    """The parent's config (its model above all), then the stage's defaults, then --config, then the overrides.
    A global batch counts rows (conversations, pairs) rather than windows: ROWS_PER_STEP unless set."""
    cfg = load_config(config_file=Path(parent_run) / CONFIG_FILE)
    apply_dict(cfg, defaults)
    tree = read_tree(config_file) if config_file else {}
    apply_dict(cfg, tree, str(config_file))
    for key, value in overrides.items():
        set_key(cfg, key, value)
    if "train.global_batch_tokens" not in overrides and "global_batch_tokens" not in tree.get("train", {}):
        cfg.train.global_batch_tokens = ROWS_PER_STEP * cfg.train.seq_len
    cfg.stage, cfg.parent = stage, str(Path(parent_run).resolve())
    validate(cfg)
    return cfg


def carry_run_files(parent_run: Path) -> Callable[[Path], None]:
    """What launch's write_files calls: an imported parent's template and special tokens come along."""
    def carry(run: Path) -> None:
        for name in RUN_FILES:
            if (Path(parent_run) / name).is_file():
                shutil.copy2(Path(parent_run) / name, run / name)
    return carry


def require_policy(run_dir: Path, cfg: Config, command: str) -> None:
    """A reward model scores text and cannot write any: refuse it where a language model is expected."""
    if cfg.model.head != "lm":
        raise ScratchError(f"{run_dir} is a reward model (model.head {cfg.model.head}), but {command} needs a "
                           "language model to start from, such as the SFT run the reward model was trained from")


def check_layout(cfg: Config, command: str, tensor_parallel: bool = True) -> None:
    """Pipeline stages run the language-model loss only; a score head has no tensor-parallel plan."""
    if cfg.parallel.pp > 1:
        raise ScratchError(f"{command} does not run under pipeline parallel (its stages compute only the "
                           "next-token loss); use data parallel (FSDP) instead of --parallel.pp")
    if not tensor_parallel and cfg.parallel.tp > 1:
        raise ScratchError(f"{command} does not run under tensor parallel (the score head has no plan for it); "
                           "use data parallel (FSDP) instead of --parallel.tp")


def frozen_reference(cfg: Config, world: World, checkpoint: Path) -> nn.Module:
    """The parent's weights in a model built and parallelized like the policy, never trained."""
    reference, _ = build_parallel_model(cfg, world, token_loss_sum)
    load_weights(reference, checkpoint)
    reference.requires_grad_(False)
    return reference.eval()


def token_logps(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log pi of each row's next token where it is trained, in fp32; 0 where the target is IGNORE (rows, seq)."""
    logits = model(inputs)
    per_token = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE,
                                reduction="none")
    return -per_token.view(targets.shape)


@dataclass
class Row:
    inputs: list[int]
    targets: list[int]


def rendered_row(rendered: Rendered, keep_last: bool = False) -> Row:
    """A rendered conversation as a row: the target of each position is the next id if that id is trained,
    else IGNORE. Language-model stages read ids[:-1] (the last id has no next one to predict); keep_last
    also reads the last id, with an IGNORE target (a reward model scores the last token itself)."""
    targets = [t if trained else IGNORE for t, trained in zip(rendered.ids[1:], rendered.trained[1:], strict=True)]
    if keep_last:
        return Row(rendered.ids, [*targets, IGNORE])
    return Row(rendered.ids[:-1], targets)


Item = TypeVar("Item")


class EpochBatches(Generic[Item]):
    """A training stream of global batches: step s of epoch e takes global batch s mod (batches per epoch) of
    epoch e's order, a function of (seed, epoch) alone, so a resumed run continues with the same batches.

    Each epoch shuffles the items. Without `pack`, it sorts each window of 64 global batches by length and
    cuts it into global batches, then shuffles the batches: little padding, yet no fixed order. With
    `pack` (shuffled items -> groups of items that share a row), it cuts the groups into global batches.
    A global batch is a list of groups (one item each unless packed); a rank takes its contiguous slice,
    sorted by length, so its micro-batches are compact too."""

    WINDOW = 64

    def __init__(self, items: Sequence[Item], size: Callable[[Item], int], global_batch: int, dp_rank: int,
                 dp_size: int, seed: int, pack: Callable[[list[Item]], list[list[Item]]] | None = None,
                 noun: str = "conversations") -> None:
        self.items, self.size, self.global_batch, self.seed, self.pack = items, size, global_batch, seed, pack
        self.local = global_batch // dp_size
        self.offset = dp_rank * self.local
        if len(self._epoch(0)) == 0:
            raise ScratchError(f"{len(items)} usable {noun} fill no batch of {global_batch}; use more data or a "
                               "smaller --train.global_batch_tokens")

    @lru_cache(maxsize=2)  # noqa: B019 - one order per epoch, reused by every step of it
    def _epoch(self, epoch: int) -> list[list[list[Item]]]:
        rng = np.random.default_rng([self.seed, epoch])
        order = [self.items[i] for i in rng.permutation(len(self.items))]
        if self.pack is not None:
            groups = self.pack(order)
        else:
            groups = []
            span = self.WINDOW * self.global_batch
            for start in range(0, len(order), span):
                groups += [[item] for item in sorted(order[start:start + span], key=self.size)]
        n = len(groups) // self.global_batch
        batches = [groups[i * self.global_batch:(i + 1) * self.global_batch] for i in range(n)]
        return [batches[i] for i in rng.permutation(n)]

    def group_size(self, group: list[Item]) -> int:
        return sum(self.size(item) for item in group)

    def global_groups(self, step: int) -> list[list[Item]]:
        """The groups of the step's global batch, rank after rank."""
        per_epoch = len(self._epoch(0))
        return self._epoch(step // per_epoch)[step % per_epoch]

    def local_groups(self, step: int) -> list[list[Item]]:
        """This rank's slice of the step's global batch, shortest first."""
        mine = self.global_groups(step)[self.offset:self.offset + self.local]
        return sorted(mine, key=self.group_size)

    def padding(self, step: int) -> float:
        """The share of padding in the step's global batch as the ranks pad it (each to its longest)."""
        groups = self.global_groups(step)
        real = padded = 0
        for start in range(0, len(groups), self.local):
            lengths = [self.group_size(g) for g in groups[start:start + self.local]]
            real += sum(lengths)
            padded += max(lengths) * len(lengths)
        return round(1 - real / padded, 4)

    def epoch_of(self, step: int) -> float:
        return step / len(self._epoch(0))
