"""What every training command does around its stage: one function, called by pretrain, sft and later stages.

    join the world (every layout error first), resolve the precision and train.compile
    -> check the run directory (resume? same model? same data stream?), on every rank, before slow work
    -> the command's data: its tokenizer and its stage (pretraining prepares shards; SFT reads its parent)
    -> fit the micro-batch to this layout
    -> build the model on the meta device, split into pipeline stages, parallelize (TP, AC, compile,
       FSDP), then allocate and initialise only this rank's shards
    -> AdamW; restore a checkpoint when resuming (a companion's too), else start from the parent run's
       weights, if any
    -> write config.yaml and tokenizer.json (rank 0): after every read that can refuse a damaged checkpoint
    -> Trainer.fit(), with the scores of train.eval_tasks at each validation when they are set
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from scratchlm.config import Config
from scratchlm.errors import ScratchError
from scratchlm.hardware import peak_flops, resolve_precision
from scratchlm.model import flops_per_token, num_params
from scratchlm.parallel.build import build_parallel_model
from scratchlm.parallel.parallelize import mixed_precision, uses_fsdp
from scratchlm.parallel.world import World, env_world_size, resolve_dims, setup_world
from scratchlm.run import check_run_dir, check_start, start_run
from scratchlm.tokenizer import BPETokenizer
from scratchlm.train.checkpoint import load_checkpoint, load_weights
from scratchlm.train.compile import choose_compile
from scratchlm.train.optim import build_optimizer
from scratchlm.train.stage import Stage, token_loss_sum
from scratchlm.train.task_scores import TaskScores
from scratchlm.train.trainer import Trainer


@dataclass
class Shares:
    """How this rank takes part in the global batch: what a stage needs to build its batches."""

    dp_rank: int
    dp_size: int
    local_batch: int  # sequences of each step on this rank
    val_batch_rows: int  # rows per validation batch (the pipeline needs its training shape)
    val_sequences: int  # size of the validation set: a function of the config, not of the layout
    # The model in training as this rank holds it (parallelized, its weights loaded), for a stage whose batches
    # are its own samples (RL's rollouts); the other stages never read it.
    model: nn.Module | None = None


# A command's data: given this rank's world, (tokenizer, a function that builds the stage from the shares).
DataFn = Callable[[World], tuple[BPETokenizer, Callable[[Shares], Stage]]]


def describe(cfg: Config) -> str:
    m, t = cfg.model, cfg.train
    return (f"model: {num_params(m) / 1e6:.2f}M parameters ({num_params(m, embedding=False) / 1e6:.2f}M without the "
            f"embedding), {m.n_layers} layers, dim {m.dim}, {m.n_heads} heads / {m.n_kv_heads} kv heads, vocab "
            f"{m.vocab_size}; {flops_per_token(m, t.seq_len) / 1e6:.1f} MFLOP per token")


def fit_micro_batch(cfg: Config, dp: int, user_keys: frozenset[str]) -> str | None:
    """The micro-batch is a memory knob, not a semantic one: when the user did not set it and it does not
    divide this rank's share of the global batch, take the largest one below it that does. Returns a
    note saying so, or None when nothing changed."""
    t = cfg.train
    global_batch = t.global_batch
    if global_batch < dp or global_batch % dp:
        raise ScratchError(f"the global batch of {global_batch} sequences (train.global_batch_tokens "
                           f"{t.global_batch_tokens} / seq_len {t.seq_len}) does not split into {dp} data-parallel "
                           f"ranks; use a multiple of {dp * t.seq_len} tokens")
    local = global_batch // dp
    if local % t.micro_batch_size == 0:
        return None
    if "train.micro_batch_size" in user_keys:
        raise ScratchError(f"train.micro_batch_size {t.micro_batch_size} does not divide the {local} sequences of "
                           f"each of the {dp} data-parallel ranks; choose a divisor of {local}")
    chosen = max(d for d in range(1, min(t.micro_batch_size, local) + 1) if local % d == 0)
    note = (f"micro-batch: {chosen} sequences (the configured {t.micro_batch_size} does not divide the {local} of "
            f"each of the {dp} data-parallel ranks)")
    t.micro_batch_size = chosen
    return note


def check_vocab(cfg: Config, tokenizer: BPETokenizer, user_keys: frozenset[str]) -> None:
    """The embedding has one row per token of the tokenizer; a --model.vocab_size that disagrees is refused."""
    if "model.vocab_size" in user_keys and cfg.model.vocab_size != tokenizer.vocab_size:
        raise ScratchError(f"model.vocab_size {cfg.model.vocab_size} disagrees with the tokenizer's "
                           f"{tokenizer.vocab_size} tokens: the embedding follows the tokenizer; to change the "
                           "vocabulary, train a tokenizer of that size with --data.vocab_size")
    cfg.model.vocab_size = tokenizer.vocab_size


def launch(cfg: Config, run_dir: Path, resume: bool, data: DataFn, user_keys: frozenset[str] = frozenset(),
           parent_checkpoint: Path | None = None, write_files: Callable[[Path], None] | None = None,
           load_parent: Callable[[nn.Module, Path], None] = load_weights) -> dict[str, float]:
    """Train cfg.stage in this process, or as one rank of a torchrun job (the layout comes from cfg.parallel).

    parent_checkpoint: the weights a fresh run starts from (a pretrained run for SFT); None: random init.
    write_files: writes the command's own files into the run directory (on rank 0, beside config.yaml).
    load_parent: how the parent's weights go into the model (a reward model keeps its new head).
    """
    # The micro-batch adapts to the data-parallel size first, so that the layout checks see the fitted one.
    val_sequences = cfg.train.eval_batches * cfg.train.global_batch  # the same on every layout
    note = fit_micro_batch(cfg, resolve_dims(cfg.parallel, env_world_size()).dp, user_keys)
    world = setup_world(cfg)  # every layout error is raised here, before any process group or allocation
    try:
        if note and world.is_main:
            tqdm.write(note)
        return _launch(cfg, Path(run_dir), resume, data, user_keys, parent_checkpoint, write_files, load_parent,
                       world, val_sequences)
    finally:
        world.close()


def _launch(cfg: Config, run_dir: Path, resume: bool, data: DataFn, user_keys: frozenset[str],
            parent_checkpoint: Path | None, write_files: Callable[[Path], None] | None,
            load_parent: Callable[[nn.Module, Path], None], world: World, val_sequences: int) -> dict[str, float]:
    say = tqdm.write if world.is_main else (lambda _text: None)
    cfg.train.precision, note = resolve_precision(cfg.train.precision, world.device)
    if note:
        say(note)
    dims = world.dims
    peak = world.from_main(lambda: cfg.train.peak_flops or peak_flops(world.device, cfg.train.precision))
    compile_mode, note = choose_compile(cfg, dims, world.device, peak)
    if note:
        say(note)
    # Every rank checks the run directory before the data is prepared, so all refuse alike and early.
    ckpt = check_run_dir(run_dir, cfg, resume, announce=world.is_main)
    tokenizer, make_stage = data(world)
    check_vocab(cfg, tokenizer, user_keys)
    check_start(run_dir, tokenizer, ckpt)
    # config.yaml keeps what was asked (auto decides again for a derived run); the model and the loop get the mode.
    asked = copy.deepcopy(cfg)
    cfg.train.compile = compile_mode

    model, pipeline = build_parallel_model(cfg, world, token_loss_sum)
    optimizer = build_optimizer(model, cfg.optim)
    start, state = 0, None
    if ckpt is not None:
        state = load_checkpoint(ckpt, model, optimizer)
        start = state["step"]
        say(f"resuming {run_dir} from {ckpt.name}")
    else:
        if parent_checkpoint is not None:
            load_parent(model, parent_checkpoint)
            say(f"starting from the weights of {parent_checkpoint}")
        torch.manual_seed(cfg.train.seed)  # the same RNG stream whether or not the model was built here

    t = cfg.train
    local_batch = t.global_batch // dims.dp
    shares = Shares(dp_rank=world.dp_rank, dp_size=dims.dp, local_batch=local_batch,
                    val_batch_rows=local_batch if pipeline is not None else t.micro_batch_size,
                    val_sequences=val_sequences, model=model)
    stage = make_stage(shares)
    companion = getattr(stage, "companion", None)  # a second model the stage trains (PPO's value model)
    if ckpt is not None and companion is not None:
        companion.load(run_dir, start)
    # Only once every checkpoint it resumes from has been read does the run directory change: a damaged one is
    # refused with the directory as it was. Only rank 0 writes to it.
    if world.is_main:
        start_run(run_dir, asked, tokenizer)
        if write_files is not None:
            write_files(run_dir)
    world.barrier()
    say(describe(cfg))
    say(f"{t.global_batch_tokens:,} tokens per step ({t.global_batch} x {t.seq_len}, "
        f"{local_batch // t.micro_batch_size} micro-batches of {t.micro_batch_size} per data-parallel rank); "
        f"{t.max_steps} steps; device {world.device}, {t.precision}")
    if world.distributed:
        say(f"layout: {dims.world_size} processes = {dims}")
    scores = TaskScores(cfg, run_dir, tokenizer, world) if t.eval_tasks else None
    trainer = Trainer(cfg, run_dir, model, optimizer, stage, world, start_step=start, state=state,
                      pipeline=pipeline, peak=peak, autocast=not (uses_fsdp(dims) and mixed_precision(t, world.device)),
                      task_scores=scores)
    result = trainer.fit()
    return {**result, "main": world.is_main}
