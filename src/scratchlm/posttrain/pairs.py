"""Preference pairs as batches, for the stages that learn from them (scratchlm reward, scratchlm dpo).

    pairs (embedded | .jsonl / .parquet | hf:NAME)  -- scratchlm.data.preference_data
    -> the chat format renders prompt + chosen and prompt + rejected: ids, and which of them are the
       reply's trained tokens (the assistant's words and turn ends after the prompt, nothing before)
    -> PairRows: both sides as rows over all their ids (a reward model scores the last one)
    -> batches of pairs, side 0 chosen and side 1 rejected:
           inputs, targets  (pairs, 2, width)   targets: the next id where it is the reply's, else IGNORE
           lengths          (pairs, 2)          ids of each side before the padding
           margins          (pairs,)            the reward model's margin for each pair
    -> PairStage: the loop's unit is a pair (count = pairs, so a micro-batch or a rank with short pairs
       weighs no more than one with long ones); the loss is the stage's own

A batch row is a pair, two sequences: train.global_batch counts pairs, train.micro_batch_size pairs too.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from scratchlm.chat import ChatFormat
from scratchlm.config import Config
from scratchlm.data.chat_data import Skips
from scratchlm.data.preference_data import PairSkips, PreferencePair, load_preferences
from scratchlm.errors import ScratchError
from scratchlm.posttrain.common import EpochBatches, Row, rendered_row
from scratchlm.train.launch import Shares
from scratchlm.train.stage import IGNORE, Batch, LossOutput, shard_validation


@dataclass
class PairRows:
    chosen: Row
    rejected: Row
    margin: float = 0.0
    kind: str = ""  # the embedded corpus's kind of pair, for accuracies by kind

    @property
    def width(self) -> int:
        return max(len(self.chosen.inputs), len(self.rejected.inputs))


def reply_row(fmt: ChatFormat, prompt: list[dict[str, str]], reply: list[dict[str, str]]) -> Row | None:
    """prompt + reply rendered as one row whose trained targets are the reply's alone (the prompt may hold
    earlier assistant turns, which the chat format marks trained too). None when the format renders the
    prompt differently inside the whole conversation, so the reply's tokens cannot be told apart."""
    whole = fmt.render(prompt + reply)
    before = fmt.render(prompt).ids
    if whole.ids[:len(before)] != before:
        return None
    whole.trained[:len(before)] = [False] * len(before)
    return rendered_row(whole, keep_last=True)


def to_pair_rows(pairs: list[PreferencePair], fmt: ChatFormat, seq_len: int, skips: Skips, where: str,
                 margin: float = 0.0) -> list[PairRows]:
    """Render both sides of each pair; a pair with a side longer than the context is skipped and counted.
    margin: for pairs that bring none of their own."""
    rows = []
    for i, pair in enumerate(pairs):
        chosen, rejected = reply_row(fmt, pair.prompt, pair.chosen), reply_row(fmt, pair.prompt, pair.rejected)
        if chosen is None or rejected is None:
            skips.add("the chat template renders the prompt differently before a reply", i + 1, where)
        elif max(len(chosen.inputs), len(rejected.inputs)) > seq_len:
            skips.add("longer than the context", i + 1, where)
        else:
            rows.append(PairRows(chosen, rejected, margin if pair.margin is None else pair.margin, pair.kind))
    return rows


def collate_pairs(pairs: list[PairRows], pad_id: int) -> Batch:
    """Pairs padded to the longest side: pad inputs, IGNORE targets."""
    width = max(p.width for p in pairs)
    inputs = torch.full((len(pairs), 2, width), pad_id, dtype=torch.long)
    targets = torch.full((len(pairs), 2, width), IGNORE, dtype=torch.long)
    lengths = torch.zeros((len(pairs), 2), dtype=torch.long)
    for i, pair in enumerate(pairs):
        for side, row in enumerate((pair.chosen, pair.rejected)):
            n = len(row.inputs)
            inputs[i, side, :n] = torch.tensor(row.inputs)
            targets[i, side, :n] = torch.tensor(row.targets)
            lengths[i, side] = n
    margins = torch.tensor([p.margin for p in pairs], dtype=torch.float32)
    return {"inputs": inputs, "targets": targets, "lengths": lengths, "margins": margins}


@torch.no_grad()
def score_pairs(score: Callable[[Batch], torch.Tensor], pairs: list[PairRows], pad_id: int, batch_size: int = 16
                ) -> torch.Tensor:
    """score(batch) -> (pairs, 2) for every pair, in batches of similar length; (len(pairs), 2) in their order."""
    order = sorted(range(len(pairs)), key=lambda i: pairs[i].width)
    out = torch.empty(len(pairs), 2)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        out[chunk] = score(collate_pairs([pairs[i] for i in chunk], pad_id)).float().cpu()
    return out


def real_pairs(batch: Batch) -> torch.Tensor:
    """1.0 for each pair of the batch, 0.0 for the untrained padding pairs of a validation shard."""
    return (batch["targets"] != IGNORE).any(-1).all(-1).float()


