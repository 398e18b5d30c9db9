"""models.fused_kernels and models.rotary_attention: the Triton GEMM-epilogue, LayerNorm and rotary attention kernels
against fp32 references.

The kernels run under Triton's CPU interpreter (tests/interpreted_kernels.py, own process); on a Hopper GPU the
whole 3B-shape model runs them against fair-esm's fp32 forward (tests/test_esm2.py, GPU) and
scripts/epilogue_probe.py measures their speed.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

from virnucpro.models import fused_kernels  # noqa: E402

SCRIPT = Path(__file__).with_name("interpreted_kernels.py")


@pytest.fixture(scope="module")
def interpreted() -> dict:
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("check", ["gelu", "residual", "layer_norm", "rotary_attention"])
def test_kernel_within_one_rounding_of_fp32(interpreted, check):
    # <= 0: every element within half an fp16 ulp (one final rounding) + 1e-5 of the fp32 reference (attention: plus
    # the rounding of p, see interpreted_kernels.attention_checks)
    assert interpreted[check] <= 0, f"{check}: {interpreted[check]} beyond the bound"


def test_residual_written_in_place(interpreted):
    assert interpreted["residual_in_place"] is True


def test_whole_model_through_epilogues_no_worse_than_eager_half(interpreted):
    # the whole path: GEMM epilogues, LayerNorm kernel, fused q/k/v and the rotary attention kernel
    assert interpreted["model_path"] == ["epilogues", "rotary-triton"]
    # the epilogues round fewer intermediates than the eager fp16 path, so they sit at least as close to fp32
    assert interpreted["model_error_epilogues"] <= interpreted["model_error_eager"]
    assert interpreted["model_error_epilogues"] < 5e-3


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where the kernels cannot run")
def test_kernels_that_cannot_run_leave_the_compiled_path_with_a_warning(caplog):
    fused_kernels._TRIED.clear()
    assert fused_kernels._runs_here(torch.device("cuda", 0), torch.float16, 256, 4) is False
    assert "Triton epilogue kernels unavailable" in caplog.text
    fused_kernels._TRIED.clear()


def test_cpu_model_keeps_the_compiled_path():
    from virnucpro.models.esm2 import ESM2
    from virnucpro.models.precision import FP16

    model = ESM2(2, 64, 4).set_precision(FP16)
    assert model._epilogue_kernels_run_here() is False  # no Hopper GPU: torch.compile's regions, as before


def test_head_sizes_the_rotary_attention_kernel_takes():
    from virnucpro.models.rotary_attention import supports

    # halves of one power-of-two block of >= 16 columns: ESM-2 150M (32), 650M/3B (64), 15B (128); not 8M, 35M
    assert [supports(d) for d in (16, 24, 32, 64, 128)] == [False, False, True, True, True]


@pytest.mark.parametrize("width, requested, backend", [(64, "auto", "sdpa"), (128, "sdpa", "sdpa"),
                                                       (128, "auto", "rotary-triton")])
def test_epilogue_path_takes_the_rotary_kernel_only_when_it_fits_and_nothing_else_was_asked(width, requested, backend):
    from virnucpro.models.esm2 import ESM2
    from virnucpro.models.precision import FP16

    model = ESM2(2, width, 4).set_precision(FP16)  # head sizes 16 and 32
    model.set_attention("cpu", requested)
    model._epilogue_kernels_run_here = lambda: True  # as on a Hopper GPU
    model.fuse_elementwise(True)
    assert (model.elementwise, model.attention_backend) == ("epilogues", backend)
    fused = model.layers[0].self_attn.qkv_weight is not None
    assert fused == (backend == "rotary-triton")
    model.fuse_elementwise(False)  # back to the chosen kernel
    assert model.attention_backend == "sdpa"
