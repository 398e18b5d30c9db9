"""Byte-identical reruns on a GPU: every kernel choice that could change a result's last bits is fixed, once per
process, before the models run.

- cuBLAS gets a fixed workspace configuration (its documented requirement for run-to-run identical GEMMs).
- torch's deterministic algorithms: pooling's `index_add_` sums floats with atomics otherwise (the measured
  source of last-digit differences between reruns); uninitialised memory is not NaN-filled (pure cost here).
- Inductor skips on-device benchmarking that could pick different reduction configs from one run to the next.
Measured on an H200: identical features over three engine passes, ESM-2 3B 1% slower (docs/benchmarks.md).
"""

from __future__ import annotations

import os

import torch

CUBLAS_WORKSPACE = ":4096:8"


def deterministic_kernels(device: torch.device) -> bool:
    """Whether the engine fixes its kernel choices on `device` (the CPU kernels used here are deterministic
    already); recorded in a run's identity before `make_deterministic` runs."""
    return device.type == "cuda"


def make_deterministic(device: torch.device) -> None:
    """Before the first kernel on `device`. Imports Inductor's configuration (torch.use_deterministic_algorithms
    does too), so a scoring process calls it once the compiler's import has finished in the background."""
    if not deterministic_kernels(device):
        return
    os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE  # read when cuBLAS first allocates its workspace
    torch.use_deterministic_algorithms(True, warn_only=True)
    deterministic = getattr(torch.utils, "deterministic", None)
    if deterministic is not None:
        deterministic.fill_uninitialized_memory = False
    import torch._inductor.config as inductor_config

    if hasattr(inductor_config, "deterministic"):
        inductor_config.deterministic = True


def use_compile_cache(folder: str | None) -> None:
    """Compiled kernels (Inductor's FX graph cache and Triton's) go to `folder`, shared by every task and resume
    of a run: a warm cache saved ~12 s of a task's start-up on an H200 (docs/benchmarks.md)."""
    if folder:
        os.makedirs(folder, exist_ok=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)
        os.environ["TRITON_CACHE_DIR"] = os.path.join(str(folder), "triton")
