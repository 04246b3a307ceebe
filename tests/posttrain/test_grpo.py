"""scratchlm rl --algo grpo: advantages, clipping, the KL estimate and the loss normalisations against their
formulas on hand-made batches; a run as a user runs it (lineage, metrics, report-card row); the same steps on
one process and on FSDP with 2 ranks; exact resume; and bad input.

The runs reward the length of the completion's text (rl_text_length.py): an untrained model's answers are never
right, so a gsm8k reward would give every sample of a group the same reward and every advantage 0."""

from __future__ import annotations

import json
import math
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from scratchlm.config import RLConfig
from scratchlm.model import build_model
from scratchlm.posttrain.grpo import GRPOStage, clipped_token_loss, group_advantages, k3, row_weights
from scratchlm.posttrain.rollout import Prompt, Sample, collate_samples
from scratchlm.train.metrics import read_metrics
from scratchlm.train.stage import IGNORE

from conftest import small_model_config, subprocess_env

SCRIPT = Path(__file__).with_name("rl_text_length.py")  # scratchlm with a reward that differs within each group
# 4 prompts x 4 samples of 8 tokens per step, two steps per rollout (the second learns from older samples, so
# the ratio moves off 1), a KL penalty, fp32 so layouts agree.
RL = ["--reward", "text_length", "--rl.group_size", "4", "--rl.prompts_per_step", "4", "--rl.max_new_tokens", "8",
      "--rl.steps_per_rollout", "2", "--rl.kl_coef", "0.1", "--train.seq_len", "64", "--train.precision", "fp32",
      "--train.micro_batch_size", "4", "--train.save_every", "2", "--optim.lr", "3e-3"]
CURVE = ("loss", "reward", "pass@1", "response_length", "kl", "clip_fraction", "grad_norm")


