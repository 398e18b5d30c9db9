"""ESM-2's varlen self-attention with the rotary embedding applied as q and k are loaded (Triton, 16-bit q/k/v).

ESM-2's proteins here are short (frames of ~50 to ~170 residues), so the attention itself is a small part of a
layer; what costs is the traffic around it: a rotary pass over q and k, and copies between the projection's
output and the kernel's layout. This kernel reads q, k and v straight from the fused q/k/v projection's output
[T, 3 * heads * head_dim] (q | k | v, each [heads, head_dim] per token), rotates q and k in fp32 as it loads them
(positions restart at 0 in every sequence; cos and sin from the batch's tables by position, which every layer
shares; the same fp32 arithmetic as models.esm2.apply_rotary),
rounds them to the input dtype (as the separate pass did), and runs an online-softmax attention over the keys
of the same sequence with fp32 scores and accumulator. Output: the context [T, heads, head_dim] in q's dtype.

One program per (sequence, block of BLOCK_M queries, head); the grid's second axis comes from the batch's
max_len, so nothing is read back from the GPU. The tile shape is fixed (chosen on an H200, docs/benchmarks.md):
no autotuning, so reruns get the same bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634


@dataclass(frozen=True)
class AttentionTiles:
    block_m: int = 64
    block_n: int = 64
    warps: int = 4
    stages: int = 1


# The fastest of scripts/attention_probe.py's candidates on chunks500 and reads150 batches at the 3B shape on an
# H200 (docs/benchmarks.md, run 10): 0.45 / 0.27 ms per 32,768-token batch; 128-query tiles took 1.6-2.6x as long.
TILES = AttentionTiles()


def supports(head_dim: int) -> bool:
    """Head sizes the kernel takes: each half of a head is one power-of-two block of at least 16 columns (a tensor
    core dot's depth). ESM-2 150M and larger (32, 64, 128); not 8M (16) or 35M (24), which keep the varlen kernel."""
    return head_dim >= 32 and head_dim & (head_dim - 1) == 0


@triton.jit
def _rotated_halves(base_ptr, row0, positions, length, row_stride, cos_ptr, sin_ptr, half, HALF: tl.constexpr):
    """Rows `positions` of one head's q or k (from `base_ptr`, the head's first column in the sequence's first
    row), rotated in fp32 and rounded back: (x1 cos - x2 sin, x2 cos + x1 sin), as rotate_half's convention; cos and
    sin read from the batch's tables (row = position, 2 * HALF columns whose halves are equal)."""
    valid = (positions < length)[:, None]
    ptrs = base_ptr + (row0 + positions)[:, None].to(tl.int64) * row_stride + half[None, :]
    x1 = tl.load(ptrs, mask=valid, other=0.0)
    x2 = tl.load(ptrs + HALF, mask=valid, other=0.0)
    table = positions[:, None] * (2 * HALF) + half[None, :]
    cos = tl.load(cos_ptr + table, mask=valid, other=1.0)
    sin = tl.load(sin_ptr + table, mask=valid, other=0.0)
    a, b = x1.to(tl.float32), x2.to(tl.float32)
    return (a * cos - b * sin).to(x1.dtype), (b * cos + a * sin).to(x1.dtype)


@triton.jit
def _rotary_attention_kernel(qkv_ptr, out_ptr, cu_seqlens_ptr, cos_ptr, sin_ptr, scale_log2, qkv_stride, out_stride,
                             HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
                             BLOCK_N: tl.constexpr):
    sequence, q_block, head = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    row0 = tl.load(cu_seqlens_ptr + sequence)
    length = tl.load(cu_seqlens_ptr + sequence + 1) - row0
    if q_block * BLOCK_M >= length:  # the grid covers the batch's longest sequence
        return
    HALF: tl.constexpr = HEAD_DIM // 2
    half = tl.arange(0, HALF)
    dims = tl.arange(0, HEAD_DIM)
    queries = q_block * BLOCK_M + tl.arange(0, BLOCK_M)
    q1, q2 = _rotated_halves(qkv_ptr + head * HEAD_DIM, row0, queries, length, qkv_stride, cos_ptr, sin_ptr, half,
                             HALF)
    k_base = qkv_ptr + (HEADS + head) * HEAD_DIM
    v_base = qkv_ptr + (2 * HEADS + head) * HEAD_DIM
    row_max = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    row_sum = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, HEAD_DIM), tl.float32)
    for key0 in range(0, length, BLOCK_N):
        keys = key0 + tl.arange(0, BLOCK_N)
        k1, k2 = _rotated_halves(k_base, row0, keys, length, qkv_stride, cos_ptr, sin_ptr, half, HALF)
        scores = tl.dot(q2, tl.trans(k2), tl.dot(q1, tl.trans(k1)))
        scores = tl.where((keys < length)[None, :], scores * scale_log2, float("-inf"))
        new_max = tl.maximum(row_max, tl.max(scores, 1))
        p = tl.math.exp2(scores - new_max[:, None])
        rescale = tl.math.exp2(row_max - new_max)
        row_sum = row_sum * rescale + tl.sum(p, 1)
        v_ptrs = v_base + (row0 + keys)[:, None].to(tl.int64) * qkv_stride + dims[None, :]
        v = tl.load(v_ptrs, mask=(keys < length)[:, None], other=0.0)
        acc = tl.dot(p.to(v.dtype), v, acc * rescale[:, None])
        row_max = new_max
    out_ptrs = out_ptr + (row0 + queries)[:, None].to(tl.int64) * out_stride + head * HEAD_DIM + dims[None, :]
    tl.store(out_ptrs, (acc / row_sum[:, None]).to(out_ptr.dtype.element_ty), mask=(queries < length)[:, None])


def rotary_varlen_attention(qkv: torch.Tensor, cu_seqlens: torch.Tensor, max_len: int, cos: torch.Tensor,
                            sin: torch.Tensor, heads: int, scale: float, tiles: AttentionTiles | None = None
                            ) -> torch.Tensor:
    """softmax(rot(q) rot(k)^T * scale) v per sequence, from the fused projection qkv [T, 3 * heads * head_dim]
    (rows contiguous); cu_seqlens int32 [n + 1]; cos, sin: fp32 [>= max_len, 1, head_dim] by position, as
    models.esm2.RotaryEmbedding.cos_sin gives them. Returns [T, heads, head_dim] in qkv's dtype."""
    tiles = tiles or TILES
    total, width = qkv.shape
    head_dim = width // (3 * heads)
    out = torch.empty(total, heads, head_dim, device=qkv.device, dtype=qkv.dtype)
    sequences = cu_seqlens.numel() - 1
    if total == 0 or sequences == 0:
        return out
    grid = (sequences, triton.cdiv(max_len, tiles.block_m), heads)
    _rotary_attention_kernel[grid](qkv, out, cu_seqlens, cos.contiguous(), sin.contiguous(), scale * LOG2E,
                                   qkv.stride(0), heads * head_dim, HEADS=heads, HEAD_DIM=head_dim,
                                   BLOCK_M=tiles.block_m, BLOCK_N=tiles.block_n, num_warps=tiles.warps,
                                   num_stages=tiles.stages)
    return out
