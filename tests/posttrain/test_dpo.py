"""scratchlm dpo: the loss against its formulas, sequence log-probs against a direct computation, a run as a user
runs it (lineage, log 2 at the start, preference accuracy that rises), the same steps on one process, four
micro-batches and FSDP on 2 ranks, exact resume, and bad input."""

from __future__ import annotations

import json
import math
import random
import shutil
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from scratchlm.model import build_model
from scratchlm.posttrain.dpo import dpo_loss, pair_logps, sequence_logps
from scratchlm.posttrain.pairs import collate_pairs, to_pair_rows
from scratchlm.train.metrics import read_metrics
from scratchlm.train.stage import IGNORE

from conftest import ROOT, run_cli, small_model_config

sys.path.insert(0, str(ROOT / "tests" / "parallel"))
from test_cli_errors import fails  # noqa: E402
from test_layouts import torchrun  # noqa: E402

# Pairs of short arithmetic replies: 8 pairs per step, 16 held out for validation, fp32 so layouts agree.
PAIRS = ["--train.seq_len", "64", "--train.global_batch_tokens", "512", "--train.precision", "fp32",
         "--train.eval_every", "3", "--train.eval_batches", "2", "--train.log_every", "1", "--optim.warmup_steps", "1",
         "--data.val_fraction", "0.1"]


def write_pairs(path: Path, n: int, seed: int = 0, identical: int = 0) -> Path:
    """Sums answered alone (chosen) or rambling on after the answer (rejected), in several record formats;
    the first `identical` records have the same reply on both sides."""
    rng = random.Random(seed)
    with path.open("w") as f:
        for i in range(n):
            a, b = rng.randint(1, 99), rng.randint(1, 99)
            good, bad = str(a + b), f"{a + b} and so on and so on"
            if i < identical:
                bad = good
            if i % 3 == 0:
                record = {"prompt": f"{a}+{b}", "chosen": good, "rejected": bad}
            elif i % 3 == 1:
                user = {"role": "user", "content": f"{a}+{b}"}
                record = {"chosen": [user, {"role": "assistant", "content": good}],
                          "rejected": [user, {"role": "assistant", "content": bad}]}
            else:
                record = {"chosen": f"\n\nHuman: {a}+{b}\n\nAssistant: {good}",
                          "rejected": f"\n\nHuman: {a}+{b}\n\nAssistant: {bad}"}
            f.write(json.dumps(record) + "\n")
    return path


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    return write_pairs(tmp_path_factory.mktemp("pairs") / "pairs.jsonl", 300)


def curve(run: Path, keys: tuple[str, ...] = ("loss", "accuracy", "margins")) -> list[float]:
    """Every step's logged values, then the last validation's: what a layout must not change."""
    records = read_metrics(run)
    return [r[k] for r in records for k in keys] + [records[-1][f"val_{k}"] for k in keys]


def test_dpo_loss_against_its_formulas():
    pc, pr = torch.tensor([-3.0, -10.0, -4.0]), torch.tensor([-5.0, -2.0, -4.5])
    rc, rr = torch.tensor([-4.0, -9.0, -4.0]), torch.tensor([-4.5, -3.0, -4.0])
    beta = 0.1
    losses, chosen, rejected = dpo_loss(pc, pr, rc, rr, beta)
    for i in range(3):
        h = (pc[i] - rc[i]) - (pr[i] - rr[i])  # 1.5, -2.0, 0.5
        assert losses[i].item() == pytest.approx(math.log1p(math.exp(-beta * h.item())), rel=1e-6)
        assert chosen[i].item() == pytest.approx(beta * (pc[i] - rc[i]).item())
        assert rejected[i].item() == pytest.approx(beta * (pr[i] - rr[i]).item())
    ipo, _, _ = dpo_loss(pc, pr, rc, rr, beta, loss="ipo")
    assert ipo.tolist() == pytest.approx([(1.5 - 5) ** 2, (-2 - 5) ** 2, (0.5 - 5) ** 2])
    same, zero_c, zero_r = dpo_loss(pc, pr, pc, pr, beta)  # the policy is the reference: log 2, no reward
    assert same.tolist() == pytest.approx([math.log(2)] * 3) and zero_c.abs().max() == zero_r.abs().max() == 0


def test_sequence_log_probs_sum_the_replys_tokens_alone(base):
    from scratchlm.chat import load_chat_format
    from scratchlm.data.chat_data import Skips
    from scratchlm.data.preference_data import PreferencePair

    fmt = load_chat_format(base)
    prompt = [{"role": "user", "content": "1+2"}, {"role": "assistant", "content": "3"},
              {"role": "user", "content": "x2"}]
    pair = PreferencePair(prompt, [{"role": "assistant", "content": "6"}], [{"role": "assistant", "content": "7!"}])
    (rows,) = to_pair_rows([pair], fmt, 64, Skips(), "test")
    trained = [fmt.tokenizer.decode([t]) for t in rows.rejected.targets if t != IGNORE]
    assert "".join(trained) == "7!<|end|>"  # the prompt's earlier reply "3" is not counted
    model = build_model(small_model_config(vocab_size=fmt.tokenizer.vocab_size), seed=1).eval()
    batch = collate_pairs([rows], fmt.tokenizer.pad_id)
    with torch.no_grad():
        got = pair_logps(model, batch)
        for side, row in enumerate((rows.chosen, rows.rejected)):
            logp = F.log_softmax(model(torch.tensor([row.inputs]))[0], dim=-1)
            want = sum(logp[t, target] for t, target in enumerate(row.targets) if target != IGNORE)
            assert got[0, side].item() == pytest.approx(want.item(), rel=1e-5)
        assert sequence_logps(model, batch["inputs"][0], batch["targets"][0]).tolist() == pytest.approx(got[0].tolist())


