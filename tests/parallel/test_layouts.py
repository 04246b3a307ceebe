"""Every parallel layout trains the same model as one process: the numbers are the test.

Each run is a real `torchrun ... -m scratchlm pretrain` on gloo CPU ranks, fp32, ten steps of the same
global batch; the per-step losses come from metrics.jsonl and must agree with the one-process run to
1e-4 relative. A run saved on one layout resumes on another and continues with the same batches.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from scratchlm.run import load_run
from scratchlm.train.metrics import read_metrics

from conftest import FAST, run_cli, start_ranks, subprocess_env

STEPS = 10
# fp32 so the comparison measures the parallelism, not bf16 rounding; one schedule for the chained runs.
COMMON = [*FAST, "--train.precision", "fp32", "--samples", "0", "--optim.lr_decay_steps", str(STEPS),
          "--train.eval_every", "100", "--train.log_every", "5"]
UNTIED = ["--model.tie_embeddings", "false"]  # pipeline stages cannot share the embedding with the head


def torchrun(nproc: int, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           "-m", "scratchlm", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"torchrun {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def losses(run_dir) -> list[float]:
    """Training losses of every step, then the final validation loss: the layout must change neither."""
    records = read_metrics(run_dir)
    return [r["loss"] for r in records] + [records[-1]["val_loss"]]


def max_rel_diff(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b) == STEPS + 1  # and the validation at the end
    return max(abs(x - y) / abs(y) for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def reference(corpus_jsonl, tmp_path_factory):
    """One-process runs, tied and untied head."""
    out = {}
    for name, extra in (("tied", []), ("untied", UNTIED)):
        run = tmp_path_factory.mktemp(f"ref_{name}")
        run_cli("pretrain", "--data", str(corpus_jsonl), "--out", str(run), "--max-steps", str(STEPS), *COMMON,
                *extra)
        out[name] = losses(run)
    return out


LAYOUTS = {
    "fsdp2": (2, [], "tied"),
    "ddp2": (2, ["--parallel.dp_replicate", "2"], "tied"),
    "tp2": (2, ["--parallel.tp", "2"], "tied"),
    "pp2_1f1b": (2, ["--parallel.pp", "2", "--parallel.pp_microbatches", "4"], "untied"),
    "pp2_interleaved": (2, ["--parallel.pp", "2", "--parallel.pp_schedule", "Interleaved1F1B",
                            "--parallel.pp_microbatches", "4", "--model.n_layers", "4"], "untied4"),
    "fsdp2_tp2": (4, ["--parallel.dp_shard", "2", "--parallel.tp", "2"], "tied"),
    "pp2_fsdp2_tp2": (8, ["--parallel.pp", "2", "--parallel.dp_shard", "2", "--parallel.tp", "2",
                          "--parallel.pp_microbatches", "2"], "untied"),
}


@pytest.mark.parametrize("layout", [pytest.param(k, marks=pytest.mark.slow) if LAYOUTS[k][0] == 8 else k
                                    for k in LAYOUTS])
def test_layout_matches_one_process(layout, reference, corpus_jsonl, tmp_path, record_property):
    nproc, dims, ref = LAYOUTS[layout]
    extra = UNTIED if ref.startswith("untied") else []
    if ref == "untied4":  # interleaving needs 4 chunks of layers: compare with a 4-layer one-process run
        base = tmp_path / "one"
        run_cli("pretrain", "--data", str(corpus_jsonl), "--out", str(base), "--max-steps", str(STEPS), *COMMON,
                *extra, "--model.n_layers", "4")
        expected = losses(base)
    else:
        expected = reference[ref]
    torchrun(nproc, "pretrain", "--data", str(corpus_jsonl), "--out", str(tmp_path / "run"), "--max-steps",
             str(STEPS), *COMMON, *extra, *dims)
    diff = max_rel_diff(losses(tmp_path / "run"), expected)
    record_property("max_rel_loss_diff", diff)
    print(f"{layout}: max relative loss difference {diff:.2e}")
    assert diff < 1e-4


def test_resume_on_other_layouts(reference, corpus_jsonl, tmp_path):
    """FSDP on 4 ranks -> TP 2 x FSDP 2 -> one process, each resuming the other's checkpoint; then
    generate and export-hf read the sharded checkpoint in one process."""
    run = str(tmp_path / "run")
    # 4 data-parallel ranks share the 8-sequence global batch in micro-batches of 2, chosen automatically.
    i = COMMON.index("--train.micro_batch_size")
    args = ["pretrain", "--data", str(corpus_jsonl), "--out", run, *COMMON[:i], *COMMON[i + 2:]]
    torchrun(4, *args, "--max-steps", "4")
    torchrun(4, *args, "--max-steps", "7", "--parallel.tp", "2", "--resume")
    sharded = tmp_path / "run" / "checkpoints" / "step_000007"
    assert (sharded / ".metadata").is_file()
    out = run_cli("generate", run, "--prompt", "the cat", "--max-new-tokens", "5", "--seed", "0").stdout
    assert out.strip()
    run_cli("export-hf", run, str(tmp_path / "hf"))  # export gathers the DCP shards in one process too
    exported = load_file(tmp_path / "hf" / "model.safetensors")
    _, _, model = load_run(run)
    assert torch.equal(exported["model.layers.1.mlp.down_proj.weight"], model.layers["1"].feed_forward.w2.weight)
    run_cli(*args, "--max-steps", str(STEPS), "--resume")
    assert max_rel_diff(losses(run), reference["tied"]) < 1e-4


def test_one_process_checkpoint_resumes_sharded(reference, corpus_jsonl, tmp_path):
    run = str(tmp_path / "run")
    args = ["pretrain", "--data", str(corpus_jsonl), "--out", run, *COMMON]
    run_cli(*args, "--max-steps", "5")
    assert (tmp_path / "run" / "checkpoints" / "step_000005" / "model.safetensors").is_file()
    torchrun(2, *args, "--max-steps", str(STEPS), "--parallel.tp", "2", "--resume")
    assert max_rel_diff(losses(run), reference["tied"]) < 1e-4


@pytest.mark.parametrize("nproc,args,message", [
    (2, ["--parallel.tp", "2", "--model.n_kv_heads", "1"], "parallel.tp 2 must divide model.n_heads"),
    (2, ["--parallel.dp_shard", "3"], "the mesh pp 1 x dp_replicate 1 x dp_shard 3 x tp 1 = 3 processes"),
])
def test_bad_layout_fails_on_every_rank(nproc, args, message, corpus_jsonl, tmp_path):
    """Each rank refuses by itself, with one line and no traceback, so none waits for a peer that is gone.

    The ranks run without torchrun (conftest.start_ranks): it stops the others the moment one fails, so under it
    how many had printed is a race."""
    cmd = [sys.executable, "-m", "scratchlm", "pretrain", "--data", str(corpus_jsonl), "--out", str(tmp_path / "run"),
           *COMMON, *args]
    for rank in start_ranks(cmd, nproc):
        _, stderr = rank.communicate(timeout=300)
        assert rank.returncode == 2, stderr
        assert stderr.strip().splitlines()[-1].startswith(f"error: {message}"), stderr
        assert "Traceback" not in stderr
    assert not (tmp_path / "run").exists()  # and no rank wrote a run directory


@pytest.mark.parametrize("args,env,message", [
    (["--parallel.pp", "4"], {"WORLD_SIZE": "4"}, "4 pipeline stages need at least 4 layers"),
    (["--parallel.tp", "2"], {"WORLD_SIZE": "3"}, "parallel.pp x dp_replicate x tp = 2 does not divide the world"),
    (["--parallel.pp", "2"], {"WORLD_SIZE": "2"}, "set --model.tie_embeddings false"),
    (["--parallel.backend", "nccl"], {}, "parallel.backend nccl needs GPUs"),
])
def test_bad_layout_is_refused_before_any_process_group(args, env, message, corpus_jsonl, tmp_path):
    """These checks need only the config and torchrun's WORLD_SIZE, so they run before init_process_group."""
    proc = run_cli("pretrain", "--data", str(corpus_jsonl), "--out", str(tmp_path / "run"), *COMMON, *args,
                   check=False, env=env)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and last.startswith("error: ") and message in last, proc.stderr
