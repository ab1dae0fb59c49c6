"""Model FLOPs per token and the matmul throughput a device reaches, for MFU."""

from __future__ import annotations

import hashlib
import os
import platform
import time
from typing import TYPE_CHECKING, Callable

import numpy as np

from train.architecture import layer_windows
from train.config import TrainConfig
from train.data import cache_dir, write_atomically

if TYPE_CHECKING:  # torch is imported where it is used, so the MLX backend does not need it
    import torch


def flops_per_token(
    matrix_params: int, n_layer: int, n_embd: int, attended_context: float
) -> float:
    """Training FLOPs per token = 6 * matrix_params + 12 * n_layer * n_embd * attended_context.

    matrix_params: weights used in matmuls (blocks and head; embedding lookups are free);
    attended_context: mean number of keys a query attends to (about seq_len / 2 when causal).
    The second term is the forward+backward cost of q.k^T and att.v (Kaplan et al. / PaLM appendix).
    """
    return 6.0 * matrix_params + 12.0 * n_layer * n_embd * attended_context


def mean_attended_context(config: TrainConfig) -> float:
    """Mean keys per query, averaged over layers: mean over t = 1..seq_len of min(t, window)."""
    positions = np.arange(1, config.seq_len + 1)
    return float(np.mean([np.minimum(positions, w).mean() for w in layer_windows(config)]))


def measure_matmul_flops(
    device: str, dtype: torch.dtype, size: int = 512, seconds: float = 0.3
) -> float:
    """FLOP/s of repeated square matmuls of `size` on `device`: 2 * size**3 per product, timed."""
    import torch

    generator = torch.Generator(device=device).manual_seed(0)  # leaves the global stream be
    a, b = (torch.randn(size, size, device=device, dtype=dtype, generator=generator)
            for _ in range(2))
    for _ in range(3):  # warm-up: thread pools, kernels
        torch.mm(a, b)
    _synchronize(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(4):
            torch.mm(a, b)
        count += 4
        _synchronize(device)
    return 2.0 * size**3 * count / (time.perf_counter() - start)


def _synchronize(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
    elif device == "mps":
        torch.mps.synchronize()


def cached_peak_flops(identity: str, measure: Callable[[], float]) -> float:
    """`measure()`, the matmul FLOP/s behind MFU, measured once per machine and `identity` (the
    backend's device, dtype, threads and library version) and then read from the data cache.

    Measuring costs every run a few tenths of a second; the figure belongs to the hardware, not
    to the run. The key adds the host name and core count to `identity`.
    """
    key = f"{platform.node()}|{os.cpu_count()}|{identity}"
    path = cache_dir() / f"peak-flops-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    if path.is_file():
        return _cached_flops(path)
    flops = measure()
    if path.is_file():  # runs that started together measured at once, each slowing the others
        flops = max(flops, _cached_flops(path))
    write_atomically(path, {"flops": np.array(flops)})
    return flops


def _cached_flops(path) -> float:
    with np.load(path) as cached:
        return float(cached["flops"])
