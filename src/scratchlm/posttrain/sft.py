"""`scratchlm sft BASE_RUN --out RUN`: supervised fine-tuning on conversations, on the one launch and loop.

    conversations (embedded | .jsonl / .parquet | hf:NAME)  -- scratchlm.data.chat_data
    -> the chat format renders each: ids + which of them are trained (assistant turns and their end; with
       --sft.tools calculator, replies are cut where the engine feeds a result, which is not trained)
    -> rows: inputs = ids[:-1], targets = ids[1:] with untrained targets set to IGNORE
    -> batches: padded rows grouped by length, or packed rows (several conversations each, positions
       restarting and attention kept inside each conversation)
    -> TokenStage("sft"): the same next-token loss as pretraining, summed over trained tokens only and
       divided by the trained tokens of the whole global batch (scratchlm.train.trainer)

The run starts from the weights of BASE_RUN (a pretrained or imported run) with a fresh optimizer and
schedule; its config.yaml records the parent, so the lineage base -> sft -> ... can be followed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from scratchlm.chat import ChatFormat, load_chat_format
from scratchlm.config import Config
from scratchlm.data.chat_data import Conversation, Skips, load_conversations
from scratchlm.errors import ScratchError
from scratchlm.infer.tools import parse_tools
from scratchlm.parallel.world import World
from scratchlm.posttrain.common import EpochBatches, Row, carry_run_files, rendered_row, require_policy
from scratchlm.run import open_run
from scratchlm.tokenizer import BPETokenizer
from scratchlm.train.launch import Shares, launch
from scratchlm.train.stage import IGNORE, Batch, Stage, TokenStage, shard_validation

# What SFT changes from its parent's config before --config and the overrides apply (common.stage_config):
# a fresh, shorter schedule at a lower peak rate, and conversations instead of documents. The main job
# uses these.
SFT_DEFAULTS = {
    "data": {"source": "embedded", "embedded_docs": 8000, "max_docs": 0},
    "train": {"max_steps": 200, "eval_every": 50, "save_every": 100, "log_every": 10},
    "optim": {"lr": 1e-3, "warmup_steps": 20, "lr_decay_steps": 0},
}


def to_rows(conversations: list[Conversation], fmt: ChatFormat, seq_len: int, skips: Skips, where: str,
            tools: Sequence[str] = ()) -> list[Row]:
    """Render each conversation (with tools: replies in the pieces that generation with them produces, tool
    output untrained); the targets of untrained tokens become IGNORE. Longer than the context: skipped."""
    rows = []
    for i, conversation in enumerate(conversations):
        row = rendered_row(fmt.render(conversation, tools=tools))
        if len(row.inputs) > seq_len:
            skips.add("longer than the context", i + 1, where)
            continue
        rows.append(row)
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


class ConversationBatches(EpochBatches[Row]):
    """The SFT training stream (common.EpochBatches): padded rows of one conversation each, or, packed, rows
    of several conversations up to seq_len."""

    def __init__(self, rows: list[Row], global_batch: int, dp_rank: int, dp_size: int, seed: int, seq_len: int,
                 packing: bool, pad_id: int) -> None:
        super().__init__(rows, lambda row: len(row.inputs), global_batch, dp_rank, dp_size, seed,
                         pack=(lambda order: pack(order, seq_len)) if packing else None)
        self.pad_id = pad_id

    def batch_for(self, step: int) -> Batch:
        return collate(self.local_groups(step), self.pad_id)

    def log_values(self, step: int) -> dict[str, float]:
        """Padding in the global batch as the ranks pad it, and its trained tokens."""
        trained = sum(t != IGNORE for group in self.global_groups(step) for r in group for t in r.targets)
        return {"padding": self.padding(step), "trained_tokens": trained}


def sft(cfg: Config, base_run: Path, run_dir: Path, resume: bool = False,
        user_keys: frozenset[str] = frozenset()) -> dict[str, float]:
    """Fine-tune base_run's weights on conversations into run_dir, in this process or as a torchrun rank."""
    parent_cfg, _, parent_ckpt = open_run(base_run)  # refuses a missing run or one without weights, first
    require_policy(base_run, parent_cfg, "sft")
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
        where, tools = d.source, parse_tools(cfg.sft.tools)
        train = to_rows(load_conversations(d.source, "train", skips=skips, **load), fmt, t.seq_len, skips, where,
                        tools)
        val_skips = Skips(strict=d.strict)
        val = to_rows(load_conversations(d.source, "validation", skips=val_skips, **load), fmt, t.seq_len, val_skips,
                      where, tools)
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

    return launch(cfg, run_dir, resume, data, user_keys, parent_checkpoint=parent_ckpt,
                  write_files=carry_run_files(base_run))
