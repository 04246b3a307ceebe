"""The one loop, in process: normalisation by trained tokens, skipped non-finite steps, checkpoints kept clean."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from scratchlm.config import Config, TrainConfig
from scratchlm.model import build_model
from scratchlm.parallel.world import ParallelDims, World
from scratchlm.train.launch import fit_micro_batch
from scratchlm.train.optim import build_optimizer
from scratchlm.train.stage import IGNORE, Batch, TokenStage, split_rows
from scratchlm.train.trainer import Trainer

from conftest import small_model_config

ONE = World(ParallelDims(pp=1, dp_replicate=1, dp_shard=1, tp=1), torch.device("cpu"), None)


class MaskedRows:
    """Random rows with uneven trained spans (some rows trained nowhere), the same for every step count."""

    def __init__(self, vocab: int, rows: int, seq: int) -> None:
        self.vocab, self.rows, self.seq = vocab, rows, seq

    def batch_for(self, step: int) -> Batch:
        g = torch.Generator().manual_seed(step)
        inputs = torch.randint(0, self.vocab, (self.rows, self.seq), generator=g)
        targets = torch.randint(0, self.vocab, (self.rows, self.seq), generator=g)
        start = torch.randint(0, self.seq, (self.rows, 1), generator=g)
        length = torch.randint(0, self.seq // 2, (self.rows, 1), generator=g)
        length[0] = 0  # a row with no trained token at all
        cols = torch.arange(self.seq)
        targets[(cols < start) | (cols >= start + length)] = IGNORE
        return {"inputs": inputs, "targets": targets}

    def log_values(self, step: int) -> dict[str, float]:
        return {}


def make_trainer(tmp_path, micro: int, rows: int = 8, source=None, **train) -> Trainer:
    cfg = Config(model=small_model_config(),
                 train=TrainConfig(seq_len=16, micro_batch_size=micro, global_batch_tokens=16 * rows, precision="fp32",
                                   max_steps=3, eval_every=100, log_every=1, save_every=1, **train))
    torch.manual_seed(0)
    model = build_model(cfg.model, seed=0)
    stage = TokenStage("test", source or MaskedRows(cfg.model.vocab_size, rows, 16))
    return Trainer(cfg, tmp_path, model, build_optimizer(model, cfg.optim), stage, ONE)


def grads_after_one_step(trainer: Trainer) -> tuple[float, dict[str, torch.Tensor]]:
    """Run the loop's forward/backward of step 0 and keep the clipped-free gradients before the update."""
    trainer.cfg.optim.grad_clip = 0.0
    trainer.optimizer.step = lambda: None  # keep the weights: compare gradients only
    captured = {}
    zero = trainer.optimizer.zero_grad
    trainer.optimizer.zero_grad = lambda set_to_none=True: (
        captured.update({n: p.grad.clone() for n, p in trainer.model.named_parameters()}), zero(set_to_none))
    pending = trainer.train_step()
    return pending.loss.item(), captured


def test_micro_batching_never_changes_loss_or_gradients(tmp_path):
    """Masked, uneven rows: 1 micro-batch of 8 and 4 of 2 give the mean over all trained tokens, to fp32 rounding."""
    loss1, grads1 = grads_after_one_step(make_trainer(tmp_path / "a", micro=8))
    loss4, grads4 = grads_after_one_step(make_trainer(tmp_path / "b", micro=2))
    assert loss1 == pytest.approx(loss4, rel=1e-6)
    for name, grad in grads1.items():
        torch.testing.assert_close(grads4[name], grad, rtol=1e-5, atol=1e-7, msg=name)
    # The loss is the mean over trained tokens of the whole batch, computed directly:
    trainer = make_trainer(tmp_path / "c", micro=8)
    batch = trainer.stage.batch_for(0)
    with torch.no_grad():
        logits = trainer.model(batch["inputs"])
    keep = batch["targets"] != IGNORE
    direct = torch.nn.functional.cross_entropy(logits[keep], batch["targets"][keep])
    assert loss1 == pytest.approx(direct.item(), rel=1e-5)


def test_a_micro_batch_without_trained_tokens_adds_nothing():
    batch = MaskedRows(50, 4, 16).batch_for(0)
    batch["targets"][:2] = IGNORE
    parts = split_rows(batch, 2)
    assert parts[0]["targets"].shape[1] == 1 and (parts[0]["targets"] == IGNORE).all()
    model = build_model(small_model_config(vocab_size=50), seed=0)
    from scratchlm.train.stage import next_token_loss

    loss = next_token_loss(model, parts[0])
    assert loss.item() == 0.0 and not math.isnan(loss.item())


