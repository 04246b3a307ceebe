"""Deterministic, resumable batches from memory-mapped shards.

A split is cut into windows of seq_len + 1 tokens (input and the next-token targets overlap by
one). Step s of training uses global sequences s*B .. s*B + B-1 of one fixed, seeded order of all
windows (reshuffled each epoch). The order depends on the step alone: a data-parallel rank takes
its contiguous slice of those B sequences, so resuming at step s, on any data-parallel size,
continues the exact same stream of examples. Pipeline and tensor-parallel ranks of one
data-parallel group ask for the same slice and so see the same batch.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from scratchlm.data.prepare import Prepared
from scratchlm.errors import ScratchError
from scratchlm.train.stage import Batch


class TokenWindows:
    """All windows of one split, addressable by a flat index, over memory-mapped shards."""

    def __init__(self, prepared: Prepared, split: str, seq_len: int) -> None:
        info = prepared.manifest["splits"][split]
        self.seq_len = seq_len
        self.shards = [np.memmap(prepared.dir / s["file"], dtype=prepared.manifest["dtype"], mode="r")
                       for s in info["shards"]]
        # Windows never straddle two shards; a shard's tail shorter than a window is left out.
        per_shard = np.array([(len(s) - 1) // seq_len for s in self.shards], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(per_shard)])
        self.count = int(self.starts[-1])
        if self.count == 0:
            total = sum(len(s) for s in self.shards)
            raise ScratchError(f"the {split} split has {total} tokens, fewer than one window of seq_len + 1 = "
                               f"{seq_len + 1}; use more data or a shorter --train.seq_len")

    def window(self, index: int) -> np.ndarray:
        shard = int(np.searchsorted(self.starts, index, side="right")) - 1
        offset = (index - int(self.starts[shard])) * self.seq_len
        return np.asarray(self.shards[shard][offset:offset + self.seq_len + 1], dtype=np.int64)

    def batch(self, indices: list[int] | np.ndarray) -> Batch:
        """-> inputs, targets: (len(indices), seq_len) int64 tensors."""
        rows = torch.from_numpy(np.stack([self.window(int(i)) for i in indices]))
        return {"inputs": rows[:, :-1], "targets": rows[:, 1:]}


class TrainBatches:
    """The training stream: batch_for(step) gives this data-parallel rank's slice of step's batch."""

    def __init__(self, prepared: Prepared, seq_len: int, global_batch: int, dp_rank: int = 0,
                 dp_size: int = 1, seed: int = 0) -> None:
        if global_batch % dp_size:
            raise ScratchError(f"the global batch of {global_batch} sequences does not divide among {dp_size} "
                               "data-parallel ranks; change train.global_batch_tokens or the mesh")
        self.windows = TokenWindows(prepared, "train", seq_len)
        self.global_batch, self.seed = global_batch, seed
        self.local = global_batch // dp_size
        self.offset = dp_rank * self.local

    @lru_cache(maxsize=2)  # noqa: B019 - one permutation per epoch, reused by every step of it
    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.windows.count)

    def indices(self, step: int) -> np.ndarray:
        """Window indices of this rank's sequences at `step` (0-based)."""
        flat = step * self.global_batch + self.offset + np.arange(self.local, dtype=np.int64)
        epochs, within = np.divmod(flat, self.windows.count)
        return np.array([self._order(int(e))[w] for e, w in zip(epochs, within, strict=True)])

    def batch_for(self, step: int) -> Batch:
        return self.windows.batch(self.indices(step))

    def log_values(self, step: int) -> dict[str, float]:
        return {}  # every token of a window is trained: nothing beyond the loss to report

    def epoch_of(self, step: int) -> float:
        return step * self.global_batch / self.windows.count


def validation_windows(prepared: Prepared, seq_len: int, n: int) -> Batch:
    """The validation set: n windows spread evenly over the validation split (all of them when it holds
    fewer). A function of the data alone, so every evaluation, run and parallel layout sees the same
    ones (scratchlm.train.stage.shard_validation deals them out to data-parallel ranks)."""
    windows = TokenWindows(prepared, "validation", seq_len)
    chosen = np.unique(np.linspace(0, windows.count - 1, min(n, windows.count)).astype(np.int64))
    return windows.batch(chosen)
