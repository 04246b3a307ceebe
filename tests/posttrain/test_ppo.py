"""scratchlm rl --algo ppo: GAE against a plain per-step loop of its definition, the clipped policy and value
losses on a hand-made batch, the KL-shaped rewards, a run as a user runs it (lineage, the value model as a run
of its own, the first step's ratio of 1), the same steps on one process and on FSDP with 2 ranks, exact resume,
and bad input."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch

from scratchlm.cli import main
from scratchlm.posttrain.ppo import gae, kl_rewards, last_index, moment_sums, ppo_terms, whiten
from scratchlm.train.checkpoint import checkpoint_dirs
from scratchlm.train.metrics import read_metrics

from conftest import ROOT, run_cli

sys.path.insert(0, str(ROOT / "tests" / "posttrain"))
sys.path.insert(0, str(ROOT / "tests" / "parallel"))
from test_cli_errors import digest, fails  # noqa: E402
from test_dpo import write_pairs  # noqa: E402
from test_layouts import torchrun  # noqa: E402

# 4 prompts a minibatch, 2 minibatches a rollout, 2 passes: a rollout every 4 steps; short replies, fp32.
PPO = ["--algo", "ppo", "--train.seq_len", "64", "--train.precision", "fp32", "--train.log_every", "1",
       "--rl.prompts_per_step", "4", "--rl.max_new_tokens", "12", "--rl.steps_per_rollout", "4", "--ppo.epochs", "2",
       "--optim.warmup_steps", "1", "--optim.lr", "1e-3", "--train.micro_batch_size", "2"]


def responses(width: int = 9) -> torch.Tensor:
    """A mask of response tokens: a prompt before each, padding after some."""
    mask = torch.zeros(3, width, dtype=torch.bool)
    mask[0, 2:7] = True
    mask[1, 4:9] = True  # runs to the last column
    mask[2, 1:2] = True  # a one-token response
    return mask


def test_gae_equals_a_plain_loop_over_its_definition():
    torch.manual_seed(0)
    mask = responses()
    rewards, values = torch.randn(3, 9) * mask, torch.randn(3, 9) * mask
    gamma, lam = 0.9, 0.8
    advantages, returns = gae(rewards, values, mask, gamma, lam)
    for row in range(3):
        steps = mask[row].nonzero().flatten().tolist()
        r, v = [rewards[row, t].item() for t in steps], [values[row, t].item() for t in steps]
        n = len(steps)
        for i, t in enumerate(steps):
            # A_t = sum_l (gamma lambda)^l delta_{t+l}, delta_k = r_k + gamma V_{k+1} - V_k, V after the end 0
            deltas = [r[k] + gamma * (v[k + 1] if k + 1 < n else 0.0) - v[k] for k in range(n)]
            want = sum((gamma * lam) ** (k - i) * deltas[k] for k in range(i, n))
            assert advantages[row, t].item() == pytest.approx(want, abs=1e-5)
            assert returns[row, t].item() == pytest.approx(want + v[i], abs=1e-5)
    assert advantages[~mask].abs().max() == 0 and returns[~mask].abs().max() == 0
    # lambda 1, gamma 1: the advantage is the sum of the rewards still to come less the value
    ones, _ = gae(rewards, values, mask, 1.0, 1.0)
    row = mask[0].nonzero().flatten()
    assert ones[0, row[0]].item() == pytest.approx(rewards[0].sum().item() - values[0, row[0]].item(), abs=1e-5)


def test_rewards_are_the_kl_penalty_plus_the_score_at_the_last_token():
    mask = responses()
    logps, ref = -torch.rand(3, 9) * mask, -torch.rand(3, 9) * mask
    scores = torch.tensor([2.0, -1.0, 0.5])
    rewards = kl_rewards(logps, ref, scores, mask, kl_coef=0.1)
    assert last_index(mask).tolist() == [6, 8, 1]
    want = -0.1 * (logps - ref) * mask
    want[0, 6] += 2.0
    want[1, 8] -= 1.0
    want[2, 1] += 0.5
    assert torch.allclose(rewards, want)


def test_clipped_policy_and_value_losses_on_a_hand_made_batch():
    # Four tokens: advantage +-1 with the ratio above or below the clip range [0.8, 1.2].
    ratio = torch.tensor([1.5, 1.5, 0.5, 0.5])
    advantages = torch.tensor([1.0, -1.0, 1.0, -1.0])
    old = torch.log(torch.tensor([0.2, 0.2, 0.4, 0.4]))
    logps = (old + ratio.log()).requires_grad_()
    old_values = torch.tensor([0.0, 0.0, 1.0, 1.0])
    values = torch.tensor([0.5, 0.1, 1.0, 2.0], requires_grad=True)
    returns = torch.tensor([1.0, 1.0, 1.0, 0.0])
    terms = ppo_terms(logps, old, advantages, values, old_values, returns, 0.2, 0.2, 0.2)
    # max(-A rho, -A clip(rho)): the pessimistic of the two
    assert terms.policy.tolist() == pytest.approx([-1.2, 1.5, -0.5, 0.8])
    assert terms.clipped.tolist() == [1.0, 0.0, 0.0, 1.0]
    # 1/2 max((V - G)^2, (V_old + clip(V - V_old, -0.2, 0.2) - G)^2)
    assert terms.value.tolist() == pytest.approx([0.5 * 0.8**2, 0.5 * 0.9**2, 0.0, 0.5 * 2.0**2])
    assert terms.value_clipped.tolist() == [1.0, 0.0, 0.0, 0.0]
    # approx_kl = (rho - 1) - log rho
    assert terms.approx_kl.tolist() == pytest.approx([0.5 - torch.log(ratio[0]).item()] * 2 +
                                                     [-0.5 - torch.log(ratio[2]).item()] * 2, rel=1e-5)
    (terms.policy.sum() + terms.value.sum()).backward()
    # A clipped term passes no gradient; an unclipped one passes -A rho to the log-prob.
    assert logps.grad.tolist() == pytest.approx([0.0, 1.5, -0.5, 0.0])
    assert values.grad.tolist() == pytest.approx([0.0, 0.1 - 1.0, 0.0, 2.0])


def test_whitening_over_the_masked_tokens_and_in_parts():
    mask = responses()
    values = torch.randn(3, 9) * 3 + 2
    white = whiten(values, mask)
    assert white[mask].mean().item() == pytest.approx(0, abs=1e-5)
    assert white[mask].var(unbiased=False).item() == pytest.approx(1, abs=1e-4) and white[~mask].abs().max() == 0
    # Two ranks' shares, whitened with their summed moments, are the whole's whitening.
    sums = moment_sums(values[:2], mask[:2]) + moment_sums(values[2:], mask[2:])
    parts = torch.cat([whiten(values[:2], mask[:2], sums), whiten(values[2:], mask[2:], sums)])
    assert torch.allclose(parts, white, atol=1e-6)


# ------------------------------------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory, base) -> dict[str, Path]:
    """A tiny policy, preference pairs, a reward model trained from the policy for a few steps, and a PPO run of
    two rollouts with a checkpoint after each."""
    root = tmp_path_factory.mktemp("ppo")
    rm, straight = root / "rm", root / "straight"
    pairs = write_pairs(root / "pairs.jsonl", 300)
    run_cli("reward", str(base), "--data", str(pairs), "--out", str(rm), "--max-steps", "2", "--train.seq_len", "64",
            "--train.global_batch_tokens", "512", "--train.eval_every", "2", "--train.eval_batches", "1")
    run_cli(*ppo_args(base, rm, pairs), "--out", str(straight), "--max-steps", "8")
    return {"base": base, "rm": rm, "pairs": pairs, "straight": straight}


def ppo_args(base: Path, rm: Path, pairs: Path) -> list[str]:
    return ["rl", str(base), "--reward-model", str(rm), "--data", str(pairs), *PPO, "--optim.lr_decay_steps", "8",
            "--train.save_every", "4"]


def curve(run: Path) -> list[list[float]]:
    keys = ("loss", "policy_loss", "value_loss", "reward", "kl", "clipfrac", "approx_kl", "grad_norm")
    return [[r[k] for k in keys] for r in read_metrics(run)]


def test_ppo_run_records_its_lineage_and_its_value_model(runs, capsys):
    out = runs["straight"]
    cfg = (out / "config.yaml").read_text()
    assert "stage: rl" in cfg and f"parent: {runs['base'].resolve()}" in cfg and "algo: ppo" in cfg
    assert f"reward_model: {runs['rm']}" in cfg
    value = (out / "value" / "config.yaml").read_text()  # the value model: a run of the reward model's shape
    assert "head: score" in value and f"parent: {runs['rm'].resolve()}" in value
    assert [p.name for p in checkpoint_dirs(out / "value")] == ["step_000004", "step_000008"]
    records = read_metrics(out)
    assert [r["step"] for r in records] == list(range(1, 9))
    # The first step of a rollout computes the log-probs it was scored with: the ratio is 1, nothing clips.
    for first in (records[0], records[4]):
        assert first["clipfrac"] == 0 and first["approx_kl"] == pytest.approx(0, abs=1e-6)
    # Later steps of a rollout learn from older samples: the ratio moves off 1.
    assert max(r["approx_kl"] for r in records[1:4]) > 0
    # A fresh policy is its reference: the KL penalty is 0.
    first = records[0]
    assert first["kl"] == pytest.approx(0, abs=1e-5) and first["non_score_reward"] == pytest.approx(0, abs=1e-6)
    for key in ("reward", "response_length", "ended", "returns", "values", "policy_loss", "value_loss",
                "value_clipfrac"):
        assert key in first
    # The run is a policy like any other: it chats.
    main(["generate", str(out), "--prompt", "the cat", "--max-new-tokens", "4"])
    assert capsys.readouterr().out.strip()


def test_resume_continues_ppo_bit_for_bit(runs, tmp_path):
    """Back to the checkpoint of step 4 (the policy's and the value model's), then on to step 8 again."""
    split = shutil.copytree(runs["straight"], tmp_path / "split")
    for run in (split, split / "value"):
        shutil.rmtree(run / "checkpoints" / "step_000008")
    run_cli(*ppo_args(runs["base"], runs["rm"], runs["pairs"]), "--out", str(split), "--max-steps", "8", "--resume")
    assert curve(split) == curve(runs["straight"])


def test_resume_from_a_damaged_value_checkpoint_is_one_line_and_changes_nothing(runs, tmp_path, capsys):
    run = shutil.copytree(runs["straight"], tmp_path / "run")
    damaged = run / "value" / "checkpoints" / "step_000008"
    (damaged / "optimizer.pt").write_bytes((damaged / "optimizer.pt").read_bytes()[:100])
    before = digest(run)
    line = fails(capsys, *ppo_args(runs["base"], runs["rm"], runs["pairs"]), "--out", run, "--max-steps", "12",
                 "--resume")
    assert f"checkpoint {damaged} is damaged: optimizer.pt cannot be read" in line
    assert digest(run) == before  # config.yaml (now max_steps 12) and metrics.jsonl as they were


def test_fsdp_on_two_ranks_takes_the_same_ppo_steps(runs, tmp_path):
    """2 ranks each sample, score and value half of each minibatch's prompts and deal them as one process does:
    the same rollout, whitened advantages, minibatches, and policy and value updates, over a whole rollout."""
    torchrun(2, *ppo_args(runs["base"], runs["rm"], runs["pairs"]), "--out", str(tmp_path / "fsdp"),
             "--max-steps", "4", "--train.micro_batch_size", "1")
    one, two = curve(runs["straight"])[:4], curve(tmp_path / "fsdp")
    assert max(abs(a - b) for x, y in zip(one, two, strict=True) for a, b in zip(x, y, strict=True)) < 2e-5, (one, two)


def test_bad_input_is_one_clear_line(runs, tmp_path, capsys):
    other_tokenizer = tmp_path / "rm-other"  # a reward model that reads another tokenizer's ids
    shutil.copytree(runs["rm"], other_tokenizer)
    main(["prepare", "--data", str(runs["pairs"]), "--out", str(tmp_path / "prep"), "--data.vocab_size", "340",
          "--data.text_field", "prompt", "--data.workers", "1"])
    shutil.copy(tmp_path / "prep" / "tokenizer.json", other_tokenizer / "tokenizer.json")
    base, rm = str(runs["base"]), str(runs["rm"])
    cases = [
        (["rl", base, "--algo", "ppo"], "needs a reward model"),
        (["rl", rm, "--algo", "ppo", "--reward-model", rm], "is a reward model"),
        (["rl", base, "--algo", "ppo", "--reward-model", base], "is not a reward model"),
        (["rl", base, "--algo", "ppo", "--reward-model", str(other_tokenizer)], "another tokenizer"),
        (["rl", base, "--algo", "ppo", "--reward-model", str(tmp_path / "nope")], "does not exist"),
        (["rl", base, "--algo", "ppo", "--reward-model", rm, "--ppo.lam", "2"], "ppo.gamma and ppo.lam"),
    ]
    for args, message in cases:
        assert message in fails(capsys, *args, "--out", tmp_path / "o"), args
    assert not (tmp_path / "o").exists()
