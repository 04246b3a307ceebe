"""pretrain through the CLI, as a user runs it: outputs, bit-for-bit resume, divergence, bad input."""

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from scratchlm.run import check_run_dir, read_config

from conftest import FAST, run_cli, write_jsonl


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def tree_digest(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpus_jsonl) -> Path:
    run = tmp_path_factory.mktemp("runs") / "run"
    run_cli("pretrain", "--data", str(corpus_jsonl), "--out", str(run), "--max-steps", "8", "--samples", "1",
            "--train.save_every", "4", *FAST)
    return run


def test_run_directory_holds_everything(trained):
    for name in ("config.yaml", "tokenizer.json", "metrics.jsonl", "plots/loss.png", "plots/lr.png",
                 "checkpoints/step_000008/model.safetensors", "checkpoints/step_000008/optimizer.pt"):
        assert (trained / name).is_file(), name
    assert any((trained / "tensorboard").iterdir())
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 9))  # one object per optimizer step
    assert all({"step", "loss", "lr", "tokens_per_s", "grad_norm", "mfu"} <= r.keys() for r in records)
    assert "val_loss" in records[3] and "val_loss" in records[7]  # eval_every 4
    assert records[-1]["loss"] < records[0]["loss"]


def test_resume_continues_bit_for_bit(tmp_path, corpus_jsonl):
    """8 steps straight == 4 steps, stop, --resume to 8: the same loss at every step, to the last bit."""
    common = ["--data", str(corpus_jsonl), "--samples", "0", "--optim.lr_decay_steps", "8", *FAST]
    run_cli("pretrain", "--out", str(tmp_path / "straight"), "--max-steps", "8", *common)
    run_cli("pretrain", "--out", str(tmp_path / "split"), "--max-steps", "4", *common)
    resumed = run_cli("pretrain", "--out", str(tmp_path / "split"), "--max-steps", "8", "--resume", *common)
    assert "resuming" in resumed.stderr + resumed.stdout
    assert losses(tmp_path / "split") == losses(tmp_path / "straight")
    assert len(losses(tmp_path / "straight")) == 8


def test_a_time_budget_sets_the_length_once_and_a_resume_keeps_it(tmp_path, corpus_jsonl):
    """A budget too short for more than the timed steps (warmup 2: both timed) cuts the run to them, writes that
    length into config.yaml and keeps it on --resume; a budget that fits every step changes nothing."""
    common = ["--data", str(corpus_jsonl), "--samples", "0", "--max-steps", "12", *FAST]
    run = tmp_path / "short"
    out = run_cli("pretrain", "--out", str(run), "--train.max_minutes", "0.0001", *common)
    assert "train.max_minutes 0.0001: 2 steps of 12 fit" in out.stderr + out.stdout
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert "max_steps: 2\n" in (run / "config.yaml").read_text()
    assert (run / "checkpoints" / "step_000002").is_dir()
    again = run_cli("pretrain", "--out", str(run), "--train.max_minutes", "0.0001", "--resume", *common)
    assert "max_steps changed" not in again.stderr + again.stdout
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    roomy = run_cli("pretrain", "--out", str(tmp_path / "roomy"), "--train.max_minutes", "60", *common)
    assert "fit, at" not in roomy.stderr + roomy.stdout
    assert len((tmp_path / "roomy" / "metrics.jsonl").read_text().splitlines()) == 12


def test_a_longer_resume_warns_of_a_stretched_schedule_only_when_the_rate_has_one(trained, capsys):
    """A cosine over max_steps stretches when a resume changes max_steps; a constant rate (as RL's) does not."""
    cfg = read_config(trained)
    cfg.train.max_steps += 4
    check_run_dir(trained, cfg, resume=True)
    assert "the cosine schedule stretches" in capsys.readouterr().out
    cfg.optim.min_lr_ratio = 1.0
    check_run_dir(trained, cfg, resume=True)
    assert "max_steps changed" not in capsys.readouterr().out


def test_existing_run_needs_resume_and_same_model(trained):
    before = tree_digest(trained / "checkpoints")
    again = run_cli("pretrain", "--out", str(trained), "--max-steps", "9", *FAST, check=False)
    assert again.returncode == 2 and "--resume" in again.stderr
    other = run_cli("pretrain", "--out", str(trained), "--max-steps", "9", "--resume", *FAST, "--model.dim", "128",
                    check=False)
    assert other.returncode == 2 and "another model" in other.stderr and "Traceback" not in other.stderr
    assert tree_digest(trained / "checkpoints") == before  # nothing on disk was touched


def test_divergence_stops_with_last_good_checkpoint(tmp_path, corpus_jsonl):
    run = tmp_path / "nan"
    proc = run_cli("pretrain", "--data", str(corpus_jsonl), "--out", str(run), "--max-steps", "6", *FAST,
                   "--optim.lr", "1e30", "--optim.warmup_steps", "0", "--optim.grad_clip", "0",
                   "--train.save_every", "1", "--train.log_every", "1", check=False)
    assert proc.returncode == 2 and "diverged" in proc.stderr and "Traceback" not in proc.stderr
    kept = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert kept and all(not name.endswith(".tmp") for name in kept)
    last = json.loads((run / "checkpoints" / kept[-1] / "state.json").read_text())["step"]
    assert last < 6  # it stopped early
    for name in kept:  # what a resume would load: finite weights in every checkpoint kept
        weights = load_file(run / "checkpoints" / name / "model.safetensors")
        assert all(torch.isfinite(w).all() for w in weights.values()), name


