"""`scratchlm sft BASE_RUN --out RUN`: supervised fine-tuning on conversations, on the one launch and loop.

    conversations (embedded | .jsonl / .parquet | hf:NAME)  -- scratchlm.data.chat_data
    -> the chat format renders each: ids + which of them are trained (assistant turns and their end)
    -> rows: inputs = ids[:-1], targets = ids[1:] with untrained targets set to IGNORE
    -> batches: padded rows grouped by length, or packed rows (several conversations each, positions
       restarting and attention kept inside each conversation)
    -> TokenStage("sft"): the same next-token loss as pretraining, summed over trained tokens only and
       divided by the trained tokens of the whole global batch (scratchlm.train.trainer)

The run starts from the weights of BASE_RUN (a pretrained or imported run) with a fresh optimizer and
schedule; its config.yaml records the parent, so the lineage base -> sft -> ... can be followed.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from scratchlm.chat import CHAT_TEMPLATE_FILE, ChatFormat, load_chat_format
from scratchlm.config import Config, apply_dict, load_config, read_tree, set_key, validate
from scratchlm.data.chat_data import Conversation, Skips, load_conversations
from scratchlm.errors import ScratchError
from scratchlm.parallel.world import World
from scratchlm.run import CONFIG_FILE, SPECIAL_TOKENS_FILE, open_run
from scratchlm.tokenizer import BPETokenizer
from scratchlm.train.launch import Shares, launch
from scratchlm.train.stage import IGNORE, Batch, Stage, TokenStage, shard_validation

# What SFT changes from its parent's config before --config and the overrides apply: a fresh, shorter
# schedule at a lower peak rate, and conversations instead of documents. The main job uses these.
SFT_DEFAULTS = {
    "data": {"source": "embedded", "embedded_docs": 8000, "max_docs": 0},
    "train": {"max_steps": 200, "eval_every": 50, "save_every": 100, "log_every": 10},
    "optim": {"lr": 1e-3, "warmup_steps": 20, "lr_decay_steps": 0},
}
ROWS_PER_STEP = 16  # conversations (or packed rows) per optimizer step, the default global batch
RUN_FILES = (SPECIAL_TOKENS_FILE, CHAT_TEMPLATE_FILE)  # an imported parent's conventions, carried along


def sft_config(base_run: Path, config_file: str | None, overrides: dict[str, str]) -> Config:
    """The parent's config (its model above all), then SFT_DEFAULTS, then --config, then the overrides."""
    cfg = load_config(config_file=Path(base_run) / CONFIG_FILE)
    apply_dict(cfg, SFT_DEFAULTS)
    tree = read_tree(config_file) if config_file else {}
    apply_dict(cfg, tree, str(config_file))
    for key, value in overrides.items():
        set_key(cfg, key, value)
    if "train.global_batch_tokens" not in overrides and "global_batch_tokens" not in tree.get("train", {}):
        cfg.train.global_batch_tokens = ROWS_PER_STEP * cfg.train.seq_len  # a batch counts conversations
    cfg.stage, cfg.parent = "sft", str(Path(base_run).resolve())
    validate(cfg)
    return cfg


@dataclass
class Row:
    inputs: list[int]
    targets: list[int]


def to_rows(conversations: list[Conversation], fmt: ChatFormat, seq_len: int, skips: Skips, where: str) -> list[Row]:
    """Render each conversation; the targets of untrained tokens become IGNORE. Longer than the context: skipped."""
    rows = []
    for i, conversation in enumerate(conversations):
        rendered = fmt.render(conversation)
        if len(rendered.ids) - 1 > seq_len:
            skips.add("longer than the context", i + 1, where)
            continue
        targets = [t if trained else IGNORE for t, trained in zip(rendered.ids[1:], rendered.trained[1:], strict=True)]
        rows.append(Row(rendered.ids[:-1], targets))
    return rows