def trimmed(batch: Batch) -> Batch:
    """The batch cut after its longest side: later columns are padding, which no real token attends to."""
    width = max(1, int(batch["lengths"].max()))
    return {k: v[..., :width] if v.dim() == 3 else v for k, v in batch.items()}


def split_pairs(batch: Batch, size: int) -> list[Batch]:
    """Micro-batches of `size` pairs, each trimmed."""
    return [trimmed({k: v[start:start + size] for k, v in batch.items()})
            for start in range(0, batch["inputs"].shape[0], size)]


def validation_batches(pairs: list[PairRows], shares: Shares, pad_id: int) -> list[Batch]:
    """This rank's share of the fixed validation pairs (scratchlm.train.stage.shard_validation), sorted by
    length first so that each batch is trimmed to little padding."""
    ordered = sorted(pairs[:shares.val_sequences], key=lambda pair: pair.width)
    rows = collate_pairs(ordered, pad_id)
    return [trimmed(b) for b in shard_validation(rows, shares.dp_rank, shares.dp_size, shares.val_batch_rows)]


class PairBatches(EpochBatches[PairRows]):
    """The training stream of pairs (common.EpochBatches): shuffled each epoch, grouped by length."""

    def __init__(self, pairs: list[PairRows], global_batch: int, dp_rank: int, dp_size: int, seed: int,
                 pad_id: int) -> None:
        super().__init__(pairs, lambda pair: pair.width, global_batch, dp_rank, dp_size, seed,
                         noun="preference pairs")
        self.pad_id = pad_id

    def batch_for(self, step: int) -> Batch:
        return collate_pairs([pair for (pair,) in self.local_groups(step)], self.pad_id)

    def log_values(self, step: int) -> dict[str, float]:
        """The share of padding in the global batch as the ranks pad it (both sides to the longest)."""
        pairs = [pair for (pair,) in self.global_groups(step)]
        real = padded = 0
        for start in range(0, len(pairs), self.local):
            mine = pairs[start:start + self.local]
            real += sum(len(p.chosen.inputs) + len(p.rejected.inputs) for p in mine)
            padded += 2 * max(p.width for p in mine) * len(mine)
        return {"padding": round(1 - real / padded, 4)}


class PairStage(ABC):
    """A stage whose unit is a preference pair (scratchlm.train.stage.Stage); the loss is the subclass's."""

    def __init__(self, name: str, source: PairBatches, validation: list[Batch]) -> None:
        self.name, self.source, self.validation = name, source, validation

    def batch_for(self, step: int) -> Batch:
        return self.source.batch_for(step)

    def micro_batches(self, batch: Batch, size: int) -> list[Batch]:
        return split_pairs(batch, size)

    def count(self, batch: Batch) -> int:
        return int(real_pairs(batch).sum())

    def log_values(self, step: int) -> dict[str, float]:
        return self.source.log_values(step)

    @abstractmethod
    def loss(self, model: nn.Module, batch: Batch) -> LossOutput:
        """The loss summed over the batch's real pairs, and the values to log, summed alike."""


def summed(values: dict[str, torch.Tensor], real: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-pair values (pairs,) summed over the real pairs: the loop divides them by the pairs and logs means."""
    return {name: (value.float() * real).sum() for name, value in values.items()}


def load_pair_rows(cfg: Config, fmt: ChatFormat, say: Callable[[str], None], margin: float = 0.0
                   ) -> tuple[list[PairRows], list[PairRows]]:
    """The training and validation pairs of cfg.data, rendered; skipped records summed up in one line."""
    d, t = cfg.data, cfg.train
    load = dict(n_embedded=d.embedded_docs, strict=d.strict, seed=d.seed, hub_split=d.hub_split,
                max_records=d.max_docs, val_fraction=d.val_fraction)
    where = "the embedded corpus" if d.source == "embedded" else d.source
    split_rows = {}
    for split in ("train", "validation"):
        skips = PairSkips(strict=d.strict)
        pairs = load_preferences(d.source, split, skips=skips, **load)
        split_rows[split] = to_pair_rows(pairs, fmt, t.seq_len, skips, where, margin)
        if skips.summary():
            say(f"{split} pairs: {skips.summary()}")
        if not split_rows[split]:
            raise ScratchError(f"{where} holds no usable preference pair for {split} ({skips.summary() or 'none'}); "
                               "add pairs, or raise --train.seq_len if they are longer than the context")
    return split_rows["train"], split_rows["validation"]


def describe_pairs(command: str, cfg: Config, train: list[PairRows], batches: PairBatches, validation: int) -> str:
    """One line on the data of a run: where the pairs come from, how many epochs the steps make."""
    t, source = cfg.train, cfg.data.source
    return (f"{command} data: {len(train):,} preference pairs from "
            f"{'the embedded corpus' if source == 'embedded' else source}; {t.max_steps} steps = "
            f"{batches.epoch_of(t.max_steps):.2f} epochs of {t.global_batch} pairs; validation: {validation} pairs")
