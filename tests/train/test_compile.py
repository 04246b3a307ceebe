"""train.compile: compiled training computes what eager training does, the compiled kernels are kept in
scratchlm's cache, and auto decides by the run's length."""

from __future__ import annotations

import math

import pytest
import torch
from torch._dynamo.utils import counters

from scratchlm.cache import cache_root
from scratchlm.config import Config, TrainConfig, preset
from scratchlm.errors import ScratchError
from scratchlm.model import build_model, flops_per_token
from scratchlm.parallel.world import ParallelDims, World
from scratchlm.train.compile import EAGER_MFU, SAVED, choose_compile, first_compile_seconds
from scratchlm.train.optim import build_optimizer
from scratchlm.train.stage import IGNORE, Batch, TokenStage
from scratchlm.train.trainer import Trainer

from conftest import small_model_config

ONE = World(ParallelDims(pp=1, dp_replicate=1, dp_shard=1, tp=1), torch.device("cpu"), None)
SEQ, ROWS = 32, 4


class UnevenConversations:
    """Rows as SFT makes them: each packs two or three sequences (segments), trains some tokens only, and ends
    after a random width, so micro-batches come in several widths."""

    def __init__(self, vocab: int) -> None:
        self.vocab = vocab

    def batch_for(self, step: int) -> Batch:
        g = torch.Generator().manual_seed(step % 3)  # three batches, seen again and again: learnable
        width = int(torch.randint(SEQ // 2, SEQ + 1, (), generator=g))
        inputs = torch.randint(0, self.vocab, (ROWS, width), generator=g)
        targets = torch.randint(0, self.vocab, (ROWS, width), generator=g)
        targets[torch.rand(ROWS, width, generator=g) < 0.3] = IGNORE
        cuts = torch.randint(1, width, (ROWS, 2), generator=g)
        cols = torch.arange(width)
        segments = (cols >= cuts[:, :1]).long() + (cols >= cuts[:, 1:]).long()
        return {"inputs": inputs, "targets": targets, "segments": segments}

    def log_values(self, step: int) -> dict[str, float]:
        return {}


class Windows:
    """Rows as pretraining makes them: full width, every token trained."""

    def __init__(self, vocab: int) -> None:
        self.vocab = vocab

    def batch_for(self, step: int) -> Batch:
        tokens = torch.randint(0, self.vocab, (ROWS, SEQ + 1), generator=torch.Generator().manual_seed(step % 3))
        return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}

    def log_values(self, step: int) -> dict[str, float]:
        return {}


def losses(tmp_path, compile_mode: str, precision: str, source, steps: int) -> list[float]:
    cfg = Config(model=small_model_config(max_seq_len=SEQ),
                 train=TrainConfig(seq_len=SEQ, micro_batch_size=ROWS // 2, global_batch_tokens=SEQ * ROWS,
                                   precision=precision, compile=compile_mode, max_steps=steps, eval_every=1000,
                                   log_every=1000, save_every=1000,
                                   peak_flops=1e12))  # MFU is not compared: no need to measure this CPU's peak
    cfg.optim.warmup_steps = 2
    torch.manual_seed(0)
    model = build_model(cfg.model, seed=0)
    trainer = Trainer(cfg, tmp_path, model, build_optimizer(model, cfg.optim), TokenStage("t", source), ONE)
    return [trainer.train_step().loss.item() for _ in range(steps)]


@pytest.mark.parametrize("precision,source,tol", [("fp32", UnevenConversations, 1e-5), ("bf16", Windows, 2e-2)],
                         ids=["fp32-packed-uneven-widths", "bf16-windows"])
def test_compiled_training_follows_eager(tmp_path, precision, source, tol):
    """20 optimizer steps, two micro-batches each: fp32 within 1e-5, bf16 within bf16's rounding; one graph
    serves every width."""
    eager = losses(tmp_path / "eager", "off", precision, source(300), 20)
    torch._dynamo.reset()
    counters.clear()
    compiled = losses(tmp_path / "compiled", "model", precision, source(300), 20)
    assert counters["stats"]["unique_graphs"] == 1
    assert eager[-1] < eager[0]  # it trains, so a drift would show
    torch.testing.assert_close(torch.tensor(compiled), torch.tensor(eager), rtol=tol, atol=0)


def test_a_second_compile_of_the_same_shape_builds_nothing(tmp_path):
    """Inductor's cache lives in scratchlm's cache directory; a fresh compile of the same graph reads it back."""
    losses(tmp_path / "first", "model", "fp32", UnevenConversations(300), 1)
    assert any((cache_root() / "inductor").rglob("*")), "inductor wrote nothing under scratchlm's cache"
    torch._dynamo.reset()  # forget the compiled code in memory, as a new process would have
    counters.clear()
    losses(tmp_path / "second", "model", "fp32", UnevenConversations(300), 1)
    assert counters["inductor"]["fxgraph_cache_hit"] >= 2  # the forward and the backward
    assert counters["inductor"]["fxgraph_cache_miss"] == 0


def tiny_config(steps: int, compile_mode: str = "auto") -> Config:
    cfg = Config()
    cfg.train.max_steps, cfg.train.compile = steps, compile_mode
    return cfg


FSDP = ParallelDims(pp=1, dp_replicate=1, dp_shard=2, tp=1)
CPU = torch.device("cpu")


def test_auto_compiles_only_what_a_run_repays():
    peak = 100e9  # FLOP/s
    mode, note = choose_compile(tiny_config(5), ONE.dims, CPU, peak)
    assert mode == "off" and note.startswith("compile auto: off") and "--train.compile model forces it" in note
    mode, note = choose_compile(tiny_config(500), ONE.dims, CPU, peak)
    assert mode == "model" and note.startswith("compile auto: model")
    assert choose_compile(preset("125m"), FSDP, torch.device("cuda"), 989e12)[0] == "blocks"
    assert choose_compile(tiny_config(5), FSDP, CPU, None)[0] == "blocks"  # an unknown GPU: assume a long run
    # The turn: where the share of eager time that compiling saves equals a first compile.
    cfg = tiny_config(1)
    step_flops = cfg.train.global_batch_tokens * flops_per_token(cfg.model, cfg.train.seq_len)
    saved_per_step = step_flops / (peak * EAGER_MFU["cpu"]) * SAVED["cpu"]["model"]
    turn = first_compile_seconds("model", cfg.model.n_layers) / saved_per_step
    assert choose_compile(tiny_config(math.floor(turn)), ONE.dims, CPU, peak)[0] == "off"
    assert choose_compile(tiny_config(math.ceil(turn)), ONE.dims, CPU, peak)[0] == "model"
    # FSDP's hooks run between blocks: compiled one by one, which on a CPU saves too little for this run.
    assert choose_compile(tiny_config(math.ceil(turn)), FSDP, CPU, peak)[0] == "off"
    # A faster device makes the same run shorter, and not worth a compile.
    assert choose_compile(tiny_config(math.ceil(turn)), ONE.dims, CPU, 2 * peak)[0] == "off"


def test_an_explicit_mode_is_kept_and_model_is_refused_across_processes():
    assert choose_compile(tiny_config(1, "model"), ONE.dims, CPU, 1e9) == ("model", None)
    assert choose_compile(tiny_config(10**6, "off"), ONE.dims, CPU, 1e9) == ("off", None)
    assert choose_compile(tiny_config(1, "blocks"), FSDP, CPU, 1e9) == ("blocks", None)
    with pytest.raises(ScratchError, match="use --train.compile blocks or auto"):
        choose_compile(tiny_config(1, "model"), FSDP, CPU, 1e9)
