"""Triton kernels that move ESM-2's elementwise work into the GEMMs that feed it (Hopper, fp16/bf16 weights).

What a layer spends outside its GEMMs is memory traffic (docs/benchmarks.md, "Where ESM-2 3B's time goes"): the
exact GELU pass alone reads and writes the [T, 4*dim] activation. Here that work rides in the GEMM epilogues,
on the fp32 accumulator, before anything is rounded:

  linear_gelu(h, fc1)          gelu_erf(h @ W1^T + b1), rounded once to the weights' dtype
  linear_residual(c, W, x)     x + (c @ W^T + b), in x's dtype (the fp32 residual stream), written into x
  layer_norm(x, norm)          LayerNorm of fp32 rows, one row per program, rounded to the GEMM dtype

Each GEMM is a persistent TMA kernel with one fixed tile shape per GEMM (chosen on an H200, docs/benchmarks.md):
no autotuning at run time, so every task and every rerun runs the same instructions and gets the same bits.
The rounding differs from cuBLAS plus a separate pass only where the separate pass rounded an intermediate to 16
bits; here those intermediates stay fp32 (closer to the fp32 reference).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

log = logging.getLogger(__name__)
EPILOGUE_BIAS, EPILOGUE_GELU, EPILOGUE_RESIDUAL = 0, 1, 2


@dataclass(frozen=True)
class TileShape:
    block_m: int = 128
    block_n: int = 256
    block_k: int = 64
    group_m: int = 8
    stages: int = 3
    warps: int = 8
    tma_out: bool = False  # epilogue through a tensor descriptor (TMA) instead of per-thread stores
    warp_specialize: bool = False
    subtile: bool = False  # the epilogue in two halves of the tile's columns (half the shared memory)


# Per GEMM after attention: out_proj [T, d] x [d, d]^T, fc1 [T, d] x [4d, d]^T, fc2 [T, 4d] x [d, 4d]^T. The
# fastest of scripts/epilogue_probe.py's candidates at the 3B shapes on an H200 (docs/benchmarks.md, run 9):
# of cuBLAS's plain GEMM 0.83 (out_proj), 0.88 (fc1, with its GELU), 0.96 (fc2). The q/k/v GEMM stays cuBLAS's:
# a Triton one with the rotary in its epilogue reached 0.90 of it and lost more than the rotary pass costs.
TILES = {"out_proj": TileShape(stages=3, warp_specialize=True, subtile=True),
         "fc1": TileShape(stages=4, tma_out=True, subtile=True),
         "fc2": TileShape(stages=3, warp_specialize=True, subtile=True)}


@triton.jit
def _tile_coordinates(tile, tiles_m, tiles_n, GROUP_M: tl.constexpr):
    """Grouped order: GROUP_M row blocks share each weight column block while it is in L2."""
    per_group = GROUP_M * tiles_n
    first_m = (tile // per_group) * GROUP_M
    group_rows = min(tiles_m - first_m, GROUP_M)
    return first_m + (tile % group_rows), (tile % per_group) // group_rows


@triton.jit
def _finish_tile(acc, row0, col0, bias_ptr, out_ptr, out_desc, M, N, out_stride, EPILOGUE: tl.constexpr,
                 TMA_OUT: tl.constexpr, ROWS: tl.constexpr, COLUMNS: tl.constexpr):
    """Bias, then GELU (EPILOGUE 1) or the residual already in `out` (EPILOGUE 2), and the store."""
    cols = col0 + tl.arange(0, COLUMNS)
    acc += tl.load(bias_ptr + cols, mask=cols < N, other=0.0).to(tl.float32)[None, :]
    if EPILOGUE == 1:
        acc = 0.5 * acc * (1.0 + tl.math.erf(acc * 0.7071067811865476))
    if TMA_OUT:
        if EPILOGUE == 2:
            acc += out_desc.load([row0, col0]).to(tl.float32)
        out_desc.store([row0, col0], acc.to(out_ptr.dtype.element_ty))
    else:
        rows = row0 + tl.arange(0, ROWS)
        ptrs = out_ptr + rows[:, None].to(tl.int64) * out_stride + cols[None, :]
        mask = (rows[:, None] < M) & (cols[None, :] < N)
        if EPILOGUE == 2:
            acc += tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)
        tl.store(ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask)


# The token count varies from batch to batch: not specialised on (M % 16, M == 1), so each kernel compiles once per
# run (and is found in the run's compile cache by every later task) whatever the batches' sizes.
@triton.jit(do_not_specialize=["M"])
def _gemm_epilogue_kernel(a_desc, w_desc, bias_ptr, out_ptr, out_desc, M, N, K, out_stride,
                          EPILOGUE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                          BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr, NUM_SMS: tl.constexpr,
                          TMA_OUT: tl.constexpr, WARP_SPECIALIZE: tl.constexpr, SUBTILE: tl.constexpr):
    """out = epilogue(A @ W^T + bias) for A [M, K], W [N, K]; the residual epilogue reads `out` and adds to it."""
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    k_tiles = tl.cdiv(K, BLOCK_K)
    for tile in tl.range(tl.program_id(0), tiles_m * tiles_n, NUM_SMS, flatten=True,
                         warp_specialize=WARP_SPECIALIZE):
        pid_m, pid_n = _tile_coordinates(tile, tiles_m, tiles_n, GROUP_M)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for ki in range(k_tiles):
            a = a_desc.load([pid_m * BLOCK_M, ki * BLOCK_K])
            w = w_desc.load([pid_n * BLOCK_N, ki * BLOCK_K])
            acc = tl.dot(a, w.T, acc)
        row0, col0 = pid_m * BLOCK_M, pid_n * BLOCK_N
        if SUBTILE:
            left, right = tl.split(tl.permute(tl.reshape(acc, (BLOCK_M, 2, BLOCK_N // 2)), (0, 2, 1)))
            _finish_tile(left, row0, col0, bias_ptr, out_ptr, out_desc, M, N, out_stride, EPILOGUE, TMA_OUT,
                         BLOCK_M, BLOCK_N // 2)
            _finish_tile(right, row0, col0 + BLOCK_N // 2, bias_ptr, out_ptr, out_desc, M, N, out_stride, EPILOGUE,
                         TMA_OUT, BLOCK_M, BLOCK_N // 2)
        else:
            _finish_tile(acc, row0, col0, bias_ptr, out_ptr, out_desc, M, N, out_stride, EPILOGUE, TMA_OUT,
                         BLOCK_M, BLOCK_N)


def supported(device: torch.device, precision, width: int, heads: int) -> bool:
    """Whether these kernels serve a model of `width` and `heads` computing in `precision` on `device`: tensor
    descriptors (TMA) need Hopper or newer; 16-bit GEMMs whose inputs arrive in the GEMM dtype; an fp32 residual
    stream; rows 16-byte aligned; and the kernels compile and run here (tried once per device, dtype and shape)."""
    if device.type != "cuda" or torch.cuda.get_device_capability(device)[0] < 9 or width % 8:
        return False
    half = precision.gemm in (torch.float16, torch.bfloat16)
    if not (half and precision.attention == precision.gemm and precision.residual == torch.float32):
        return False
    return _runs_here(device, precision.gemm, width, heads)


_TRIED: dict[tuple, bool] = {}


def _runs_here(device: torch.device, dtype: torch.dtype, width: int, heads: int) -> bool:
    """One small call of each kernel a model of this shape uses (so compiling them happens here, once), the rotary
    attention kernel (models.rotary_attention) included: a Triton or driver that cannot build them leaves the
    model on the torch.compile path with a warning, not a failed job."""
    key = (device.index if device.index is not None else torch.cuda.current_device(), dtype, width, heads)
    if key not in _TRIED:
        try:
            _try_each_kernel(device, dtype, width, heads)
            _TRIED[key] = True
        except Exception as error:  # any build or launch failure: the fallback is the compiled region
            log.warning("Triton epilogue kernels unavailable on %s (%s): elementwise work stays with torch.compile",
                        device, str(error).splitlines()[0][:200])
            _TRIED[key] = False
    return _TRIED[key]


def _try_each_kernel(device: torch.device, dtype: torch.dtype, width: int, heads: int) -> None:
    from virnucpro.models.rotary_attention import rotary_varlen_attention, supports

    with torch.device(device):
        linear, norm = torch.nn.Linear(width, width).to(dtype), torch.nn.LayerNorm(width)
        x = torch.randn(8, width)
        h = layer_norm(x, norm, dtype)
        activation = linear_gelu(h, linear)
        linear_residual(activation, linear, x, "fc2")
        linear_residual(activation, linear, x, "out_proj")  # one kernel with fc2 only while their tiles are equal
        if supports(width // heads):
            qkv = torch.randn(8, 3 * width, dtype=dtype)
            cos = torch.ones(5, 1, width // heads)
            rotary_varlen_attention(qkv, torch.tensor([0, 5, 8], dtype=torch.int32), 5, cos, cos * 0, heads, 1.0)
        torch.cuda.synchronize(device)


_SM_COUNT: dict[int, int] = {}


def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":  # Triton's interpreter (TRITON_INTERPRET=1) runs the kernels on CPU tensors
        return 4
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SM_COUNT:
        _SM_COUNT[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return _SM_COUNT[index]


def gemm_epilogue(a: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, out: torch.Tensor, epilogue: int,
                  tiles: TileShape) -> torch.Tensor:
    """Launch the persistent GEMM: a [M, K] and weight [N, K] contiguous in one 16-bit dtype; out [M, N]."""
    (m, k), n = a.shape, weight.shape[0]
    a_desc = TensorDescriptor.from_tensor(a, [tiles.block_m, tiles.block_k])
    w_desc = TensorDescriptor.from_tensor(weight, [tiles.block_n, tiles.block_k])
    sms = _sm_count(a.device)
    grid = (min(sms, triton.cdiv(m, tiles.block_m) * triton.cdiv(n, tiles.block_n)),)
    out_desc = TensorDescriptor.from_tensor(out, [tiles.block_m, tiles.block_n // (2 if tiles.subtile else 1)])
    _gemm_epilogue_kernel[grid](a_desc, w_desc, bias, out, out_desc, m, n, k, out.stride(0), EPILOGUE=epilogue,
                                BLOCK_M=tiles.block_m, BLOCK_N=tiles.block_n, BLOCK_K=tiles.block_k,
                                GROUP_M=tiles.group_m, NUM_SMS=sms, TMA_OUT=tiles.tma_out,
                                WARP_SPECIALIZE=tiles.warp_specialize, SUBTILE=tiles.subtile, num_stages=tiles.stages,
                                num_warps=tiles.warps)
    return out


def linear_gelu(h: torch.Tensor, linear: torch.nn.Linear) -> torch.Tensor:
    """gelu_erf(linear(h)) in h's dtype, the GELU taken on the fp32 accumulator."""
    out = torch.empty(h.shape[0], linear.out_features, device=h.device, dtype=h.dtype)
    return gemm_epilogue(h, linear.weight, linear.bias, out, EPILOGUE_GELU, TILES["fc1"])


