"""Activation checkpointing and torch.compile change how a block runs, never what it computes or
what its parameters are called."""

import pytest
import torch

from scratchlm.config import TrainConfig
from scratchlm.model import build_model
from scratchlm.parallel.parallelize import apply_activation_checkpointing, apply_compile, parallelize
from scratchlm.train.stage import token_loss_sum

from conftest import small_model_config


def loss_and_grads(model, tokens):
    model.zero_grad(set_to_none=True)
    loss = token_loss_sum(model(tokens[:, :-1]), tokens[:, 1:]) / tokens[:, 1:].numel()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("wrap,tol", [(apply_activation_checkpointing, 0.0), (apply_compile, 1e-5)],
                         ids=["activation_checkpointing", "compile"])
def test_wrapped_model_computes_the_same(wrap, tol):
    cfg = small_model_config()
    plain, wrapped = build_model(cfg, seed=0), build_model(cfg, seed=0)
    wrap(wrapped)
    assert list(wrapped.state_dict()) == list(plain.state_dict())  # checkpoints stay interchangeable
    tokens = torch.randint(0, cfg.vocab_size, (2, 17), generator=torch.Generator().manual_seed(0))
    loss_a, grads_a = loss_and_grads(plain, tokens)
    loss_b, grads_b = loss_and_grads(wrapped, tokens)
    torch.testing.assert_close(loss_b, loss_a, rtol=tol, atol=tol)
    names_b = {n.replace("._checkpoint_wrapped_module", ""): g for n, g in grads_b.items()}
    for name, grad in grads_a.items():
        torch.testing.assert_close(names_b[name], grad, rtol=tol, atol=tol, msg=name)


@pytest.mark.parametrize("mode,per_block", [("blocks", True), ("model", False), ("off", False)])
def test_only_blocks_mode_compiles_each_block(mode, per_block):
    """train.compile model compiles the loss with the whole model in the trainer, not block by block."""
    model = build_model(small_model_config(), seed=0)
    parallelize(model, TrainConfig(compile=mode))
    assert all((block._compiled_call_impl is not None) == per_block for block in model.layers.values())
