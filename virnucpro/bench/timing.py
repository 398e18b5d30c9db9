"""Timing helpers: warm up, synchronize, take wall time; sample GPU utilisation while a region runs."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import torch


@dataclass
class Measurement:
    name: str
    model: str
    workload: str
    sequences: int
    tokens: int
    seconds: float
    flops_per_token: float = 0.0
    gpu_busy: float | None = None
    details: dict = field(default_factory=dict)  # e.g. whole predict's split into stages

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds

    @property
    def sequences_per_s(self) -> float:
        return self.sequences / self.seconds

    def mfu(self, peak_flops: float) -> float:
        return self.tokens_per_s * self.flops_per_token / peak_flops if peak_flops else 0.0


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def measured_gemm_peak(device: torch.device, size: int = 8192, repeats: int = 10) -> float:
    """bf16 dense matrix-product rate on random data: the ceiling MFU is quoted against."""
    if device.type != "cuda":
        return 0.0
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    seconds = timed(lambda: [a @ b for _ in range(repeats)], device)
    return 2 * size**3 * repeats / seconds


def esm_gemm_ceiling(layers: int, dim: int, tokens: int, dtype: torch.dtype, device: torch.device) -> float:
    """Tokens/s if ESM-2 ran only its six GEMMs per layer (q, k, v, out_proj, fc1, fc2, with their biases) on a
    `tokens`-token packed batch, at the rate they reach alone in `dtype` on `device`: the shape-GEMM ceiling."""
    if device.type != "cuda":
        return 0.0
    make = lambda *shape: torch.randn(*shape, device=device, dtype=dtype)  # noqa: E731
    x, h = make(tokens, dim), make(tokens, 4 * dim)
    w, w1, w2 = make(dim, dim), make(4 * dim, dim), make(dim, 4 * dim)
    b, b1 = make(dim), make(4 * dim)

    def one_layer() -> None:
        for _ in range(4):
            torch.nn.functional.linear(x, w, b)
        torch.nn.functional.linear(x, w1, b1)
        torch.nn.functional.linear(h, w2, b)

    for _ in range(3):
        one_layer()
    seconds = timed(lambda: [one_layer() for _ in range(20)], device) / 20
    return tokens / (seconds * layers)


class UtilisationSampler:
    """Fraction of samples in which the GPU was busy (NVML), every 50 ms, in a background thread."""

    def __init__(self, device: torch.device, period: float = 0.05):
        self.device, self.period = device, period
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(torch.cuda.utilization(self.device))
            except Exception:  # NVML missing: no figure rather than a failed benchmark
                return
            time.sleep(self.period)

    def __enter__(self) -> "UtilisationSampler":
        if self.device.type == "cuda":
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    @property
    def busy(self) -> float | None:
        return sum(self.samples) / (100 * len(self.samples)) if self.samples else None
