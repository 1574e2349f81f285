"""Where and how networks run: device choice, mixed precision, the module inside a DDP wrapper, the
machine's measured fp32 GEMM peak (the roof that speed figures are shares of)."""

from __future__ import annotations

import contextlib
import logging
import time

import torch
from torch import nn

from pcbsiam.errors import ConfigError

log = logging.getLogger(__name__)


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA (this process's GPU) when present, else CPU; otherwise the named device.

    Raises:
        ConfigError: ``name`` is not a device torch knows, or names a CUDA device this machine lacks.
    """
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (dev.index or 0) >= count:
            have = f"{count} CUDA device(s)" if count else "no CUDA GPU"
            raise ConfigError(f"device {name!r} asked for, but this machine has {have}; use cpu or auto")
    elif dev.type != "cpu" and not _available(dev):
        raise ConfigError(f"device {name!r} is not available on this machine; use cpu or auto")
    return dev


def _available(dev: torch.device) -> bool:
    backend = getattr(torch.backends, dev.type, None) if dev.type == "mps" else getattr(torch, dev.type, None)
    is_available = getattr(backend, "is_available", None)
    return bool(is_available and is_available())


def autocast(device: torch.device, enabled: bool = True, cpu: bool = False) -> contextlib.AbstractContextManager:
    """bfloat16 mixed precision on CUDA when enabled; on the CPU only when ``cpu`` is set too."""
    if enabled and (device.type == "cuda" or (cpu and device.type == "cpu")):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def cpu_has_bf16() -> bool:
    """Whether this processor computes bfloat16 natively (AVX512-BF16 or AMX); True when torch cannot tell."""
    probes = [getattr(torch.cpu, n, None) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    probes = [p for p in probes if p is not None]
    return not probes or any(p() for p in probes)


def warn_cpu_amp(device: torch.device, cpu_amp: bool) -> bool:
    """Log a warning when bfloat16 autocast is asked for on a CPU that would emulate it; True if it did.

    Without AVX512-BF16 or AMX, oneDNN emulates bfloat16 and a training step is many times slower than in
    float32 (measured: 0.9 against 12.3 pairs/s on an AVX2-only processor, docs/RESULTS.md).
    """
    if cpu_amp and device.type == "cpu" and not cpu_has_bf16():
        log.warning(
            "train.cpu_amp: this processor has no native bfloat16 (AVX512-BF16 or AMX), so bfloat16 steps are "
            "emulated and many times slower than float32; set train.cpu_amp=false"
        )
        return True
    return False


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside a DistributedDataParallel wrapper."""
    return model.module if hasattr(model, "module") else model


def matmul_peak_gflops(seconds: float = 3.0, n: int = 1024) -> float:
    """Measured fp32 GEMM peak of this machine: best GFLOP/s of ``torch.mm`` on (n, n) matrices.

    Runs on the CPU with ``torch.get_num_threads()`` threads for about ``seconds``; the best of many
    timed products is returned, so a briefly busy machine lowers it less than an average would.
    """
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
    out = torch.empty(n, n)
    torch.mm(a, b, out=out)
    best, t_end = float("inf"), time.perf_counter() + seconds
    while True:
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        t1 = time.perf_counter()
        best = min(best, t1 - t0)
        if t1 >= t_end:
            break
    return 2.0 * n**3 / best / 1e9
