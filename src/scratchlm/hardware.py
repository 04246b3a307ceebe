"""What this machine can do: which device to use, which precision it computes natively, and its peak.

Training, generation and the benchmarks all ask here, so the progress bar's MFU and the figures in
benchmarks/README.md are measured the same way:

    device     'auto' -> a GPU when one is visible, else the CPU
    precision  'auto' -> bf16 where the hardware multiplies bf16 natively (a GPU with bf16 tensor
               cores; a CPU with AVX512-BF16, AMX or Arm's BF16 extension), else fp32: emulated bf16
               is slower than fp32 on the CPUs without it (many laptops, Apple silicon)
    peak       a GPU's dense bf16 datasheet figure; on a CPU, measured: the best rate of repeated
               n x n matrix products, n in (1024, 2048), for 0.5 s each, cached per CPU, thread count,
               torch version and dtype in scratchlm's cache directory (SCRATCHLM_CACHE)
    memory     what can still be allocated: a GPU's free memory, or the CPU's available memory (within
               a container's limit), checked before weights are allocated (check_memory)
"""

from __future__ import annotations

import json
import platform
import time
from functools import lru_cache
from pathlib import Path

import torch

from scratchlm import atomic
from scratchlm.cache import cache_root
from scratchlm.errors import ScratchError

# Dense bf16 tensor-core peaks from the datasheets, per GPU, matched against the device name in this
# order (so "L40S" is not taken for "L4", nor an H100 PCIe for the SXM part).
GPU_PEAK_BF16 = [("H200", 989e12), ("H100 PCIe", 756e12), ("H100", 989e12), ("H20", 148e12), ("A100", 312e12),
                 ("A10G", 125e12), ("L40S", 362e12), ("L40", 181e12), ("L4", 121e12), ("4090", 165e12),
                 ("3090", 71e12)]
PEAK_SIZES = (1024, 2048)
PEAK_SECONDS = 0.5
PRECISIONS = ("auto", "bf16", "fp32")


def resolve_device(name: str) -> torch.device:
    """'auto' (a GPU when one is visible), 'cpu', 'cuda' or 'cuda:N', refusing what this machine lacks."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ScratchError(f"unknown device '{name}'; use auto, cpu or cuda") from None
    if device.type not in ("cpu", "cuda"):
        raise ScratchError(f"unsupported device '{name}'; use auto, cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ScratchError(f"device {name} asked for, but no GPU is visible; use --device cpu")
    return device


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's marketing name, reported beside every throughput figure."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX on x86, the BF16 extension on Arm Linux. (macOS reports no flags that PyTorch's
    CPU kernels use for bf16, so fp32 is the faster choice there.)"""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[1].split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def native_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return cpu_has_native_bf16()


def resolve_precision(requested: str, device: torch.device) -> tuple[str, str | None]:
    """-> (bf16 | fp32, a one-line note when 'auto' chose, else None)."""
    if requested not in PRECISIONS:
        raise ScratchError(f"precision must be one of {', '.join(PRECISIONS)}, got '{requested}'")
    if requested != "auto":
        return requested, None
    if native_bf16(device):
        return "bf16", f"precision auto: bf16 ({_device_name(device)} computes bf16 natively)"
    return "fp32", (f"precision auto: fp32 ({_device_name(device)} has no native bf16, where emulated bf16 is "
                    "slower than fp32); --train.precision bf16 forces it")


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()


def measure_matmul_flops(dtype: torch.dtype, n: int, seconds: float = PEAK_SECONDS) -> float:
    """The best rate of repeated n x n products on the CPU, in FLOP/s."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up: thread pool and kernel selection
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def cpu_peak_flops(dtype: torch.dtype) -> float:
    """This CPU's achievable matrix-product rate in dtype: measured once, then read from the cache."""
    key = f"{cpu_model()}|threads={torch.get_num_threads()}|torch={torch.__version__}|{dtype}"
    path = cache_root() / "peak_flops.json"
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict) or not isinstance(known.get(key), float):
        known = known if isinstance(known, dict) else {}
        rates = []
        for n in PEAK_SIZES:
            rates.append(measure_matmul_flops(dtype, n))
            if 2 * n**3 / rates[-1] > PEAK_SECONDS:
                # One product outlasts the timing window: the CPU emulates this dtype (bf16 without avx512_bf16
                # or AMX), and larger products only run slower there (2048^3: minutes on such a CPU).
                break
        known[key] = max(rates)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic.write_text(path, json.dumps(known, indent=1))
        except OSError:
            pass  # a read-only cache only costs a re-measurement next time
    return known[key]


def peak_flops(device: torch.device, precision: str) -> float | None:
    """FLOP/s one device can reach: a datasheet figure for a known GPU, a measurement on a CPU, None when
    unknown (then MFU is not reported rather than reported against a guess)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return next((v for k, v in GPU_PEAK_BF16 if k in name), None)
    return cpu_peak_flops(torch.bfloat16 if precision == "bf16" else torch.float32)


def available_memory(device: torch.device) -> int | None:
    """Bytes that can still be allocated on device: a GPU's free memory; on the CPU, Linux's MemAvailable
    (free memory plus the page cache it would give back), lowered to what a container's memory limit
    (cgroup v2) leaves. None where the system does not say: then nothing is refused on a guess."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        meminfo = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    kib = next((line.split()[1] for line in meminfo.splitlines() if line.startswith("MemAvailable:")), None)
    if kib is None:
        return None
    available = int(kib) * 1024
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
    except (OSError, ValueError):
        return available
    return available if limit == "max" else min(available, int(limit) - used)


def check_memory(nbytes: int, device: torch.device, what: str, fix: str) -> None:
    """Refuse, before allocating, nbytes that this device's memory cannot hold: one line naming what
    needs them and the fix, instead of the kernel's out-of-memory killer or an allocator error later."""
    free = available_memory(device)
    if free is not None and nbytes > free:
        where = "this GPU" if device.type == "cuda" else "this machine"
        raise ScratchError(f"{what} needs {nbytes / 2**30:,.1f} GiB, but {where} has {free / 2**30:,.1f} GiB "
                           f"available; {fix}")

