"""scratchlm reward: the Bradley-Terry loss against its formula, a run as a user runs it (lineage, a score head on
the parent's trunk, held-out pairwise accuracy that rises), the exported LlamaForSequenceClassification scoring
the same in transformers, and bad input."""

from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path

import pytest
import torch

from scratchlm.errors import ScratchError
from scratchlm.posttrain.reward import bradley_terry_loss, check_reward_model
from scratchlm.run import load_run
from scratchlm.tokenizer import TOKENIZER_FILE, train_tokenizer
from scratchlm.train.metrics import read_metrics

from conftest import WORDS, run_cli

sys.path.insert(0, str(Path(__file__).parent))
from test_cli_errors import fails  # noqa: E402
from test_dpo import PAIRS, pairs, write_pairs  # noqa: E402, F401 - its fixture serves here too

CONVERSATIONS = [
    [{"role": "user", "content": "3+4"}, {"role": "assistant", "content": "7"}],
    [{"role": "system", "content": "sum"}, {"role": "user", "content": "10+20"},
     {"role": "assistant", "content": "30 and so on and so on"}],
    [{"role": "user", "content": "1+1"}, {"role": "assistant", "content": "2"}, {"role": "user", "content": "x2"},
     {"role": "assistant", "content": "4"}],
]


@pytest.fixture(scope="module")
def reward_model(base, pairs, tmp_path_factory) -> Path:  # noqa: F811 - the fixtures imported above
    out = tmp_path_factory.mktemp("rm") / "run"
    run_cli("reward", str(base), "--data", str(pairs), "--out", str(out), "--max-steps", "12", *PAIRS,
            "--optim.lr", "3e-3")
    return out


def test_bradley_terry_loss_against_its_formula():
    chosen, rejected = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1.0, 1.0, 0.5])
    losses = bradley_terry_loss(chosen, rejected)
    assert losses.tolist() == pytest.approx([math.log1p(math.exp(-d)) for d in (1.0, -2.0, 0.0)])
    with_margin = bradley_terry_loss(chosen, rejected, torch.tensor([1.0, 0.0, -1.0]))
    assert with_margin.tolist() == pytest.approx([math.log(2), math.log1p(math.exp(2)), math.log1p(math.exp(-1))])


def test_reward_run_has_a_score_head_on_its_parents_trunk_and_learns(base, reward_model):  # noqa: F811
    cfg = (reward_model / "config.yaml").read_text()
    assert "stage: reward" in cfg and f"parent: {base.resolve()}" in cfg and "head: score" in cfg
    records = read_metrics(reward_model)
    assert {"accuracy", "margins", "rewards/chosen", "rewards/rejected", "val_accuracy"} <= set(records[-1])
    assert records[-1]["val_accuracy"] >= 0.9 and records[-1]["val_loss"] < math.log(2)
    _, _, model = load_run(reward_model)
    assert model.score is not None and model.output is None
    with torch.no_grad():
        assert model(torch.tensor([[0, 4, 5]])).shape == (1, 3)  # one score per position


def test_exported_reward_model_scores_the_same_in_transformers(reward_model, tmp_path):
    """transformers reads the score at the last token that is not pad_token_id, in a right-padded batch."""
    transformers = pytest.importorskip("transformers")
    from scratchlm.chat import load_chat_format

    run_cli("export-hf", str(reward_model), str(tmp_path / "hf"))
    assert not (tmp_path / "hf" / "generation_config.json").exists()
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    assert type(hf).__name__ == "LlamaForSequenceClassification" and hf.config.num_labels == 1
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    batch = tokenizer.apply_chat_template(CONVERSATIONS, tokenize=True, padding=True, return_tensors="pt",
                                          return_dict=True)
    fmt = load_chat_format(reward_model)
    _, _, model = load_run(reward_model)
    with torch.no_grad():
        theirs = hf(**batch).logits.squeeze(-1)
        ours = torch.stack([model(torch.tensor([fmt.render(c).ids]))[0, -1] for c in CONVERSATIONS])
    assert batch["input_ids"].shape[1] > min(len(fmt.render(c).ids) for c in CONVERSATIONS)  # it was padded
    assert ours.std() > 1e-3  # the scores differ from one conversation to another
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-4)


def test_a_reward_model_is_checked_against_the_policy_it_scores(base, reward_model, tmp_path):  # noqa: F811
    check_reward_model(reward_model, base)  # the same tokenizer: fine
    with pytest.raises(ScratchError, match="is not a reward model"):
        check_reward_model(base, base)
    other = tmp_path / "other_rm"
    shutil.copytree(reward_model, other)
    train_tokenizer(iter([" ".join(WORDS)] * 50), 300).save(other / TOKENIZER_FILE)
    with pytest.raises(ScratchError, match="was trained with another tokenizer than the policy"):
        check_reward_model(other, base)


def test_bad_input_is_one_clear_line(base, pairs, tmp_path, capsys):  # noqa: F811
    identical = write_pairs(tmp_path / "identical.jsonl", 50, identical=50)
    cases = [
        (["reward", str(base), "--out", str(tmp_path / "o1"), "--model.head", "lm"], "a reward model has model.head"),
        (["reward", str(base), "--out", str(tmp_path / "o2"), "--parallel.tp", "2"], "tensor parallel"),
        (["reward", str(base), "--data", str(identical), "--out", str(tmp_path / "o3"), *PAIRS],
         "identical chosen and rejected"),
        (["reward", str(base), "--out", str(tmp_path / "o4"), "--reward.margins", "1"], "did you mean 'reward.margin'"),
    ]
    for args, message in cases:
        assert message in fails(capsys, *args), args
