"""The planner against real runs: parameter, gradient and optimizer bytes equal the local shards of a real
sharded model byte for byte; the activation estimate is compared with measured peak memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from shard_bytes import MODEL
from torch import nn
from torch.profiler import ProfilerActivity, profile
from torch.profiler._memory_profiler import Action, Category

from scratchlm.config import preset
from scratchlm.model import Attention, build_model
from scratchlm.parallel import planner
from scratchlm.parallel.pipeline import split_model
from scratchlm.parallel.planner import layout_bytes, model_weights, plan, stage_weights
from scratchlm.parallel.world import ParallelDims
from scratchlm.train.stage import token_loss_sum

from conftest import ROOT, run_cli, subprocess_env

# pp x dp_shard x tp x dp_replicate on 4 ranks: FSDP, HSDP, FSDP x TP, PP x FSDP, PP x TP, replicas x TP, DDP.
LAYOUTS = ["1x4x1x1", "1x2x1x2", "1x2x2x1", "2x2x1x1", "2x1x2x1", "1x1x2x2", "1x1x1x4"]


def test_state_bytes_equal_real_shards(tmp_path):
    env = subprocess_env(PYTHONPATH=f"{ROOT / 'src'}{os.pathsep}{ROOT / 'tests' / 'parallel'}")
    script = ROOT / "tests" / "parallel" / "shard_bytes.py"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "4",
                           str(script), str(tmp_path), *LAYOUTS], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for layout in LAYOUTS:
        pp, dp_shard, tp, dp_replicate = (int(x) for x in layout.split("x"))
        dims = ParallelDims(pp=pp, dp_replicate=dp_replicate, dp_shard=dp_shard, tp=tp)
        ranks = [json.loads((tmp_path / f"{layout}.{r}.json").read_text()) for r in range(4)]
        planned = layout_bytes(MODEL, dims, seq_len=16, micro_batch=2, precision="fp32", n_micro=2)
        for key in ("params", "grads", "optimizer"):
            assert getattr(planned, key) == max(r[key] for r in ranks), (layout, key, ranks)


def measured_activation_peak(n_layers: int, batch: int, seq: int) -> int:
    """Peak bytes allocated during a forward and backward, gradients left out (torch.profiler's memory timeline)."""
    model = build_model(MODEL.__class__(**{**MODEL.__dict__, "n_layers": n_layers, "max_seq_len": seq}))
    x = torch.randint(0, MODEL.vocab_size, (batch, seq))
    token_loss_sum(model(x), x).backward()  # warm-up: lazy initialisations are not activations
    model.zero_grad(set_to_none=True)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        token_loss_sum(model(x), x).backward()
    memory = prof._memory_profile()
    live, peak = 0, 0
    for _, action, (key, version), size in memory.timeline:
        if memory._categories.get(key, version) == Category.GRADIENT:
            continue
        if action == Action.CREATE:
            live += size
        elif action == Action.DESTROY:
            live -= size
        peak = max(peak, live)
    return peak


@pytest.mark.parametrize("n_layers,batch,seq", [(2, 4, 32), (4, 8, 64)])
def test_activation_estimate_is_close_to_measured(n_layers, batch, seq, record_property):
    cfg = MODEL.__class__(**{**MODEL.__dict__, "n_layers": n_layers, "max_seq_len": seq})
    planned = layout_bytes(cfg, ParallelDims(), seq_len=seq, micro_batch=batch, precision="fp32").activations
    measured = measured_activation_peak(n_layers, batch, seq)
    error = planned / measured - 1
    record_property("activation_error", error)
    print(f"{n_layers} layers, {batch} x {seq}: planned {planned:,} B, measured peak {measured:,} B ({error:+.1%})")
    assert abs(error) < 0.25


def test_plan_cli_json():
    proc = run_cli("plan", "--preset", "70b", "--gpus", "64", "--gpus-per-node", "8", "--gpu-mem-gb", "80",
                   "--seq-len", "4096", "--json")
    result = json.loads(proc.stdout)
    assert result["layouts"] and all(x["dp"] * x["tp"] * x["pp"] == 64 and x["tp"] <= 8 for x in result["layouts"])
    for x in result["layouts"]:
        b = x["bytes"]
        assert b["total"] == b["params"] + b["grads"] + b["optimizer"] + b["activations"] + b["buffers"]
        assert x["fits"] == (b["total"] <= 0.9 * 80e9)
    best = result["recommended"]
    assert best["fits"] and {"dp", "tp", "pp", "bytes", "reason"} <= set(best)
    # 70B in fp32 master weights + grads + Adam is 16 bytes per parameter: about 1.13 TB over 64 GPUs.
    fsdp = next(x for x in result["layouts"] if x["tp"] == 1 and x["pp"] == 1)
    assert fsdp["bytes"]["params"] + fsdp["bytes"]["grads"] + fsdp["bytes"]["optimizer"] == pytest.approx(
        16 * 70.554e9 / 64, rel=1e-3)


def test_plan_table():
    out = run_cli("plan", "--preset", "7b", "--gpus", "16", "--gpu-mem-gb", "80", "--seq-len", "4096").stdout
    assert "recommended: dp" in out


@pytest.mark.parametrize("flag,value", [("--gpus", "0"), ("--gpus-per-node", "0"), ("--gpu-mem-gb", "-1")])
def test_plan_refuses_impossible_hardware(flag, value):
    args = {"--gpus": "8", "--gpus-per-node": "8", "--gpu-mem-gb": "80"} | {flag: value}
    proc = run_cli("plan", "--preset", "7b", *[x for kv in args.items() for x in kv], check=False)
    assert proc.returncode == 2 and flag in proc.stderr and "Traceback" not in proc.stderr


def test_pipeline_micro_batches_follow_the_run_config():
    """GPipe holds every micro-batch of a step at once, 1F1B at most pp: the plan counts them as the
    run would split its batch (global tokens / seq / dp / micro-batch)."""
    cfg = preset("7b").model  # untied: pipeline layouts are valid

    def activations(schedule: str, global_tokens: int) -> int:
        result = plan(cfg, 8, 8, 80 * 10**9, 2048, 1, "bf16", False, schedule, global_tokens)
        return next(x for x in result["layouts"] if x["pp"] == 2 and x["tp"] == 1)["bytes"]["activations"]

    assert activations("GPipe", 2048 * 64) == 2 * activations("GPipe", 2048 * 32)
    assert activations("1F1B", 2048 * 64) == activations("1F1B", 2048 * 32)


@pytest.mark.parametrize("pp,chunks", [(1, 1), (2, 1), (3, 1), (2, 2)])
def test_weights_are_the_stages_own_parameters(pp, chunks):
    """Each pp rank's weights are exactly the parameters, names and shapes, of the stages the pipeline
    builds for it (chunk c of rank r is stage r + c * pp)."""
    cfg = replace(MODEL, n_layers=4)
    n_stages = pp * chunks
    for rank, weights in enumerate(stage_weights(cfg, pp, chunks)):
        expected = [(name, tuple(p.shape)) for stage in range(rank, n_stages, pp)
                    for name, p in split_model(cfg, stage, n_stages).named_parameters()]
        assert [(w.name, w.shape) for w in weights] == expected


def test_a_parameter_the_model_gains_is_counted(monkeypatch):
    """The planner reads the model, not a list of its own: give attention a q bias (as some Llama-like
    models have) and the plan counts it, split as its projection is."""
    plain_init = Attention.__init__

    def with_q_bias(self, cfg, layer_id):
        plain_init(self, cfg, layer_id)
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=True)

    monkeypatch.setattr(Attention, "__init__", with_q_bias)
    planner._all_weights.cache_clear()  # each config's weights are read from the model once
    try:
        weights = {w.name: w for w in model_weights(MODEL)}
    finally:
        planner._all_weights.cache_clear()
    assert [(w.shape, w.tp_dim) for name, w in weights.items() if name.endswith("wq.bias")] == [
        ((MODEL.n_heads * MODEL.head_dim,), 0)] * MODEL.n_layers