def pack(rows: list[Row], seq_len: int) -> list[list[Row]]:
    """Greedy first fit in the given order: each packed row holds whole conversations up to seq_len tokens."""
    bins: list[list[Row]] = []
    room: list[int] = []
    for row in rows:
        n = len(row.inputs)
        for b, free in enumerate(room):
            if n <= free:
                bins[b].append(row)
                room[b] -= n
                break
        else:
            bins.append([row])
            room.append(seq_len - n)
    return bins


def collate(groups: list[list[Row]], pad_id: int, width: int | None = None) -> Batch:
    """Rows padded to the longest (or to width): pad inputs, IGNORE targets; segments when a row packs several."""
    lengths = [sum(len(r.inputs) for r in group) for group in groups]
    width = width or max(lengths)
    inputs = torch.full((len(groups), width), pad_id, dtype=torch.long)
    targets = torch.full((len(groups), width), IGNORE, dtype=torch.long)
    packed = any(len(group) > 1 for group in groups)
    segments = torch.zeros((len(groups), width), dtype=torch.long)
    for i, group in enumerate(groups):
        at = 0
        for s, row in enumerate(group):
            n = len(row.inputs)
            inputs[i, at:at + n] = torch.tensor(row.inputs)
            targets[i, at:at + n] = torch.tensor(row.targets)
            segments[i, at:at + n] = s
            at += n
        segments[i, at:] = len(group)  # padding is a segment of its own, seen by no real token
    batch = {"inputs": inputs, "targets": targets}
    if packed:
        batch["segments"] = segments
    return batch


