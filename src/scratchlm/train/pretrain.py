"""`scratchlm pretrain`: data -> model -> the Trainer, in a run directory.

    prepare (or reuse cached) shards and tokenizer
    -> check the run directory (resume? same model? same tokenizer?) and write config.yaml
    -> build the model on the meta device, initialise, apply checkpointing/compile
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
from scratchlm.errors import ScratchError
from scratchlm.model import build_model, flops_per_token, num_params
from scratchlm.parallel.parallelize import parallelize
from scratchlm.run import check_run_dir, start_run
from scratchlm.train.checkpoint import load_checkpoint
from scratchlm.train.optim import build_optimizer
from scratchlm.train.trainer import Trainer, resolve_device


def describe(cfg: Config) -> str:
    m, t = cfg.model, cfg.train
    return (f"model: {num_params(m) / 1e6:.2f}M parameters ({num_params(m, embedding=False) / 1e6:.2f}M without the "
            f"embedding), {m.n_layers} layers, dim {m.dim}, {m.n_heads} heads / {m.n_kv_heads} kv heads, vocab "
            f"{m.vocab_size}; {flops_per_token(m, t.seq_len) / 1e6:.1f} MFLOP per token")


def pretrain(cfg: Config, run_dir: Path, resume: bool = False) -> dict[str, float]:
    device = resolve_device(cfg.train.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ScratchError("train.device is cuda but no GPU is visible; use --train.device cpu")
    ckpt = check_run_dir(run_dir, cfg, resume)
    prepared = prepare(cfg.data)
    tokenizer = prepared.tokenizer()
    cfg.model.vocab_size = tokenizer.vocab_size  # the embedding has one row per token of the tokenizer
    start_run(run_dir, cfg, tokenizer, ckpt)

    model = build_model(cfg.model, device, seed=cfg.train.seed)
    parallelize(model, cfg.train)
    optimizer = build_optimizer(model, cfg.optim)
    start, state = 0, None
    if ckpt is not None:
        state = load_checkpoint(ckpt, model, optimizer)
        start = state["step"]
        tqdm.write(f"resuming {run_dir} from {ckpt.name}")
    else:
        torch.manual_seed(cfg.train.seed)  # the same RNG stream whether or not the model was built here

    t = cfg.train
    global_batch = t.global_batch_tokens // t.seq_len
    batches = TrainBatches(prepared, t.seq_len, global_batch, seed=t.seed)
    val = validation_batches(prepared, t.seq_len, t.micro_batch_size, t.eval_batches)
    train_tokens = prepared.manifest["splits"]["train"]["tokens"]
    tqdm.write(describe(cfg))
    tqdm.write(f"data: {train_tokens:,} train tokens in {prepared.dir}; {t.global_batch_tokens:,} tokens per step "
               f"({global_batch} x {t.seq_len}, {global_batch // t.micro_batch_size} micro-batches); "
               f"{t.max_steps} steps = {batches.epoch_of(t.max_steps):.2f} epochs; device {device}, {t.precision}")
    trainer = Trainer(cfg, run_dir, model, optimizer, batches, val, device, start_step=start, state=state)
    return trainer.fit()