def test_dpo_run_records_its_lineage_starts_at_log_2_and_learns_the_preference(base, pairs, tmp_path):
    out = tmp_path / "dpo"
    proc = run_cli("dpo", str(base), "--data", str(pairs), "--out", str(out), "--max-steps", "12", *PAIRS,
                   "--optim.lr", "3e-3")
    cfg = (out / "config.yaml").read_text()
    assert "stage: dpo" in cfg and f"parent: {base.resolve()}" in cfg and "beta: 0.1" in cfg
    assert "validation pairwise accuracy" in proc.stdout
    records = read_metrics(out)
    first, last = records[0], records[-1]
    # The policy starts as the reference: every implicit reward is 0, the loss log 2.
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert first["rewards/chosen"] == first["rewards/rejected"] == first["margins"] == 0
    assert {"logps/chosen", "logps/rejected", "padding", "val_rewards/chosen", "val_rewards/rejected"} <= set(last)
    assert last["val_accuracy"] >= 0.9 and last["val_margins"] > 0 and last["val_loss"] < math.log(2)


def test_ipo_starts_at_the_square_of_its_target(base, pairs, tmp_path):
    run_cli("dpo", str(base), "--data", str(pairs), "--out", str(tmp_path / "ipo"), "--max-steps", "1", *PAIRS,
            "--dpo.loss", "ipo", "--dpo.beta", "0.5")
    assert read_metrics(tmp_path / "ipo")[0]["loss"] == pytest.approx((1 / (2 * 0.5)) ** 2, abs=1e-5)


@pytest.mark.parametrize("layout", ["micro4", "fsdp2"])
def test_micro_batches_and_data_parallel_give_the_same_dpo_steps(base, pairs, tmp_path, layout):
    """One micro-batch of 8 pairs, four of 2, and FSDP on 2 ranks (the reference sharded too) train the same
    policy in fp32: per-step losses, accuracies and margins, and the final validation, agree."""
    args = ["dpo", str(base), "--data", str(pairs), "--max-steps", "4", *PAIRS, "--optim.lr", "3e-3"]
    run_cli(*args, "--out", str(tmp_path / "one"), "--train.micro_batch_size", "8")
    if layout == "micro4":
        run_cli(*args, "--out", str(tmp_path / "other"), "--train.micro_batch_size", "2")
    else:
        torchrun(2, *args, "--out", str(tmp_path / "other"), "--train.micro_batch_size", "4")
    one, other = curve(tmp_path / "one"), curve(tmp_path / "other")
    assert max(abs(a - b) for a, b in zip(one, other, strict=True)) < 1e-5, (one, other)


def test_resume_continues_dpo_bit_for_bit(base, pairs, tmp_path):
    args = ["dpo", str(base), "--data", str(pairs), *PAIRS, "--optim.lr_decay_steps", "6", "--train.save_every", "3"]
    run_cli(*args, "--out", str(tmp_path / "straight"), "--max-steps", "6")
    run_cli(*args, "--out", str(tmp_path / "split"), "--max-steps", "3")
    run_cli(*args, "--out", str(tmp_path / "split"), "--max-steps", "6", "--resume")
    keys = ("loss", "accuracy", "margins", "logps/chosen", "logps/rejected")
    assert curve(tmp_path / "split", keys) == curve(tmp_path / "straight", keys)


def test_bad_input_is_one_clear_line(base, pairs, tmp_path, capsys):
    reward_model = tmp_path / "rm"  # what a reward run's directory says of its model
    shutil.copytree(base, reward_model)
    config = reward_model / "config.yaml"
    config.write_text(config.read_text().replace("head: lm", "head: score"))
    cases = [
        (["dpo", str(reward_model), "--out", str(tmp_path / "o1")], "is a reward model"),
        (["dpo", str(base), "--out", str(tmp_path / "o2"), "--parallel.pp", "2"], "pipeline parallel"),
        (["dpo", str(base), "--out", str(tmp_path / "o3"), "--dpo.loss", "hinge"], "dpo.loss must be sigmoid or ipo"),
        (["dpo", str(tmp_path / "nope"), "--out", str(tmp_path / "o4")], "does not exist"),
    ]
    for args, message in cases:
        assert message in fails(capsys, *args), args


def test_identical_pairs_are_counted_and_skipped(base, tmp_path):
    data = write_pairs(tmp_path / "some_identical.jsonl", 300, identical=40)
    proc = run_cli("dpo", str(base), "--data", str(data), "--out", str(tmp_path / "d"), "--max-steps", "1", *PAIRS)
    said = proc.stdout + proc.stderr
    # Records 0..39 are identical; every tenth record (9, 19, 29, 39) is held out for validation.
    assert "train pairs: skipped 36 of 270 preference pairs: 36 identical chosen and rejected" in said
    assert "validation pairs: skipped 4 of 30 preference pairs: 4 identical chosen and rejected" in said
    assert "234 preference pairs from" in said