def linear_residual(c: torch.Tensor, linear: torch.nn.Linear, residual: torch.Tensor, role: str) -> torch.Tensor:
    """residual += linear(c), summed in fp32 and written into `residual` (its own dtype), which is returned;
    `role` names the GEMM in TILES."""
    return gemm_epilogue(c, linear.weight, linear.bias, residual, EPILOGUE_RESIDUAL, TILES[role])


@triton.jit
def _layer_norm_kernel(x_ptr, weight_ptr, bias_ptr, out_ptr, N, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    valid = cols < N
    x = tl.load(x_ptr + row * N + cols, mask=valid, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=0) / N
    centred = tl.where(valid, x - mean, 0.0)
    variance = tl.sum(centred * centred, axis=0) / N
    inverse = 1.0 / tl.sqrt_rn(variance + eps)
    weight = tl.load(weight_ptr + cols, mask=valid, other=0.0).to(tl.float32)
    bias = tl.load(bias_ptr + cols, mask=valid, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * N + cols, (centred * inverse * weight + bias).to(out_ptr.dtype.element_ty), mask=valid)


def layer_norm(x: torch.Tensor, norm: torch.nn.LayerNorm, dtype: torch.dtype) -> torch.Tensor:
    """norm(x) for contiguous rows x [T, N], computed in fp32 and rounded to `dtype`."""
    rows, n = x.shape
    out = torch.empty(rows, n, device=x.device, dtype=dtype)
    block = triton.next_power_of_2(n)
    _layer_norm_kernel[(rows,)](x, norm.weight, norm.bias, out, n, norm.eps, BLOCK=block,
                                num_warps=max(1, min(16, block // 256)))
    return out
