"""scratchlm generate through the CLI, on a freshly pretrained tiny run."""

from pathlib import Path

import pytest
import torch

from scratchlm.infer.generate import decode_stream
from scratchlm.tokenizer import BPETokenizer

from conftest import FAST, run_cli


@pytest.fixture(scope="module")
def run(tmp_path_factory, corpus_jsonl) -> Path:
    out = tmp_path_factory.mktemp("gen") / "run"
    run_cli("pretrain", "--data", str(corpus_jsonl), "--out", str(out), "--max-steps", "6", "--samples", "0", *FAST)
    return out


def test_greedy_generation_is_deterministic(run):
    args = ("generate", str(run), "--prompt", "the cat", "--temperature", "0", "--max-new-tokens", "12")
    first, second = run_cli(*args).stdout, run_cli(*args).stdout
    assert first == second and len(first) > 1  # some continuation (maybe only spaces this early), then a newline
    assert not first.startswith("the cat")  # only the continuation is printed
    assert run_cli(*args, "--echo").stdout.startswith("the cat")


def test_sampling_flags(run):
    base = ("generate", str(run), "--prompt", "the", "--max-new-tokens", "20", "--temperature", "1.2",
            "--top-k", "20", "--top-p", "0.9")
    assert run_cli(*base, "--seed", "1").stdout == run_cli(*base, "--seed", "1").stdout


def test_prompt_longer_than_context(run):
    proc = run_cli("generate", str(run), "--prompt", "the cat sat " * 200, "--temperature", "0", check=False)
    assert proc.returncode == 2 and "context" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_run_dir(tmp_path):
    proc = run_cli("generate", str(tmp_path / "nope"), "--prompt", "hi", check=False)
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def test_decode_stream_never_splits_a_character(run):
    tok = BPETokenizer.load(run / "tokenizer.json")
    text = "héllo wörld 日本語 🙂 done"
    pieces = list(decode_stream(tok, iter(tok.encode(text))))
    assert "".join(pieces) == text and all("\ufffd" not in p for p in pieces)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
@pytest.mark.parametrize("device,message", [("cuda", "no GPU is visible"), ("tpu9", "device")])
def test_unusable_device_is_one_clear_line(run, device, message):
    proc = run_cli("generate", str(run), "--prompt", "the", "--device", device, check=False)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
