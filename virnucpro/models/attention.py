"""Variable-length (packed) self-attention. The backend is chosen once per model, not per call.

Tensors are packed: q, k, v are [total_tokens, heads, head_dim]; `cu_seqlens` (int32, [n+1]) gives the
sequence boundaries; no token attends across a boundary. `alibi_slopes` ([heads], fp32) adds the symmetric
bias -slope * |i - j| used by DNABERT-S (MosaicBERT). Every backend has the signature
`fn(q, k, v, cu_seqlens, max_len, alibi_slopes=None, scale=None) -> out [total_tokens, heads, head_dim]`;
`scale=None` means head_dim ** -0.5.

Backends:
  varlen  torch.nn.attention.varlen.varlen_attn (torch >= 2.10, CUDA, fp16/bf16): FlashAttention-2 kernels in
          torch itself. No bias, so not for ALiBi.
  flash   flash_attn.flash_attn_varlen_func (optional package); handles ALiBi natively (bias
          -slope * |i + seqlen_k - seqlen_q - j| = -slope * |i - j| for self-attention, non-causal).
  flex    FlexAttention with a document block mask from cu_seqlens and an ALiBi score_mod; compiled once.
  padded  one SDPA call on sequences scattered into an [n, max_len] grid with a key-padding (+ ALiBi) mask; no
          host sync, exact, any device; wastes compute only on padding (small for same-sized frames).
  sdpa    one SDPA call per sequence: exact reference path for CPU (reads cu_seqlens on the host).
"auto": CUDA -> flash if importable, else varlen (no ALiBi) / padded (ALiBi); CPU -> sdpa.
Measured on an H100 (ESM-2 3B shape, bf16, frames of 50-167 tokens, 16k-token batches): varlen 72k tokens/s,
padded 64k, flex 57k (after compiling; it recompiles while shapes vary), so padded, not flex, is the ALiBi
fallback: as exact, no compilation, and little padding for same-sized frames.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
from typing import Callable

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

AttentionFn = Callable[..., torch.Tensor]
BACKENDS = ("auto", "varlen", "flash", "flex", "padded", "sdpa")
_FLEX_PAD = 128  # flex blocks are 128 tokens; padding the packed length to it keeps compiled shapes few


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


def sequence_of_token(cu_seqlens: torch.Tensor, total_tokens: int) -> torch.Tensor:
    """Index of the sequence each packed token belongs to (tokens past cu_seqlens[-1] get n)."""
    tokens = torch.arange(total_tokens, device=cu_seqlens.device, dtype=cu_seqlens.dtype)
    return torch.searchsorted(cu_seqlens[1:].contiguous(), tokens, right=True)


def sdpa_padded(q, k, v, cu_seqlens, max_len, alibi_slopes=None, scale=None):
    """Scatter sequences into [n, heads, max_len, d], one masked SDPA call, gather the real tokens back."""
    n, total = cu_seqlens.numel() - 1, q.shape[0]
    starts, lengths = cu_seqlens[:-1].long(), (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    pos = torch.arange(max_len, device=q.device)
    valid = pos[None, :] < lengths[:, None]  # [n, max_len]
    source = torch.where(valid, starts[:, None] + pos[None, :], 0).clamp_(max=max(total - 1, 0))
    qp, kp, vp = (t[source].transpose(1, 2) for t in (q, k, v))  # [n, heads, max_len, d]
    bias = torch.zeros(n, 1, 1, max_len, device=q.device, dtype=q.dtype).masked_fill(~valid[:, None, None, :],
                                                                                      float("-inf"))
    if alibi_slopes is not None:
        bias = bias + alibi_bias(alibi_slopes, max_len, q.device, q.dtype)[None]
    out = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=bias, scale=scale)  # [n, heads, max_len, d]
    seq = sequence_of_token(cu_seqlens, total).long()
    return out[seq, :, torch.arange(total, device=q.device) - starts[seq]]


def _torch_varlen() -> AttentionFn:
    from torch.nn.attention.varlen import varlen_attn  # torch >= 2.10

    takes_scale = "scale" in inspect.signature(varlen_attn).parameters  # 2.10 had no scale argument

    def attend(q, k, v, cu_seqlens, max_len, alibi_slopes=None, scale=None):
        if alibi_slopes is not None:
            raise ValueError("the varlen backend has no attention bias; use flash, flex or padded for ALiBi")
        kwargs = {}
        if scale is not None and takes_scale:
            kwargs["scale"] = scale
        elif scale is not None:
            q = q * (scale * q.shape[-1] ** 0.5)  # the kernel multiplies by head_dim ** -0.5 itself
        return varlen_attn(q, k, v, cu_seqlens, cu_seqlens, max_len, max_len, **kwargs)

    return attend


def _flash_attn() -> AttentionFn:
    from flash_attn import flash_attn_varlen_func

    def attend(q, k, v, cu_seqlens, max_len, alibi_slopes=None, scale=None):
        slopes = None if alibi_slopes is None else alibi_slopes.to(device=q.device, dtype=torch.float32)
        return flash_attn_varlen_func(q, k, v, cu_seqlens, cu_seqlens, max_len, max_len, dropout_p=0.0,
                                      softmax_scale=scale, causal=False, alibi_slopes=slopes)

    return attend


def _flex() -> AttentionFn:
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    compiled = torch.compile(flex_attention, dynamic=True)
    make_mask = torch.compile(create_block_mask, dynamic=True)

    def attend(q, k, v, cu_seqlens, max_len, alibi_slopes=None, scale=None):
        total = q.shape[0]
        padded = -(-total // _FLEX_PAD) * _FLEX_PAD
        document = sequence_of_token(cu_seqlens, padded)  # padding tokens form their own document

        def same_document(b, h, q_idx, kv_idx):
            return document[q_idx] == document[kv_idx]

        score_mod = None
        if alibi_slopes is not None:
            slopes = alibi_slopes.to(device=q.device, dtype=torch.float32)

            def score_mod(score, b, h, q_idx, kv_idx):
                return score - slopes[h] * (q_idx - kv_idx).abs()

        mask = make_mask(same_document, None, None, padded, padded, device=q.device)
        qp, kp, vp = (F.pad(t, (0, 0, 0, 0, 0, padded - total)).transpose(0, 1)[None] for t in (q, k, v))
        out = compiled(qp, kp, vp, score_mod=score_mod, block_mask=mask, scale=scale)
        return out[0].transpose(0, 1)[:total]

    return attend


HALF_ONLY = ("varlen", "flash")  # FlashAttention kernels: fp16 / bf16 inputs only


def _resolve(device: torch.device, requested: str, alibi: bool, dtype: torch.dtype) -> str:
    if requested not in BACKENDS:
        raise ValueError(f"unknown attention backend '{requested}' (choose from {', '.join(BACKENDS)})")
    if requested != "auto":
        return requested
    if device.type != "cuda":
        return "sdpa"
    if dtype not in (torch.float16, torch.bfloat16):
        return "padded"  # SDPA's memory-efficient kernel takes fp32
    if importlib.util.find_spec("flash_attn") is not None:
        return "flash"
    if alibi:
        return "padded"
    return "varlen" if importlib.util.find_spec("torch.nn.attention.varlen") is not None else "padded"


def select_backend(device: torch.device | str, requested: str = "auto", alibi: bool = False,
                   dtype: torch.dtype = torch.bfloat16) -> AttentionFn:
    """Return the varlen attention function for this device and q/k/v dtype; called once when a model is built."""
    device = torch.device(device)
    name = _resolve(device, requested, alibi, dtype)
    if name == "varlen" and alibi:  # one --attention flag serves both models; only DNABERT-S needs a bias
        log.warning("the varlen attention backend has no bias; using 'padded' for the ALiBi model")
        name = "padded"
    if name in HALF_ONLY and dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"the {name} attention backend takes fp16/bf16 only, not {dtype} (use padded)")
    if name in HALF_ONLY and device.type != "cuda":
        raise ValueError(f"the {name} attention backend needs a CUDA device, got {device}")
    factories = {"varlen": _torch_varlen, "flash": _flash_attn, "flex": _flex,
                 "padded": lambda: sdpa_padded, "sdpa": lambda: sdpa_per_sequence}
    log.info("attention backend: %s (requested %s, device %s, %s, alibi %s)", name, requested, device,
             str(dtype).replace("torch.", ""), alibi)
    fn = factories[name]()
    fn.backend_name = name
    return fn
