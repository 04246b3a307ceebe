"""Task scores during training (train.eval_tasks): logged at each validation of a pretraining and an SFT run, equal
to `scratchlm eval` on the same checkpoint and limit (one process and FSDP ranks); training and resuming unchanged
by them; unknown tasks and layouts that cannot evaluate refused up front."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from scratchlm.cli import main
from scratchlm.config import load_config
from scratchlm.errors import ScratchError
from scratchlm.eval.evaluate import TASKS
from scratchlm.eval.task import TaskResult
from scratchlm.model import build_model
from scratchlm.parallel.world import ParallelDims, World, check_dims
from scratchlm.run import load_tokenizer, read_config
from scratchlm.train.metrics import read_metrics
from scratchlm.train.task_scores import TaskScores

from conftest import FAST, ROOT

sys.path.insert(0, str(ROOT / "tests" / "parallel"))
from test_layouts import torchrun  # noqa: E402

ONE = World(ParallelDims(), torch.device("cpu"), None)
LIMIT = 3
SCORED = ["--train.eval_tasks", "gsm8k,bpb", "--train.eval_limit", str(LIMIT)]
# One schedule for the 8-step runs and the 4 + 4 resumed one, fp32 so FSDP's run is the one process's.
COMMON = [*FAST, "--samples", "0", "--optim.lr_decay_steps", "8", "--train.precision", "fp32"]


def write_chats(path: Path, n: int) -> Path:
    """Short sums as conversations, short enough for the small model's context."""
    rng = random.Random(0)
    with path.open("w") as f:
        for _ in range(n):
            a, b = rng.randint(1, 99), rng.randint(1, 99)
            f.write(json.dumps({"messages": [{"role": "user", "content": f"{a}+{b}"},
                                             {"role": "assistant", "content": str(a + b)}]}) + "\n")
    return path


def scores(record: dict) -> dict:
    return {k: v for k, v in record.items() if k.startswith("eval/")}


def eval_cli(run: Path, *tasks: str) -> dict:
    """`scratchlm eval RUN --tasks ... --limit LIMIT`'s numbers, named as training logs them."""
    main(["eval", str(run), "--tasks", ",".join(tasks), "--limit", str(LIMIT)])
    return {f"eval/{task}/{metric}": value for task in tasks
            for metric, value in json.loads((run / "eval" / f"{task}.json").read_text())["metrics"].items()}


@pytest.fixture(scope="module")
def scored(tmp_path_factory, corpus_jsonl) -> Path:
    run = tmp_path_factory.mktemp("scored") / "run"
    main(["pretrain", "--data", str(corpus_jsonl), "--out", str(run), "--max-steps", "8", *COMMON, *SCORED])
    return run


def test_each_validation_logs_the_scores_that_scratchlm_eval_gives(scored):
    records = read_metrics(scored)
    logged = [r["step"] for r in records if scores(r)]
    assert logged == [r["step"] for r in records if "val_loss" in r] == [4, 8]  # eval_every 4
    last = scores(records[-1])
    assert {"eval/gsm8k/strict_match", "eval/gsm8k/strict_match_stderr", "eval/gsm8k/flexible_extract",
            "eval/bpb/bits_per_byte", "eval/bpb/bits_per_byte_stderr"} <= set(last)
    assert last == eval_cli(scored, "gsm8k", "bpb")  # the checkpoint of step 8, the same limit: the same numbers
    assert scores(records[3])["eval/bpb/bits_per_byte"] != last["eval/bpb/bits_per_byte"]  # each step's weights
    tensorboard = EventAccumulator(str(scored / "tensorboard"))
    tensorboard.Reload()
    assert [e.step for e in tensorboard.Scalars("eval/bpb/bits_per_byte")] == [4, 8]


def test_scores_change_neither_training_nor_resuming(scored, tmp_path, corpus_jsonl):
    """4 steps without task scores, then resumed to 8 with them: every loss of the 8 steps scored straight."""
    split = tmp_path / "split"
    main(["pretrain", "--data", str(corpus_jsonl), "--out", str(split), "--max-steps", "4", *COMMON])
    main(["pretrain", "--data", str(corpus_jsonl), "--out", str(split), "--max-steps", "8", "--resume", *COMMON,
          *SCORED])
    straight, resumed = read_metrics(scored), read_metrics(split)
    assert [(r["loss"], r.get("val_loss")) for r in resumed] == [(r["loss"], r.get("val_loss")) for r in straight]
    assert not scores(resumed[3]) and scores(resumed[-1]) == scores(straight[-1])


