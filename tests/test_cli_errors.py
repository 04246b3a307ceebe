"""Bad input, tried as a new user would, through the real CLI: each class of mistake is one line on stderr
(`error: ...`) naming the file or flag and the fix, exit status 2, no traceback, and nothing on disk damaged.
(Generation's own inputs, such as an empty prompt, are tested with the engine.)"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scratchlm.cli import main

from conftest import FAST, write_jsonl


def fails(capsys, *argv: str) -> str:
    """Run `scratchlm ARGV` in this process; it must exit with status 2 and one `error:` line. Returns the line."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def digest(path: Path) -> dict[str, str]:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "docs.jsonl", 200, seed=7)


@pytest.fixture(scope="module")
def run(tmp_path_factory, data) -> Path:
    """A trained run with two checkpoints, step_000002 and step_000004."""
    out = tmp_path_factory.mktemp("runs") / "run"
    main(["pretrain", "--data", str(data), "--out", str(out), "--max-steps", "4", "--samples", "0",
          "--train.save_every", "2", *FAST])
    return out


# --------------------------------------------------------------------------------------------------
# A file that is not what its suffix says
# --------------------------------------------------------------------------------------------------


def test_a_parquet_file_that_is_not_parquet(capsys, tmp_path):
    fake = tmp_path / "docs.parquet"
    fake.write_text('{"text": "JSON lines under a .parquet name"}\n')
    line = fails(capsys, "prepare", "--data", fake, "--out", tmp_path / "prepared", *FAST)
    assert str(fake) in line and "not a Parquet file" in line
    assert not (tmp_path / "prepared").exists()


def test_a_real_parquet_file_next_to_it_still_works(capsys, tmp_path):
    """The check reads the footer that every Parquet file has, so a genuine one goes through."""
    real = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"text": [f"document number {i} about a cat" for i in range(40)]}), real)
    main(["prepare", "--data", str(real), "--out", str(tmp_path / "prepared"), "--data.val_fraction", "0.2", *FAST])
    assert (tmp_path / "prepared" / "manifest.json").is_file()


@pytest.mark.parametrize("content", [b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xab\xae\x05\x00",  # gzip
                                     "train:\n  max_steps: 5  # d\u00e9j\u00e0 vu\n".encode("latin-1")])
def test_a_config_file_that_is_binary_or_not_utf8(capsys, tmp_path, data, content):
    config = tmp_path / "my.yaml"
    config.write_bytes(content)
    line = fails(capsys, "pretrain", "--config", config, "--data", data, "--out", tmp_path / "run")
    assert str(config) in line and "not UTF-8 text" in line
    assert config.read_bytes() == content and not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------------------------
# A checkpoint whose weights are missing, truncated or corrupted
# --------------------------------------------------------------------------------------------------


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garble(path: Path) -> None:
    path.write_text("{'step': 4")


