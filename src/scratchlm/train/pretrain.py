"""`scratchlm pretrain`: data -> model -> the Trainer, in a run directory.

    check the run directory (resume? same model?), on every rank, before any slow work
    -> prepare (or reuse cached) shards and tokenizer; same tokenizer as the checkpoint? write config.yaml
    -> build the model on the meta device, split into pipeline stages, parallelize (TP, AC, compile,
       FSDP), then allocate and initialise only this rank's shards
    -> AdamW; restore a checkpoint when resuming
    -> Trainer.fit()
"""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm

from scratchlm.config import Config
from scratchlm.data.loader import TrainBatches, validation_batches
from scratchlm.data.prepare import prepare
from scratchlm.hardware import resolve_precision
from scratchlm.model import flops_per_token, num_params
from scratchlm.parallel.build import build_parallel_model
from scratchlm.parallel.parallelize import mixed_precision, uses_fsdp
from scratchlm.parallel.world import World, setup_world
from scratchlm.run import check_run_dir, start_run
from scratchlm.train.checkpoint import load_checkpoint
from scratchlm.train.optim import build_optimizer
from scratchlm.train.trainer import Trainer, token_loss


def describe(cfg: Config) -> str:
    m, t = cfg.model, cfg.train
    return (f"model: {num_params(m) / 1e6:.2f}M parameters ({num_params(m, embedding=False) / 1e6:.2f}M without the "
            f"embedding), {m.n_layers} layers, dim {m.dim}, {m.n_heads} heads / {m.n_kv_heads} kv heads, vocab "
            f"{m.vocab_size}; {flops_per_token(m, t.seq_len) / 1e6:.1f} MFLOP per token")


def pretrain(cfg: Config, run_dir: Path, resume: bool = False) -> dict[str, float]:
    """Train in this process, or as one rank of a torchrun job (the layout comes from cfg.parallel)."""
    world = setup_world(cfg)  # every layout error is raised here, before any process group or allocation
    try:
        return _pretrain(cfg, Path(run_dir), resume, world)
    finally:
        world.close()


def _pretrain(cfg: Config, run_dir: Path, resume: bool, world: World) -> dict[str, float]:
    say = tqdm.write if world.is_main else (lambda _text: None)
    cfg.train.precision, note = resolve_precision(cfg.train.precision, world.device)
    if note:
        say(note)
    # Every rank checks the run directory before the data is prepared, so all refuse alike and early.
    ckpt = check_run_dir(run_dir, cfg, resume, announce=world.is_main)
    prepared = world.main_first(lambda: prepare(cfg.data))  # rank 0 fills the shared cache first
    tokenizer = prepared.tokenizer()
    cfg.model.vocab_size = tokenizer.vocab_size  # the embedding has one row per token of the tokenizer
    start_run(run_dir, cfg, tokenizer, ckpt, write=world.is_main)  # only rank 0 writes to it
    world.barrier()

    model, pipeline = build_parallel_model(cfg, world, token_loss)
    optimizer = build_optimizer(model, cfg.optim)
    start, state = 0, None
    if ckpt is not None:
        state = load_checkpoint(ckpt, model, optimizer)
        start = state["step"]
        say(f"resuming {run_dir} from {ckpt.name}")
    else:
        torch.manual_seed(cfg.train.seed)  # the same RNG stream whether or not the model was built here

    t, dims = cfg.train, world.dims
    global_batch = t.global_batch
    batches = TrainBatches(prepared, t.seq_len, global_batch, dp_rank=world.dp_rank, dp_size=dims.dp, seed=t.seed)
    # The pipeline runs validation in the training micro-batch shape it was set up with: the same
    # windows, grouped into whole local batches.
    local_batch = global_batch // dims.dp
    val_batch = local_batch if pipeline is not None else t.micro_batch_size
    val = validation_batches(prepared, t.seq_len, val_batch, max(1, t.eval_batches * t.micro_batch_size // val_batch),
                             dp_rank=world.dp_rank, dp_size=dims.dp)
    train_tokens = prepared.manifest["splits"]["train"]["tokens"]
    say(describe(cfg))
    say(f"data: {train_tokens:,} train tokens in {prepared.dir}; {t.global_batch_tokens:,} tokens per step "
        f"({global_batch} x {t.seq_len}, {local_batch // t.micro_batch_size} micro-batches per data-parallel rank); "
        f"{t.max_steps} steps = {batches.epoch_of(t.max_steps):.2f} epochs; device {world.device}, {t.precision}")
    if world.distributed:
        say(f"layout: {dims.world_size} processes = {dims}")
    trainer = Trainer(cfg, run_dir, model, optimizer, batches, val, world, start_step=start, state=state,
                      pipeline=pipeline, autocast=not (uses_fsdp(dims) and mixed_precision(t, world.device)))
    result = trainer.fit()
    return {**result, "main": world.is_main}