class PoisonAt:
    """A batch source whose step `bad` yields a loss of NaN: the gradient norm becomes NaN."""

    def __init__(self, inner, bad: int) -> None:
        self.inner, self.bad = inner, bad

    def batch_for(self, step: int) -> Batch:
        batch = self.inner.batch_for(step)
        batch["poison"] = torch.full((batch["targets"].shape[0],), float("nan") if step == self.bad else 0.0)
        return batch

    def log_values(self, step: int) -> dict[str, float]:
        return {}


def test_non_finite_gradient_skips_the_update_and_never_reaches_a_checkpoint(tmp_path):
    trainer = make_trainer(tmp_path, micro=4, source=PoisonAt(MaskedRows(300, 8, 16), bad=1))
    plain_loss = trainer.stage.loss
    trainer.stage.loss = lambda model, batch: (plain_loss(model, batch)[0] * (1 + batch["poison"].sum()), {})
    trainer.fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("skipped", False) for r in records] == [False, True, False]
    state = json.loads((tmp_path / "checkpoints" / "step_000003" / "state.json").read_text())
    assert state["skipped_steps"] == 1
    for ckpt in sorted((tmp_path / "checkpoints").iterdir()):
        weights = load_file(ckpt / "model.safetensors")
        assert all(torch.isfinite(w).all() for w in weights.values()), ckpt.name
    # The skipped step left weights and optimizer alone: two real updates in three steps.
    optim = torch.load(tmp_path / "checkpoints" / "step_000003" / "optimizer.pt", weights_only=True)
    assert {float(v) for k, v in optim.items() if k.endswith(".step")} == {2.0}


def test_non_finite_gradients_in_a_row_stop_the_run(tmp_path):
    from scratchlm.train.metrics import TrainingDiverged

    trainer = make_trainer(tmp_path, micro=4, source=MaskedRows(300, 8, 16))
    trainer.cfg.train.max_steps = 10
    plain_loss = trainer.stage.loss
    trainer.stage.loss = lambda model, batch: (plain_loss(model, batch)[0] * (float("inf") if trainer.step >= 2 else 1),
                                               {})
    with pytest.raises(TrainingDiverged, match="not finite for 3 steps in a row"):
        trainer.fit()
    kept = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert kept[-1] == "step_000004"  # saved every step; steps 3 and 4 were skipped, so their weights are step 2's
    weights = load_file(tmp_path / "checkpoints" / kept[-1] / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())


@pytest.mark.parametrize("dp,micro,user,expected", [
    (1, 16, False, 16), (2, 16, False, 8), (3, 16, True, None), (4, 3, False, 2), (2, 8, True, 8),
])
def test_micro_batch_fits_the_layout_unless_the_user_set_it(dp, micro, user, expected):
    cfg = Config(train=TrainConfig(seq_len=16, micro_batch_size=micro, global_batch_tokens=16 * 16))
    keys = frozenset({"train.micro_batch_size"}) if user else frozenset()
    if dp == 3:  # 16 sequences do not split into 3 ranks at all
        with pytest.raises(Exception, match="does not split into 3"):
            fit_micro_batch(cfg, dp, keys)
        return
    note = fit_micro_batch(cfg, dp, keys)
    assert cfg.train.micro_batch_size == expected
    assert (note is None) == (expected == micro)


def test_a_user_micro_batch_that_cannot_divide_is_refused():
    cfg = Config(train=TrainConfig(seq_len=16, micro_batch_size=16, global_batch_tokens=16 * 16))
    with pytest.raises(Exception, match="choose a divisor of 8"):
        fit_micro_batch(cfg, 2, frozenset({"train.micro_batch_size"}))


class WithValues(TokenStage):
    """A stage whose loss also reports a value per unit (here: 2 per trained token)."""

    def loss(self, model, batch):
        loss, _ = super().loss(model, batch)
        return loss, {"twice": 2.0 * (batch["targets"] != IGNORE).sum().float()}


def test_a_stage_logs_the_means_of_its_loss_values(tmp_path):
    trainer = make_trainer(tmp_path, micro=2)
    source = trainer.stage.source
    trainer.stage = WithValues("test", source, [source.batch_for(9)])
    trainer.cfg.train.eval_every = 3
    trainer.fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(r["twice"] == pytest.approx(2.0) for r in records)  # summed, then divided by the global count
    assert records[-1]["val_twice"] == pytest.approx(2.0) and "val_loss" in records[-1]