def test_an_sft_run_is_scored_in_chat(scored, tmp_path):
    """The SFT stage inherits its parent's eval_tasks and, by its lineage, asks in the chat format."""
    sft = tmp_path / "sft"
    main(["sft", str(scored), "--data", str(write_chats(tmp_path / "chats.jsonl", 200)), "--out", str(sft),
          "--max-steps", "3", "--train.seq_len", "64", "--train.eval_every", "3", "--train.eval_tasks", "gsm8k"])
    records = read_metrics(sft)
    assert scores(records[-1]) == eval_cli(sft, "gsm8k")
    assert TaskScores(read_config(sft), sft, load_tokenizer(sft), ONE).options.chat is True
    assert TaskScores(read_config(scored), scored, load_tokenizer(scored), ONE).options.chat is False


def test_fsdp_ranks_log_what_their_checkpoint_scores(tmp_path, corpus_jsonl):
    run = tmp_path / "fsdp"
    torchrun(2, "pretrain", "--data", str(corpus_jsonl), "--out", str(run), "--max-steps", "4", *COMMON, *SCORED,
             "--parallel.dp_shard", "2")
    assert scores(read_metrics(run)[-1]) == eval_cli(run, "gsm8k", "bpb")


def test_the_trained_model_and_the_rng_are_left_as_they_were(scored, monkeypatch):
    """Whatever a task draws, the training stream's RNG does not see it; the model stays in train mode, unchanged."""
    def noisy(runner, options) -> TaskResult:
        return TaskResult("noisy", {"draw": float(torch.rand(()))}, {}, "", [{}])

    monkeypatch.setitem(TASKS, "noisy", noisy)
    cfg = read_config(scored)
    cfg.train.eval_tasks = ["noisy", "bpb"]
    model = build_model(cfg.model, seed=1).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    got = TaskScores(cfg, scored, load_tokenizer(scored), ONE)(model, 0)
    assert set(got) >= {"eval/noisy/draw", "eval/bpb/bits_per_byte"}
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


# ------------------------------------------------------------------------------------------- refused up front


def test_an_unknown_task_is_refused_at_config_time(tmp_path, capsys):
    with pytest.raises(ScratchError, match=r"^train.eval_tasks: unknown task 'gsm9k'; known tasks: gsm8k, "):
        load_config(overrides={"train.eval_tasks": "gsm8k,gsm9k"})
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain", "--out", str(tmp_path / "run"), "--train.eval_tasks", "gsm9k"])
    assert exit_info.value.code == 2 and "unknown task 'gsm9k'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_task_lists_read_from_yaml_and_the_command_line(tmp_path):
    (tmp_path / "c.yaml").write_text("train:\n  eval_tasks: [gsm8k, bpb]\n")
    assert load_config(config_file=tmp_path / "c.yaml").train.eval_tasks == ["gsm8k", "bpb"]
    assert load_config(overrides={"train.eval_tasks": " gsm8k , bpb"}).train.eval_tasks == ["gsm8k", "bpb"]
    assert load_config(overrides={"train.eval_tasks": ""}).train.eval_tasks == []
    (tmp_path / "bad.yaml").write_text("train:\n  eval_tasks: {gsm8k: 1}\n")
    with pytest.raises(ScratchError, match="wants a list of names"):
        load_config(config_file=tmp_path / "bad.yaml")


def test_models_and_layouts_that_cannot_be_scored_are_refused():
    with pytest.raises(ScratchError, match="needs a language model"):
        load_config(overrides={"model.head": "score", "train.eval_tasks": "bpb"})
    cfg = load_config(overrides={"train.eval_tasks": "bpb", "model.tie_embeddings": "false",
                                 "train.micro_batch_size": 4})
    with pytest.raises(ScratchError, match="train.eval_tasks does not run under pipeline parallel"):
        check_dims(ParallelDims(pp=2), cfg)
    check_dims(ParallelDims(dp_shard=2), cfg)  # data parallel is fine