@pytest.mark.parametrize("change,message", [
    (["--train.seq_len", "16"], "train.seq_len 16"),
    (["--train.global_batch_tokens", "512"], "train.global_batch_tokens 512"),
    (["--train.seed", "7"], "train.seed 7"),
])
def test_resume_refuses_another_data_stream(trained, change, message):
    before = tree_digest(trained / "checkpoints")
    proc = run_cli("pretrain", "--out", str(trained), "--max-steps", "9", "--resume", *FAST, *change, check=False)
    assert proc.returncode == 2 and message in proc.stderr and "data stream" in proc.stderr, proc.stderr
    assert tree_digest(trained / "checkpoints") == before


@pytest.mark.parametrize("setup,where", [(False, "does not exist"), (True, "holds no checkpoint")])
def test_resume_of_nothing_is_an_error_not_a_new_run(tmp_path, corpus_jsonl, setup, where):
    run = tmp_path / "typo"
    if setup:
        run.mkdir()
    proc = run_cli("pretrain", "--data", str(corpus_jsonl), "--out", str(run), "--max-steps", "2", "--resume", *FAST,
                   check=False)
    assert proc.returncode == 2 and where in proc.stderr and "drop --resume" in proc.stderr, proc.stderr
    assert not (run / "checkpoints").exists()


def test_model_vocab_that_disagrees_with_the_tokenizer_is_refused(tmp_path, corpus_jsonl):
    proc = run_cli("pretrain", "--data", str(corpus_jsonl), "--out", str(tmp_path / "r"), "--max-steps", "2", *FAST,
                   "--model.vocab_size", "999", check=False)
    assert proc.returncode == 2 and "model.vocab_size 999 disagrees" in proc.stderr
    assert "--data.vocab_size" in proc.stderr
    assert not (tmp_path / "r" / "checkpoints").exists()


@pytest.mark.parametrize("args,message", [
    (["--data", "/no/such/file.jsonl"], "does not exist"),
    (["--optim.lrr", "1e-3"], "did you mean 'optim.lr'"),
    (["--optim.lr", "0"], "optim.lr must be positive"),
    (["--optim.lr", "-3e-4"], "optim.lr must be positive"),
    (["--train.global_batch_tokens", "1000"], "not a positive multiple of train.seq_len"),
    (["--model.n_heads", "3"], "not divisible"),
    (["--model.n_kv_heads", "3"], "must divide"),
    (["--data.dtype", "uint16", "--data.vocab_size", "70000"], "does not fit uint16"),
    (["--train.max_minutes", "5", "--optim.warmup_steps", "1"], "leaves no step to time after the first"),
])
def test_bad_input_is_one_clear_line(tmp_path, corpus_jsonl, args, message):
    base = ["--data", str(corpus_jsonl)] if "--data" not in args else []
    proc = run_cli("pretrain", "--out", str(tmp_path / "run"), "--max-steps", "2", *FAST, *base, *args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and sum("error" in line for line in lines) == 1
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_empty_data_file_is_refused(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    proc = run_cli("prepare", "--data", str(tmp_path / "empty.jsonl"), *FAST, check=False)
    assert proc.returncode == 2 and "no documents" in proc.stderr and "Traceback" not in proc.stderr


def test_prepare_then_pretrain_reuses_shards(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", 120, seed=3)
    out = run_cli("prepare", "--data", str(data), *FAST).stdout
    assert "bytes per token" in out
    proc = run_cli("pretrain", "--data", str(data), "--out", str(tmp_path / "r"), "--max-steps", "2", "--samples", "0",
                   *FAST)
    assert "train tokenizer" not in proc.stderr  # the cached tokenizer and shards were reused


def test_no_data_means_the_embedded_corpus(tmp_path):
    """With no --data, pretrain prepares the embedded corpus on the fly and caches it for the next run."""
    args = ["--max-steps", "2", "--samples", "0", "--data.embedded_docs", "300", *FAST]
    first = run_cli("pretrain", "--out", str(tmp_path / "a"), *args)
    second = run_cli("pretrain", "--out", str(tmp_path / "b"), *args)
    assert "embedded" in first.stdout and "train tokenizer" in first.stderr
    assert "train tokenizer" not in second.stderr  # cached
    assert "source: embedded" in (tmp_path / "a" / "config.yaml").read_text()
    assert losses(tmp_path / "a") == losses(tmp_path / "b")  # the same data, seed and model: the same run


def test_corpus_command_writes_gsm8k_style_jsonl(tmp_path):
    out = tmp_path / "math.jsonl"
    run_cli("corpus", "--out", str(out), "--split", "heldout", "--n", "5", "--kind", "math")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 5 and all(r["answer"].splitlines()[-1].startswith("#### ") for r in rows)
    bad = run_cli("corpus", "--out", str(out), "--split", "test", check=False)
    assert bad.returncode == 2 and "heldout" in bad.stderr


def test_a_prepared_folder_records_its_tokenizers_vocabulary(tmp_path, corpus_jsonl):
    """Trained on shards prepared elsewhere, the run's config holds the size of the tokenizer that made them, not
    the preset's data.vocab_size (which trains no tokenizer here)."""
    from scratchlm.cli import main
    from scratchlm.run import read_config
    from scratchlm.tokenizer import BPETokenizer

    prepared = tmp_path / "prepared"
    main(["prepare", "--data", str(corpus_jsonl), "--out", str(prepared), "--data.vocab_size", "340",
          "--data.workers", "1"])
    vocab = BPETokenizer.load(prepared / "tokenizer.json").vocab_size
    at = FAST.index("--data.vocab_size")
    fast = FAST[:at] + FAST[at + 2:]
    main(["pretrain", "--data", str(prepared), "--out", str(tmp_path / "run"), "--max-steps", "1", "--samples", "0",
          *fast])
    cfg = read_config(tmp_path / "run")
    assert cfg.model.vocab_size == vocab and cfg.data.vocab_size == vocab, (vocab, cfg.model, cfg.data)
