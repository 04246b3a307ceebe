import json

import pytest
import torch

from scratchlm import hardware
from scratchlm.errors import ScratchError


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_precision_follows_native_bf16(monkeypatch, native, expected):
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: native)
    precision, note = hardware.resolve_precision("auto", torch.device("cpu"))
    assert precision == expected
    assert note is not None and expected in note


def test_explicit_precision_is_kept_without_a_note(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: False)
    assert hardware.resolve_precision("bf16", torch.device("cpu")) == ("bf16", None)
    with pytest.raises(ScratchError, match="precision must be one of"):
        hardware.resolve_precision("fp16", torch.device("cpu"))


def test_cpu_peak_is_measured_once_then_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("SCRATCHLM_CACHE", str(tmp_path))
    calls = []
    monkeypatch.setattr(hardware, "measure_matmul_flops", lambda dtype, n: calls.append(n) or 1e9 * n)
    first = hardware.cpu_peak_flops(torch.float32)
    assert first == 1e9 * max(hardware.PEAK_SIZES) and calls == list(hardware.PEAK_SIZES)
    assert hardware.cpu_peak_flops(torch.float32) == first and len(calls) == len(hardware.PEAK_SIZES)
    stored = json.loads((tmp_path / "peak_flops.json").read_text())
    assert any(key.endswith("torch.float32") for key in stored)
    hardware.cpu_peak_flops(torch.bfloat16)  # another dtype is another measurement
    assert len(calls) == 2 * len(hardware.PEAK_SIZES)


def test_a_dtype_the_cpu_emulates_is_measured_at_the_smallest_size_alone(monkeypatch, tmp_path):
    """Where one product outlasts the timing window (bf16 emulated: about 1 GFLOP/s), the larger sizes, which
    would take minutes, are not tried."""
    monkeypatch.setenv("SCRATCHLM_CACHE", str(tmp_path))
    calls = []
    monkeypatch.setattr(hardware, "measure_matmul_flops", lambda dtype, n: calls.append(n) or 1e9)
    assert hardware.cpu_peak_flops(torch.bfloat16) == 1e9 and calls == [min(hardware.PEAK_SIZES)]


def test_peak_is_the_same_function_for_trainer_and_benchmark(monkeypatch, tmp_path):
    monkeypatch.setenv("SCRATCHLM_CACHE", str(tmp_path))
    monkeypatch.setattr(hardware, "measure_matmul_flops", lambda dtype, n: 1e9 * n)
    assert hardware.peak_flops(torch.device("cpu"), "bf16") == hardware.cpu_peak_flops(torch.bfloat16)


def test_resolve_device_refuses_what_is_missing():
    assert hardware.resolve_device("cpu").type == "cpu"
    with pytest.raises(ScratchError, match="unknown device"):
        hardware.resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ScratchError, match="no GPU is visible"):
            hardware.resolve_device("cuda")
