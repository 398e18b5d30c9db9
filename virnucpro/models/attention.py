"""Variable-length (packed) self-attention. The backend is chosen once per model, not per call.

Tensors are packed: q, k, v are [total_tokens, heads, head_dim]; `cu_seqlens` (int32, [n+1]) gives the
sequence boundaries; no token attends across a boundary. `alibi_slopes` ([heads], fp32) adds the symmetric
bias -slope * |i - j| used by DNABERT-S (MosaicBERT).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def alibi_bias(slopes: torch.Tensor, length: int, device, dtype) -> torch.Tensor:
    pos = torch.arange(length, device=device)
    distance = (pos[None, :] - pos[:, None]).abs().to(torch.float32)
    return (-slopes.to(device=device, dtype=torch.float32)[:, None, None] * distance).to(dtype)


def sdpa_per_sequence(q, k, v, cu_seqlens, max_len, alibi_slopes=None, scale=None):
    """Reference-grade CPU path: one SDPA call per sequence (exact, no cross-sequence leakage)."""
    out = torch.empty_like(q)
    bounds = cu_seqlens.tolist()
    for start, stop in zip(bounds[:-1], bounds[1:]):
        if stop == start:
            continue
        qs, ks, vs = (t[start:stop].transpose(0, 1) for t in (q, k, v))  # [heads, L, d]
        bias = None if alibi_slopes is None else alibi_bias(alibi_slopes, stop - start, q.device, q.dtype)
        out[start:stop] = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=bias, scale=scale).transpose(0, 1)
    return out


def select_backend(device: torch.device, requested: str = "auto", alibi: bool = False):
    """Return the varlen attention function for this device; called once when a model is built."""
    return sdpa_per_sequence
