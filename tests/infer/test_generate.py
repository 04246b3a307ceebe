"""scratchlm generate through the CLI, on a freshly pretrained tiny run."""

import re
from pathlib import Path

import pytest
import torch

from scratchlm.cli import main
from scratchlm.infer.generate import generate_text, stop_ids
from scratchlm.infer.sampling import SamplingParams
from scratchlm.run import load_run

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


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """`scratchlm ARGS` in this process (argument parsing and the command as the user runs them, without a
    new interpreter importing torch): exit status, stdout, stderr."""
    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_top_k_one_and_a_tiny_top_p_leave_only_the_greedy_token(run, capsys):
    """At a high temperature, sampling wanders off the greedy path; top-k 1 or a tiny top-p brings it back.
    The first assertion is the control: were the flags ignored, the others would fail."""
    base = ("generate", str(run), "--prompt", "the cat", "--max-new-tokens", "12", "--seed", "1", "--device", "cpu")
    greedy = cli(capsys, *base, "--temperature", "0")[1]
    assert cli(capsys, *base, "--temperature", "5")[1] != greedy
    assert cli(capsys, *base, "--temperature", "5", "--top-k", "1")[1] == greedy
    assert cli(capsys, *base, "--temperature", "5", "--top-p", "1e-6")[1] == greedy


def test_an_intermediate_top_p_samples_exactly_the_tokens_that_reach_it(run):
    """top-p between the first token's probability and the first two's: every draw is one of those two,
    and both come up; without top-p the same draws spread wider."""
    _, tokenizer, model = load_run(run)
    temperature, prompt = 3.0, "the cat"
    with torch.no_grad():
        logits = model(torch.tensor([tokenizer.encode(prompt, bos=True)]))[0, -1]
    probs, order = (logits / temperature).softmax(-1).sort(descending=True)
    top_p = float(probs[0] + probs[1] / 2)
    stops = stop_ids(run, tokenizer)
    allowed = {"" if t in stops else tokenizer.decode([t]) for t in order[:2].tolist()}

    def first_tokens(p: float) -> set[str]:
        return {"".join(generate_text(run, prompt, SamplingParams(max_new_tokens=1, temperature=temperature,
                                                                  top_p=p, seed=seed), device="cpu"))
                for seed in range(40)}

    assert len(allowed) == 2 and first_tokens(top_p) == allowed
    assert len(first_tokens(1.0)) > 2


def test_prompt_longer_than_context(run):
    proc = run_cli("generate", str(run), "--prompt", "the cat sat " * 200, "--temperature", "0", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert re.search(r"the prompt is \d+ tokens, but the model's context is 64", proc.stderr)


@pytest.mark.parametrize("flags,message", [
    (("--prompt", ""), "the prompt is empty; give --prompt TEXT"),
    (("--prompt", "the", "--temperature", "nan"), "temperature must be 0"),
    (("--prompt", "the", "--temperature", "inf"), "temperature must be 0"),
    (("--prompt", "the", "--top-p", "nan"), "top-p must be in"),
])
def test_bad_input_is_one_clear_line(run, capsys, flags, message):
    code, _, err = cli(capsys, "generate", str(run), *flags)
    assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1


def test_missing_run_dir(tmp_path):
    proc = run_cli("generate", str(tmp_path / "nope"), "--prompt", "hi", check=False)
    assert proc.returncode == 2 and "does not exist" in proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
@pytest.mark.parametrize("device,message", [("cuda", "no GPU is visible"), ("tpu9", "device")])
def test_unusable_device_is_one_clear_line(run, device, message):
    proc = run_cli("generate", str(run), "--prompt", "the", "--device", device, check=False)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