def rl_cli(*args: str, nproc: int = 1, check: bool = True) -> subprocess.CompletedProcess:
    launcher = [] if nproc == 1 else ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc)]
    proc = subprocess.run([sys.executable, *launcher, str(SCRIPT), *args], capture_output=True, text=True,
                          env=subprocess_env(), timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"scratchlm {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def curve(run: Path) -> list[float]:
    return [r[k] for r in read_metrics(run) for k in CURVE]


@pytest.fixture(scope="module")
def problems(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("problems") / "sums.jsonl"
    with path.open("w") as f:
        for i in range(40):
            f.write(json.dumps({"question": f"What is {i} + {i % 7}?", "answer": f"#### {i + i % 7}"}) + "\n")
    return path


@pytest.fixture(scope="module")
def straight(base, problems, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rl") / "straight"
    rl_cli("rl", str(base), "--data", str(problems), "--out", str(out), "--max-steps", "4", *RL)
    return out


def test_group_advantages_against_the_formula():
    rewards = [[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0], [0.0, 0.5, 1.0, 0.0]]
    scaled = group_advantages(torch.tensor(rewards))
    centred = group_advantages(torch.tensor(rewards), scale=False)
    for g, group in enumerate(rewards):
        mean, std = statistics.mean(group), statistics.stdev(group)
        for i, r in enumerate(group):
            assert scaled[g, i].item() == pytest.approx((r - mean) / (std + 1e-4), rel=1e-6, abs=1e-7)
            assert centred[g, i].item() == pytest.approx(r - mean, abs=1e-7)
    assert scaled[1].abs().max() == 0  # equal rewards: no signal


def test_clipping_and_k3_against_the_formula():
    deltas = torch.tensor([[0.5, -0.5, 0.05, 0.3], [-0.5, 0.1, 0.0, 0.2]])  # log pi - log pi_old
    logps = torch.tensor([[-1.0, -2.0, -0.5, -3.0], [-0.2, -1.5, -2.5, -0.7]])
    advantages = torch.tensor([1.5, -0.7])
    loss, clipped = clipped_token_loss(logps, logps - deltas, advantages, 0.2, 0.28)
    for i in range(2):
        for t in range(4):
            rho, a = math.exp(deltas[i, t].item()), advantages[i].item()
            want = -min(rho * a, min(max(rho, 0.8), 1.28) * a)
            assert loss[i, t].item() == pytest.approx(want, rel=1e-6)
            assert clipped[i, t].item() == ((rho > 1.28 and a > 0) or (rho < 0.8 and a < 0))
    assert clipped.sum() == 3  # 1.65 and 1.35 with A > 0, 0.61 with A < 0
    ref = logps + 0.3
    assert k3(logps, ref).flatten().tolist() == pytest.approx([math.exp(0.3) - 1.3] * 8, rel=1e-5)
    assert k3(logps, logps).abs().max() == 0


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
def test_row_weights_give_each_normalisation(loss_type):
    lengths = torch.tensor([2, 4, 1])
    losses = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    mask = torch.arange(8) < lengths[:, None]
    per_row = (losses * mask).sum(1)
    tokens, n = lengths.sum().item(), 3
    got = (row_weights(lengths, tokens, n, loss_type, 8) * per_row).sum() / tokens  # what the loop computes
    want = {"grpo": sum(per_row[i] / lengths[i] for i in range(n)) / n, "dapo": per_row.sum() / tokens,
            "dr_grpo": per_row.sum() / (n * 8)}[loss_type]
    assert got.item() == pytest.approx(want.item(), rel=1e-6)


def test_what_a_tool_feeds_is_read_but_not_trained():
    """A calculator's result is in the row the policy reads, and never a target: the policy did not choose it."""
    sample = Sample(Prompt(0, [5, 6], {}), [8, 9, 10, 2], [-1.0, 0.0, 0.0, -0.5], [False, True, True, False],
                    truncated=False)
    batch = collate_samples([sample], pad_id=0)
    assert batch["inputs"].tolist() == [[5, 6, 8, 9, 10]]
    assert batch["targets"].tolist() == [[IGNORE, 8, IGNORE, IGNORE, 2]]


def test_stage_loss_on_a_hand_made_batch_is_the_formula():
    samples = [Sample(Prompt(0, [5, 6, 7], {}), [8, 9, 2], [-1.0, -2.0, -0.5], [False] * 3, truncated=False),
               Sample(Prompt(1, [5, 6], {}), [11, 3], [-0.25, -4.0], [False] * 2, truncated=False)]
    batch = collate_samples(samples, pad_id=0)
    assert batch["inputs"].tolist() == [[5, 6, 7, 8, 9], [5, 6, 11, 0, 0]]
    assert batch["targets"].tolist() == [[IGNORE, IGNORE, 8, 9, 2], [IGNORE, 11, 3, IGNORE, IGNORE]]
    assert batch["old_logps"].tolist() == [[0, 0, -1.0, -2.0, -0.5], [0, -0.25, -4.0, 0, 0]]
    model, reference = build_model(small_model_config(), seed=1), build_model(small_model_config(), seed=2)
    with torch.no_grad():  # old log-probs near the model's own, some beyond the clip
        own = F.log_softmax(model(batch["inputs"]), -1).gather(2, batch["targets"].clamp(min=0)[..., None])[..., 0]
    batch["old_logps"] = torch.where(batch["targets"] != IGNORE, own - torch.tensor([[0, 0, 0.5, -0.5, 0.05],
                                                                                     [0, -0.5, 0.1, 0, 0]]), 0)
    batch["advantages"], batch["weights"] = torch.tensor([1.5, -0.7]), torch.tensor([0.8, 1.3])
    rl = RLConfig(clip_low=0.2, clip_high=0.28, kl_coef=0.05)
    loss, values = GRPOStage(None, reference, rl).loss(model, batch)

    want = kl = clipped = 0.0
    with torch.no_grad():
        lp, ref = F.log_softmax(model(batch["inputs"]), -1), F.log_softmax(reference(batch["inputs"]), -1)
    for i in range(2):
        a, w = batch["advantages"][i].item(), batch["weights"][i].item()
        for t, target in enumerate(batch["targets"][i].tolist()):
            if target == IGNORE:
                continue
            p, q = lp[i, t, target].item(), ref[i, t, target].item()
            rho = math.exp(p - batch["old_logps"][i, t].item())
            k = math.exp(q - p) - (q - p) - 1
            want += w * (-min(rho * a, min(max(rho, 0.8), 1.28) * a) + 0.05 * k)
            kl += k
            clipped += (rho > 1.28 and a > 0) or (rho < 0.8 and a < 0)
    assert loss.item() == pytest.approx(want, rel=1e-5)
    assert values["kl"].item() == pytest.approx(kl, rel=1e-5) and values["clip_fraction"].item() == clipped == 2


def test_rl_run_logs_its_metrics_and_lineage_and_joins_the_report_card(straight, base):
    from scratchlm.eval.report import report

    cfg = (straight / "config.yaml").read_text()
    assert "stage: rl" in cfg and f"parent: {base.resolve()}" in cfg and "group_size: 4" in cfg
    records = read_metrics(straight)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    keys = {"reward", "pass@1", "response_length", "truncated", "flat_groups", "rollout_s", "kl", "clip_fraction"}
    assert keys <= set(records[0]) and "val_loss" not in records[-1]
    # The first step's samples come from the reference's weights: KL 0, and the engine's log-probs are the loss's.
    assert records[0]["kl"] == 0 and records[0]["clip_fraction"] == 0 and records[2]["kl"] > 0
    assert 1 <= records[0]["response_length"] <= 8 and 0 < records[0]["reward"]
    assert (straight / "plots" / "reward.png").is_file()
    md, _ = report(straight)
    assert "| rl | straight |" in md.read_text()


def test_fsdp_on_two_ranks_takes_the_same_rl_steps(straight, base, problems, tmp_path):
    """2 ranks each sample half the prompts, with the same seeds, from the gathered weights: the same samples,
    rewards, advantages and updates as one process, over a whole rollout (its second step learns from older
    samples)."""
    rl_cli("rl", str(base), "--data", str(problems), "--out", str(tmp_path / "fsdp"), "--max-steps", "2", *RL,
           "--train.micro_batch_size", "2", nproc=2)
    one, two = curve(straight)[:2 * len(CURVE)], curve(tmp_path / "fsdp")
    assert max(abs(a - b) for a, b in zip(one, two, strict=True)) < 2e-5, (one, two)  # 5 logged digits


def test_resume_continues_rl_bit_for_bit(straight, base, problems, tmp_path):
    """Back to the checkpoint of step 2, then on to step 4 again."""
    split = shutil.copytree(straight, tmp_path / "split")
    shutil.rmtree(split / "checkpoints" / "step_000004")
    rl_cli("rl", str(base), "--data", str(problems), "--out", str(split), *RL, "--max-steps", "4", "--resume")
    assert curve(split) == curve(straight)


def test_bad_input_is_one_clear_line(base, tmp_path, capsys):
    from scratchlm.cli import main

    reward_model = tmp_path / "rm"  # what a reward run's directory says of its model
    shutil.copytree(base, reward_model)
    config = reward_model / "config.yaml"
    config.write_text(config.read_text().replace("head: lm", "head: score"))
    out = str(tmp_path / "out")
    cases = [
        (["rl", str(base), "--out", out, "--algo", "reinforce"], "--algo must be one of grpo, ppo"),
        (["rl", str(base), "--out", out, "--rl.group_size", "1"], "rl.group_size must be at least 2"),
        (["rl", str(reward_model), "--out", out], "is a reward model"),
        (["rl", str(base), "--out", out, "--algo", "ppo"], "needs a reward model to optimise against"),
        (["rl", str(base), "--out", out, "--reward", "vibes"], "--reward must be one of gsm8k"),
        (["rl", str(base), "--out", out, "--rl.steps_per_rollout", "3"], "multiples of rl.steps_per_rollout 3"),
        (["rl", str(base), "--out", out, "--tools", "abacus"], "rl.tools: "),
        (["rl", str(base), "--out", out, "--algo", "ppo", "--reward-model", str(reward_model), "--tools", "calculator"],
         "rl.tools runs with --algo grpo only"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit) as exited:
            main(args)
        err = capsys.readouterr().err
        assert exited.value.code == 2 and message in err and err.count("\n") == 1, (args, err)
    assert not Path(out).exists()
