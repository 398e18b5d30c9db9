"""Numerics of the models, chosen once per device: which dtype each part of a forward computes in.

  gemm       weights and inputs of the Linear layers (the GEMMs): fp16 / bf16 on tensor cores with fp32
             accumulation, or fp32
  tf32       fp32 GEMMs on tensor cores with 10-bit-mantissa inputs (torch's "high" float32 matmul precision)
  residual   the residual stream, the embeddings and the LayerNorms: fp32 keeps per-layer rounding from
             compounding over 36 (ESM-2) or 12 (DNABERT-S) blocks, at no measurable cost
  attention  q/k/v as handed to the attention kernel (FlashAttention-class varlen kernels take fp16/bf16 only;
             fp32 attention runs torch's SDPA)

A `--precision` mode (`Numerics`) gives each model its `Precision`. The agreement of each mode's calls with the
fp32 reference and its speed were measured on an H200 (docs/benchmarks.md, "Numerics").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from virnucpro.config import CPU_PRECISION, DEFAULT_PRECISION, PRECISION_NAMES  # noqa: F401 (re-exported)

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


@dataclass(frozen=True)
class Precision:
    gemm: torch.dtype = torch.float32
    residual: torch.dtype = torch.float32
    attention: torch.dtype = torch.float32
    tf32: bool = False

    @property
    def half(self) -> bool:
        """Whether the GEMMs run in a 16-bit type."""
        return self.gemm in (torch.float16, torch.bfloat16)

    def describe(self) -> dict:
        return {"gemm": dtype_name(self.gemm) + ("/tf32" if self.tf32 else ""), "residual": dtype_name(self.residual),
                "attention": dtype_name(self.attention)}


FP32 = Precision()
FP16 = Precision(torch.float16, torch.float32, torch.float16)
BF16 = Precision(torch.bfloat16, torch.float32, torch.bfloat16)


@dataclass(frozen=True)
class Numerics:
    """What `--precision MODE` means for each model."""

    mode: str
    esm: Precision
    dnabert: Precision
    # > 0: frames whose call could differ from fp32's are computed again with fp32 models (engine.recheck): those
    # with |score2 - score1| below this, and every frame of a chunk whose best virus and best non-virus scores are
    # closer than this.
    recheck_margin: float = 0.0

    @property
    def tf32(self) -> bool:
        return self.esm.tf32 or self.dnabert.tf32

    def apply_global_settings(self) -> None:
        """The process-wide float32 matmul setting (one engine per process; fp32 GEMMs stay IEEE unless asked)."""
        torch.backends.cuda.matmul.allow_tf32 = self.tf32
        torch.backends.cudnn.allow_tf32 = self.tf32

    def describe(self) -> dict:
        described = {"mode": self.mode, "esm": self.esm.describe(), "dnabert": self.dnabert.describe()}
        return described | ({"recheck_margin": self.recheck_margin} if self.recheck_margin else {})


# |score2 - score1| under which `accurate` recomputes a call in fp32: fp16's largest measured error in that
# difference is 0.0043 (0.0085 in logits, 7,395 frame-classifier pairs, docs/benchmarks.md), so a call further
# from the boundary than this cannot flip unless an error were 4.7x the largest seen.
RECHECK_MARGIN = 0.02

# Measured on an H200, random weights of the real shapes, five classifiers calibrated to call half of 1,969
# frames viral (docs/benchmarks.md): calls identical to the fp32 reference, and ESM-2 3B tokens/s.
PRECISION_MODES = {
    # default: 99.81% identical, 95-97% of bf16's speed. The released ESM-2 checkpoints store fp16 weights, so
    # fp16 GEMMs use them exactly (bf16 rounds them); DNABERT-S in bf16 caused most flips.
    "fp16": Numerics("fp16", FP16, FP16),
    # the first round's GEMM type (wider range, 8-bit mantissa): 98.9% identical, ~5% faster than fp16
    "bf16": Numerics("bf16", BF16, BF16),
    # fp16, then every frame within RECHECK_MARGIN of a call's boundary computed again in fp32 (engine.recheck)
    "accurate": Numerics("accurate", FP16, FP16, recheck_margin=RECHECK_MARGIN),
    # the exact reference: fp32 everywhere, TF32 off: 99.98% (only exact ties differ), ~9% of the speed
    "fp32": Numerics("fp32", FP32, FP32),
}
if tuple(PRECISION_MODES) != PRECISION_NAMES:
    raise ImportError(f"models.precision defines {tuple(PRECISION_MODES)}, config names {PRECISION_NAMES}")
CPU_NUMERICS = PRECISION_MODES[CPU_PRECISION]  # half-precision GEMMs are slow on CPUs: every mode computes fp32 there


def custom_precision(gemm: str, residual: str = "fp32", attention: str | None = None, tf32: bool = False) -> Precision:
    """A precision from dtype names (tuning and fidelity sweeps): attention defaults to the GEMM dtype."""
    return Precision(_DTYPES[gemm], _DTYPES[residual], _DTYPES[attention or gemm], tf32)


def as_precision(value: "Precision | torch.dtype") -> Precision:
    """A Precision, or a dtype meaning: GEMMs and attention in it, residual stream fp32."""
    if isinstance(value, Precision):
        return value
    return Precision(value, torch.float32, value)
