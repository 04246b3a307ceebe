"""The loader: windows over memory-mapped shards, a training stream that depends on the step alone and
splits among data-parallel ranks without changing, and a fixed validation set.

The shards here are written by hand: token value = shard base + position, so every row tells where it
came from (which shard, which offset), and the checks need no tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from scratchlm.data.loader import TokenWindows, TrainBatches, validation_windows
from scratchlm.data.prepare import Prepared, load_prepared
from scratchlm.errors import ScratchError
from scratchlm.train.stage import IGNORE, shard_validation

SEQ = 8
BASE = 10_000  # shard k holds BASE * (k + 1) + arange(len)
TRAIN_SHARDS = [50, 37, 64, 9]  # windows of SEQ + 1 tokens, overlapping by one: 6 + 4 + 7 + 1 = 18
VAL_SHARDS = [100, 45]


def make_prepared(folder: Path, splits: dict[str, list[int]], dtype: str = "uint32") -> Prepared:
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"format": 1, "dtype": dtype, "splits": {}}
    for split, lengths in splits.items():
        shards = []
        for k, n in enumerate(lengths):
            name = f"{split}_{k:03d}.bin"
            (BASE * (k + 1) + np.arange(n)).astype(dtype).tofile(folder / name)
            shards.append({"file": name, "tokens": n})
        manifest["splits"][split] = {"tokens": sum(lengths), "docs": 1, "bytes": 1, "shards": shards}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return load_prepared(folder)


def expected_windows(lengths: list[int], seq_len: int = SEQ) -> list[tuple[int, ...]]:
    """Every window of seq_len + 1 tokens that lies inside one shard, starting at multiples of seq_len."""
    out = []
    for k, n in enumerate(lengths):
        start = 0
        while start + seq_len + 1 <= n:
            out.append(tuple(BASE * (k + 1) + np.arange(start, start + seq_len + 1)))
            start += seq_len
    return out


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Prepared:
    return make_prepared(tmp_path_factory.mktemp("loader"), {"train": TRAIN_SHARDS, "validation": VAL_SHARDS})


def rows(inputs: torch.Tensor, targets: torch.Tensor) -> list[tuple[int, ...]]:
    """Rebuild each window of seq_len + 1 tokens from an (inputs, targets) pair."""
    return [tuple(x.tolist()) + (int(y[-1]),) for x, y in zip(inputs, targets, strict=True)]


# --------------------------------------------------------------------------------------------------
# Windows
# --------------------------------------------------------------------------------------------------


def xy(batch):
    return batch["inputs"], batch["targets"]


@pytest.mark.parametrize("dtype", ["uint16", "uint32"])
def test_windows_cover_each_shard_and_never_straddle(tmp_path, dtype):
    p = make_prepared(tmp_path, {"train": TRAIN_SHARDS[:3]}, dtype)
    windows = TokenWindows(p, "train", SEQ)
    expected = expected_windows(TRAIN_SHARDS[:3])
    assert windows.count == len(expected)
    got = [tuple(windows.window(i).tolist()) for i in range(windows.count)]
    assert got == expected
    assert windows.window(0).dtype == np.int64


def test_inputs_and_targets_are_shifted_by_one(prepared):
    batches = TrainBatches(prepared, SEQ, global_batch=6, seed=1)
    for step in range(4):
        inputs, targets = xy(batches.batch_for(step))
        assert inputs.shape == targets.shape == (6, SEQ)
        assert inputs.dtype == targets.dtype == torch.int64
        assert torch.equal(inputs[:, 1:], targets[:, :-1])
        # Each row is a real window: consecutive tokens of one shard.
        assert torch.equal(targets - inputs, torch.ones_like(inputs))
        assert set(rows(inputs, targets)) <= set(expected_windows(TRAIN_SHARDS))


# --------------------------------------------------------------------------------------------------
# The training stream
# --------------------------------------------------------------------------------------------------


def test_batch_for_depends_only_on_step(prepared):
    steps = [0, 1, 2, 5, 9, 3, 40, 1]
    forward = TrainBatches(prepared, SEQ, global_batch=4, seed=7)
    first = {s: xy(forward.batch_for(s)) for s in steps}
    backward = TrainBatches(prepared, SEQ, global_batch=4, seed=7)
    for s in reversed(steps):  # another instance, another order of asking: the same batches
        x, y = xy(backward.batch_for(s))
        assert torch.equal(x, first[s][0]) and torch.equal(y, first[s][1])
    assert not torch.equal(first[0][0], first[1][0])


def test_seed_changes_the_order(prepared):
    a = TrainBatches(prepared, SEQ, global_batch=4, seed=0)
    b = TrainBatches(prepared, SEQ, global_batch=4, seed=1)
    assert any(not torch.equal(a.batch_for(s)["inputs"], b.batch_for(s)["inputs"]) for s in range(5))


@pytest.mark.parametrize("dp_size", [2, 4])
def test_data_parallel_slices_concatenate_to_the_single_rank_batch(prepared, dp_size):
    single = TrainBatches(prepared, SEQ, global_batch=8, seed=3)
    ranks = [TrainBatches(prepared, SEQ, global_batch=8, dp_rank=r, dp_size=dp_size, seed=3) for r in range(dp_size)]
    for step in [0, 1, 2, 3, 7, 11]:  # 18 windows, 8 per step: steps 2, 4, 6 ... straddle an epoch boundary
        x, y = xy(single.batch_for(step))
        parts = [xy(rank.batch_for(step)) for rank in ranks]
        assert all(px.shape == (8 // dp_size, SEQ) for px, _ in parts)
        assert torch.equal(torch.cat([px for px, _ in parts]), x)
        assert torch.equal(torch.cat([py for _, py in parts]), y)


def test_every_window_once_per_epoch(prepared):
    all_windows = expected_windows(TRAIN_SHARDS)
    n = len(all_windows)
    batch = 4
    batches = TrainBatches(prepared, SEQ, global_batch=batch, seed=5)
    seen: list[tuple[int, ...]] = []
    step = 0
    while len(seen) < 3 * n:
        seen += rows(*xy(batches.batch_for(step)))
        step += 1
    epochs = [seen[e * n:(e + 1) * n] for e in range(3)]
    for epoch in epochs:
        assert sorted(epoch) == sorted(all_windows)  # each window exactly once
    assert epochs[0] != epochs[1]  # reshuffled each epoch
    assert batches.epoch_of(step) == pytest.approx(step * batch / n)


def test_global_batch_must_divide_among_ranks(prepared):
    with pytest.raises(ScratchError, match="divide"):
        TrainBatches(prepared, SEQ, global_batch=6, dp_rank=0, dp_size=4)
    TrainBatches(prepared, SEQ, global_batch=8, dp_rank=3, dp_size=4)  # divisible: fine


@pytest.mark.parametrize("lengths", [[SEQ], [5, 3], [SEQ, SEQ]])
def test_split_shorter_than_one_window_raises(tmp_path, lengths):
    p = make_prepared(tmp_path, {"train": lengths, "validation": lengths})
    with pytest.raises(ScratchError, match="seq_len") as err:
        TrainBatches(p, SEQ, global_batch=2)
    assert "train" in str(err.value)
    with pytest.raises(ScratchError, match="seq_len"):
        validation_windows(p, SEQ, 2)


def test_exactly_one_window_is_enough(tmp_path):
    p = make_prepared(tmp_path, {"train": [SEQ + 1]})
    batches = TrainBatches(p, SEQ, global_batch=3)
    x, y = xy(batches.batch_for(4))
    assert rows(x, y) == expected_windows([SEQ + 1]) * 3


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


def test_validation_windows_are_fixed_and_spread(prepared):
    a, b = validation_windows(prepared, SEQ, 12), validation_windows(prepared, SEQ, 12)
    assert a["inputs"].shape == (12, SEQ)
    assert torch.equal(a["inputs"], b["inputs"]) and torch.equal(a["targets"], b["targets"])
    assert torch.equal(a["inputs"][:, 1:], a["targets"][:, :-1])
    got = rows(*xy(a))
    assert len(set(got)) == len(got)  # no window twice
    assert set(got) <= set(expected_windows(VAL_SHARDS))
    assert {r[0] // BASE for r in got} == {1, 2}  # spread over the split: both validation shards are sampled


def test_validation_never_repeats_when_asked_for_more_than_exists(prepared):
    got = rows(*xy(validation_windows(prepared, SEQ, 1000)))
    assert sorted(got) == sorted(expected_windows(VAL_SHARDS))


@pytest.mark.parametrize("dp_size,batch_rows", [(1, 4), (2, 3), (3, 2), (4, 2)])
def test_validation_shares_are_the_same_set_on_every_layout(prepared, dp_size, batch_rows):
    """Ranks split the one set: their trained rows together are exactly it, whatever the layout, and every
    rank gets as many batches of one shape (padding rows are never trained)."""
    full = validation_windows(prepared, SEQ, 1000)  # 17 windows: not a multiple of 2, 3 or 4
    per_rank = [shard_validation(full, r, dp_size, batch_rows) for r in range(dp_size)]
    assert len({len(batches) for batches in per_rank}) == 1
    trained = []
    for batches in per_rank:
        for batch in batches:
            assert batch["inputs"].shape == (batch_rows, SEQ)
            keep = (batch["targets"] != IGNORE).all(dim=1)
            assert torch.equal(keep, (batch["targets"] != IGNORE).any(dim=1))  # a row is all real or all padding
            trained += rows(batch["inputs"][keep], batch["targets"][keep])
    assert sorted(trained) == sorted(rows(*xy(full)))
