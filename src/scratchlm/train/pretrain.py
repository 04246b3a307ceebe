"""`scratchlm pretrain`: windows of prepared token shards and next-token prediction, on the one launch.

    prepare (or reuse cached) shards and tokenizer (rank 0 first, the others reuse its cache)
    -> the stage: TrainBatches (seeded, resumable, sharded by data-parallel rank) + a fixed validation set
    -> scratchlm.train.launch does the rest
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from scratchlm.config import Config
from scratchlm.data.loader import TrainBatches, validation_windows
from scratchlm.data.prepare import prepare, same_tokenizer
from scratchlm.data.sources import prepared_dir
from scratchlm.parallel.world import World
from scratchlm.tokenizer import BPETokenizer
from scratchlm.train.launch import Shares, launch
from scratchlm.train.stage import Stage, TokenStage, shard_validation


def pretrain(cfg: Config, run_dir: Path, resume: bool = False, user_keys: frozenset[str] = frozenset()
             ) -> dict[str, float]:
    """Train from scratch in this process, or as one rank of a torchrun job."""
    cfg.stage, cfg.parent = "pretrain", ""

    def data(world: World) -> tuple[BPETokenizer, Callable[[Shares], Stage]]:
        # rank 0 fills the shared cache first; then every rank must hold the same tokenizer
        prepared = world.main_first(lambda: prepare(cfg.data), agree=same_tokenizer)
        tokenizer = prepared.tokenizer()
        if prepared_dir(cfg.data.source) is not None:  # its tokenizer was trained elsewhere, at a size of its own
            cfg.data.vocab_size = tokenizer.vocab_size
        t = cfg.train

        def stage(shares: Shares) -> Stage:
            batches = TrainBatches(prepared, t.seq_len, t.global_batch, dp_rank=shares.dp_rank,
                                   dp_size=shares.dp_size, seed=t.seed)
            val = validation_windows(prepared, t.seq_len, shares.val_sequences)
            if world.is_main:
                tqdm.write(f"data: {prepared.manifest['splits']['train']['tokens']:,} train tokens in "
                           f"{prepared.dir}; {t.max_steps} steps = {batches.epoch_of(t.max_steps):.2f} epochs; "
                           f"validation: {val['targets'].shape[0]} windows")
            return TokenStage("pretrain", batches, shard_validation(val, shares.dp_rank, shares.dp_size,
                                                                     shares.val_batch_rows))
        return tokenizer, stage

    return launch(cfg, run_dir, resume, data, user_keys)
