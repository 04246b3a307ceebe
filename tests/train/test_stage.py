"""The summed next-token cross-entropy: chunked, it gives the plain loss and gradients without ever holding
the batch's logits in fp32."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile
from torch.profiler._memory_profiler import Action

from scratchlm.train import stage
from scratchlm.train.stage import IGNORE, token_loss_sum


def plain_loss_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE, reduction="sum")


def logits_and_targets(dtype: torch.dtype, rows: int = 3, seq: int = 37, vocab: int = 300):
    g = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(rows, seq, vocab, generator=g)).to(dtype).requires_grad_()
    targets = torch.randint(0, vocab, (rows, seq), generator=g)
    targets[0, :10] = IGNORE  # an untrained prompt
    targets[2] = IGNORE  # a row trained nowhere
    return logits, targets


def loss_and_grad(fn, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits.grad = None
    loss = fn(logits, targets)
    (0.37 * loss).backward()  # a scale, as the trainer's 1 / trained tokens
    return loss.detach(), logits.grad.clone()


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.bfloat16, 1e-6)], ids=["fp32", "bf16"])
@pytest.mark.parametrize("chunk_elements", [2**22, 1000], ids=["one-chunk", "chunks-of-3-rows"])
def test_chunked_cross_entropy_equals_the_plain_one(monkeypatch, dtype, tol, chunk_elements):
    monkeypatch.setattr(stage, "CHUNK_ELEMENTS", chunk_elements)
    logits, targets = logits_and_targets(dtype)
    loss, grad = loss_and_grad(token_loss_sum, logits, targets)
    plain, plain_grad = loss_and_grad(plain_loss_sum, logits, targets)
    assert loss.dtype == torch.float32 and grad.dtype == dtype
    torch.testing.assert_close(loss, plain, rtol=tol, atol=0)
    # bf16: both compute the gradient in fp32 and round it once to bf16
    torch.testing.assert_close(grad.float(), plain_grad.float(), rtol=tol, atol=1e-7)
    assert (grad[2] == 0).all() and (grad[0, :10] == 0).all()  # untrained positions get no gradient


def test_nothing_trained_gives_zero_not_nan():
    logits, targets = logits_and_targets(torch.float32)
    targets[:] = IGNORE
    loss, grad = loss_and_grad(token_loss_sum, logits, targets)
    assert loss.item() == 0.0 and (grad == 0).all()


def peak_bytes(fn, logits: torch.Tensor, targets: torch.Tensor) -> int:
    """Peak bytes allocated by the loss's forward and backward, beyond the logits themselves."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        fn(logits, targets).backward()
    live = peak = 0
    for _, action, _, size in prof._memory_profile().timeline:
        live += size if action == Action.CREATE else -size if action == Action.DESTROY else 0
        peak = max(peak, live)
    return peak


def test_the_logits_never_exist_in_fp32(monkeypatch):
    """bf16 logits of 512 tokens x a 32k vocabulary (32 MiB): the plain loss adds three fp32 copies of them,
    the chunked one their bf16 gradient and one fp32 chunk at a time."""
    monkeypatch.setattr(stage, "CHUNK_ELEMENTS", 2**20)
    tokens, vocab = 512, 32768
    logits = torch.randn(1, tokens, vocab).to(torch.bfloat16).requires_grad_()
    targets = torch.randint(0, vocab, (1, tokens))
    bf16_logits = tokens * vocab * 2
    chunked = peak_bytes(token_loss_sum, logits, targets)
    logits.grad = None
    plain = peak_bytes(plain_loss_sum, logits, targets)
    assert chunked <= bf16_logits + 4 * 2**20 + 2**20  # the gradient, one fp32 chunk, small change
    assert plain >= 3 * 2 * bf16_logits  # three fp32 copies at once
    print(f"peak beyond the logits: chunked {chunked / 2**20:.0f} MiB, plain {plain / 2**20:.0f} MiB")