def _corrupt_header(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[8:40] = b"\xff" * 32  # the JSON header that says where each tensor lies
    path.write_bytes(bytes(raw))


# export-hf reads a one-process checkpoint's weights with its own reader (interop.hf), whose line names the
# checkpoint and the file but not the checkpoint before it.
@pytest.mark.parametrize("command,file,spoil,expected", [
    ("generate", "model.safetensors", Path.unlink, "model.safetensors is missing"),
    ("generate", "model.safetensors", _corrupt_header, "model.safetensors cannot be read"),
    ("export-hf", "model.safetensors", _truncate, "cannot read model.safetensors"),
    ("resume", "model.safetensors", _truncate, "model.safetensors cannot be read"),
    ("resume", "optimizer.pt", _truncate, "optimizer.pt cannot be read"),
    ("resume", "state.json", _garble, "state.json cannot be read"),
])
def test_a_damaged_checkpoint(capsys, tmp_path, run, data, command, file, spoil, expected):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    spoil(copy / "checkpoints" / "step_000004" / file)
    before = digest(copy)
    argv = {"generate": ["generate", copy, "--prompt", "Once"],
            "export-hf": ["export-hf", copy, tmp_path / "hf"],
            "resume": ["pretrain", "--data", data, "--out", copy, "--max-steps", "6", "--resume", "--samples", "0",
                       *FAST]}[command]
    line = fails(capsys, *argv)
    assert str(copy / "checkpoints" / "step_000004") in line and expected in line
    if command != "export-hf":
        assert "go back to step_000002" in line  # the way back: the checkpoint before it, which is whole
    # Nothing in the run is rewritten, config.yaml included (a resume with another --max-steps would change it).
    assert digest(copy) == before and not (tmp_path / "hf").exists()


# --------------------------------------------------------------------------------------------------
# A model that cannot be allocated on this machine
# --------------------------------------------------------------------------------------------------

# About 860B parameters: 3.2 TB of fp32 weights, 13 TB of training state. No machine that runs the tests
# has that, and the check must refuse it before a byte is allocated (else the test process would die).
HUGE = ["--model.dim", "16384", "--model.n_heads", "128", "--model.n_kv_heads", "8", "--model.ffn_hidden_dim",
        "65536", "--model.n_layers", "200"]


def test_a_model_too_large_to_train_here(capsys, tmp_path, data):
    line = fails(capsys, "pretrain", "--data", data, "--out", tmp_path / "run", "--max-steps", "1", *FAST, *HUGE)
    assert "the training state" in line and "GiB available" in line and "scratchlm plan" in line
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_model_too_large_to_load_here(capsys, tmp_path, run):
    huge = tmp_path / "huge"
    shutil.copytree(run, huge)
    config = huge / "config.yaml"
    text = config.read_text()
    for key, value in zip(HUGE[::2], HUGE[1::2], strict=True):
        name = key.removeprefix("--model.")
        old = next(line for line in text.splitlines() if line.strip().startswith(f"{name}:"))
        text = text.replace(old, f"  {name}: {value}", 1)
    config.write_text(text)
    before = digest(huge)
    line = fails(capsys, "generate", huge, "--prompt", "Once")
    assert f"the model of {huge}" in line and "B parameters" in line and "GiB available" in line
    assert digest(huge) == before


# --------------------------------------------------------------------------------------------------
# NaN or Inf in a numeric flag or config value
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_plan_gpu_memory_that_is_not_a_number(capsys, value):
    line = fails(capsys, "plan", "--preset", "7b", "--gpus", "8", "--gpu-mem-gb", value)
    assert "--gpu-mem-gb" in line and value in line


@pytest.mark.parametrize("key,value", [("--optim.lr", "nan"), ("--optim.beta2", "inf"), ("--model.rope_theta", "nan")])
def test_a_config_value_that_is_not_finite(capsys, tmp_path, data, key, value):
    line = fails(capsys, "pretrain", "--data", data, "--out", tmp_path / "run", *FAST, key, value)
    assert f"'{key[2:]}' wants a finite number" in line
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------------------------
# An --out that is a file or cannot be written
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["prepare", "pretrain", "export-hf", "corpus"])
@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_an_output_that_cannot_be_written(capsys, tmp_path, run, data, command, where):
    blocker = tmp_path / "taken"
    blocker.write_text("someone's file")
    out = blocker if where == "a file" else blocker / "out"
    argv = {"prepare": ["prepare", "--data", data, "--out", out, *FAST],
            "pretrain": ["pretrain", "--data", data, "--out", out, "--max-steps", "1", "--samples", "0", *FAST],
            "export-hf": ["export-hf", run, out],
            "corpus": ["corpus", "--out", blocker / "c.jsonl" if where == "under a file" else tmp_path, "--n", "3"],
            }[command]
    line = fails(capsys, *argv)
    expected = "is a folder" if command == "corpus" and where == "a file" else "is a file"
    assert expected in line and str(tmp_path) in line
    assert blocker.read_text() == "someone's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_an_output_in_a_read_only_folder(capsys, tmp_path, data):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    line = fails(capsys, "prepare", "--data", data, "--out", locked / "prepared", *FAST)
    assert "not writable" in line and str(locked) in line


# --------------------------------------------------------------------------------------------------
# More, found by trying the commands
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key,value,expected", [("--data.workers", "-1", "data.workers"),
                                                ("--data.val_fraction", "2", "data.val_fraction"),
                                                ("--data.max_docs", "-3", "data.max_docs")])
def test_prepare_settings_that_cannot_work(capsys, tmp_path, data, key, value, expected):
    line = fails(capsys, "prepare", "--data", data, "--out", tmp_path / "prepared", *FAST, key, value)
    assert expected in line and value in line
    assert not (tmp_path / "prepared").exists()


def test_corpus_makes_the_folder_of_its_output(tmp_path, capsys):
    main(["corpus", "--out", str(tmp_path / "new" / "c.jsonl"), "--n", "3"])
    assert len((tmp_path / "new" / "c.jsonl").read_text().splitlines()) == 3