class ConversationBatches:
    """The SFT training stream: step s of epoch e takes global batch s mod (batches per epoch) of epoch e's
    order, a function of (seed, epoch) alone, so a resumed run continues with the same batches.

    Padded: each epoch shuffles the conversations, sorts each window of 64 global batches by length and
    cuts it into global batches, then shuffles the batches: little padding, yet no fixed order. A rank
    takes its contiguous slice of a batch's rows, which are sorted by length, so its micro-batches are
    compact too. Packed: each epoch shuffles, then packs into rows of seq_len."""

    WINDOW = 64

    def __init__(self, rows: list[Row], global_batch: int, dp_rank: int, dp_size: int, seed: int, seq_len: int,
                 packing: bool, pad_id: int) -> None:
        self.rows, self.global_batch, self.seed = rows, global_batch, seed
        self.local = global_batch // dp_size
        self.offset = dp_rank * self.local
        self.seq_len, self.packing, self.pad_id = seq_len, packing, pad_id
        if len(self._epoch(0)) == 0:
            raise ScratchError(f"{len(rows)} usable conversations fill no batch of {global_batch}; use more data or a "
                               "smaller --train.global_batch_tokens")

    @lru_cache(maxsize=2)  # noqa: B019 - one order per epoch, reused by every step of it
    def _epoch(self, epoch: int) -> list[list[list[Row]]]:
        rng = np.random.default_rng([self.seed, epoch])
        order = [self.rows[i] for i in rng.permutation(len(self.rows))]
        if self.packing:
            groups = pack(order, self.seq_len)
        else:
            groups = []
            span = self.WINDOW * self.global_batch
            for start in range(0, len(order), span):
                groups += [[r] for r in sorted(order[start:start + span], key=lambda r: len(r.inputs))]
        n = len(groups) // self.global_batch
        batches = [groups[i * self.global_batch:(i + 1) * self.global_batch] for i in range(n)]
        return [batches[i] for i in rng.permutation(n)]

    def _global(self, step: int) -> list[list[Row]]:
        per_epoch = len(self._epoch(0))
        batches = self._epoch(step // per_epoch)
        return batches[step % per_epoch]

    def batch_for(self, step: int) -> Batch:
        mine = self._global(step)[self.offset:self.offset + self.local]
        return collate(sorted(mine, key=lambda g: sum(len(r.inputs) for r in g)), self.pad_id)

    def log_values(self, step: int) -> dict[str, float]:
        """Padding in the global batch as the ranks pad it, and its trained tokens."""
        groups = self._global(step)
        real = padded = trained = 0
        for start in range(0, len(groups), self.local):
            lengths = [sum(len(r.inputs) for r in g) for g in groups[start:start + self.local]]
            real += sum(lengths)
            padded += max(lengths) * len(lengths)
        for group in groups:
            trained += sum(t != IGNORE for r in group for t in r.targets)
        return {"padding": round(1 - real / padded, 4), "trained_tokens": trained}

    def epoch_of(self, step: int) -> float:
        return step / len(self._epoch(0))


def sft(cfg: Config, base_run: Path, run_dir: Path, resume: bool = False,
        user_keys: frozenset[str] = frozenset()) -> dict[str, float]:
    """Fine-tune base_run's weights on conversations into run_dir, in this process or as a torchrun rank."""
    _, _, parent_ckpt = open_run(base_run)  # refuses a missing run or one without weights, before anything else
    if cfg.sft.packing and cfg.parallel.pp > 1:
        raise ScratchError("--sft.packing does not run under pipeline parallel (the stages pass no attention "
                           "mask); drop --sft.packing or --parallel.pp")

    def data(world: World) -> tuple[BPETokenizer, Callable[[Shares], Stage]]:
        fmt = load_chat_format(base_run)
        if not fmt.is_native and world.is_main:
            tqdm.write(f"chat format: {base_run}'s own template")
        t, d = cfg.train, cfg.data
        skips = Skips(strict=d.strict)
        load = dict(n_embedded=d.embedded_docs, strict=d.strict, seed=d.seed, hub_split=d.hub_split,
                    max_records=d.max_docs, val_fraction=d.val_fraction)
        where = d.source
        train = to_rows(load_conversations(d.source, "train", skips=skips, **load), fmt, t.seq_len, skips, where)
        val_skips = Skips(strict=d.strict)
        val = to_rows(load_conversations(d.source, "validation", skips=val_skips, **load), fmt, t.seq_len, val_skips,
                      where)
        summary = skips.summary()
        if summary and world.is_main:
            tqdm.write(f"sft data: {summary}")
        if not train:
            raise ScratchError(f"{where} holds no usable conversation for training ({summary or 'none found'})")
        if not val:
            raise ScratchError(f"{where} leaves no usable conversation for validation; add conversations")

        def stage(shares: Shares) -> Stage:
            batches = ConversationBatches(train, t.global_batch, shares.dp_rank, shares.dp_size, t.seed, t.seq_len,
                                          cfg.sft.packing, fmt.tokenizer.pad_id)
            val_rows = collate([[r] for r in val[:shares.val_sequences]], fmt.tokenizer.pad_id)
            if world.is_main:
                trained = sum(t != IGNORE for r in train for t in r.targets)
                tqdm.write(f"sft data: {len(train):,} conversations ({trained:,} trained tokens) from "
                           f"{'the embedded corpus' if where == 'embedded' else where}; {t.max_steps} steps = "
                           f"{batches.epoch_of(t.max_steps):.2f} epochs of {t.global_batch} "
                           f"{'packed rows' if cfg.sft.packing else 'conversations'}; validation: "
                           f"{val_rows['targets'].shape[0]} conversations")
            return TokenStage("sft", batches, shard_validation(val_rows, shares.dp_rank, shares.dp_size,
                                                                shares.val_batch_rows))
        return fmt.tokenizer, stage

    def carry(run: Path) -> None:  # an imported parent's template and special tokens come along
        for name in RUN_FILES:
            if (Path(base_run) / name).is_file():
                shutil.copy2(Path(base_run) / name, run / name)

    return launch(cfg, run_dir, resume, data, user_keys, parent_checkpoint=parent_ckpt, write_files=carry)
