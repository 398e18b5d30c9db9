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
