"""Varlen attention backends against a naive float64 attention with an explicit block-diagonal mask."""

import math

import pytest
import torch

from virnucpro.models import attention

PACKINGS = {
    "mixed": [5, 1, 17, 9],
    "single": [23],
    "length_one_only": [1],
    "many_tiny": [1, 2, 3, 1, 2, 3, 1],
}
HEADS, HEAD_DIM = 4, 8
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _cu(lengths, device="cpu"):
    return torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist(), dtype=torch.int32, device=device)


def _qkv(total, seed=0, device="cpu", dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(total, HEADS, HEAD_DIM, generator=g).to(device=device, dtype=dtype) for _ in range(3)]


def naive_attention(q, k, v, lengths, slopes=None, scale=None):
    """float64 softmax(q k^T * scale + bias) v over the full packed length, cross-sequence pairs masked."""
    q, k, v = (t.double() for t in (q, k, v))
    scale = scale if scale is not None else 1 / math.sqrt(q.shape[-1])
    doc = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    pos = torch.cat([torch.arange(n) for n in lengths])
    scores = torch.einsum("ihd,jhd->hij", q, k) * scale
    if slopes is not None:
        scores = scores - slopes.double()[:, None, None] * (pos[:, None] - pos[None, :]).abs()[None]
    scores = scores.masked_fill(doc[:, None] != doc[None, :], float("-inf"))
    return torch.einsum("hij,jhd->ihd", scores.softmax(-1), v)


def _slopes():
    return torch.tensor([2.0 ** (-8 * (h + 1) / HEADS) for h in range(HEADS)])


@pytest.mark.parametrize("backend", ["sdpa", "padded"])
@pytest.mark.parametrize("packing", sorted(PACKINGS))
@pytest.mark.parametrize("alibi", [False, True])
def test_cpu_backends_match_naive(backend, packing, alibi):
    lengths = PACKINGS[packing]
    q, k, v = _qkv(sum(lengths))
    slopes = _slopes() if alibi else None
    fn = attention.select_backend("cpu", backend, alibi=alibi)
    out = fn(q, k, v, _cu(lengths), max(lengths), alibi_slopes=slopes, scale=0.3)
    expected = naive_attention(q, k, v, lengths, slopes, scale=0.3)
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)


def test_default_scale_is_inverse_sqrt_head_dim():
    lengths = PACKINGS["mixed"]
    q, k, v = _qkv(sum(lengths), seed=1)
    out = attention.select_backend("cpu", "auto")(q, k, v, _cu(lengths), max(lengths))
    torch.testing.assert_close(out.double(), naive_attention(q, k, v, lengths), atol=1e-5, rtol=1e-5)


def test_selection_rules():
    assert attention.select_backend("cpu").backend_name == "sdpa"
    with pytest.raises(ValueError):
        attention.select_backend("cpu", "nonsense")
    with pytest.raises(ValueError):
        attention.select_backend("cpu", "varlen")
    assert attention.select_backend("cuda", "varlen", alibi=True).backend_name == "padded"


# ------------------------------------------------------------------------------------------ GPU backends

GPU_LENGTHS = [1, 2, 3, 130, 7, 257, 64, 1000, 5]


def _gpu_case(dtype, alibi, heads=8, head_dim=64):
    g = torch.Generator().manual_seed(3)
    total = sum(GPU_LENGTHS)
    q, k, v = (torch.randn(total, heads, head_dim, generator=g).cuda().to(dtype) for _ in range(3))
    slopes = torch.tensor([2.0 ** (-8 * (h + 1) / heads) for h in range(heads)]).cuda() if alibi else None
    reference = attention.sdpa_per_sequence(q.float(), k.float(), v.float(), _cu(GPU_LENGTHS, "cuda"),
                                            max(GPU_LENGTHS), alibi_slopes=slopes, scale=0.125)
    return (q, k, v), slopes, reference


def _available(backend, alibi):
    if backend == "flash":
        pytest.importorskip("flash_attn")
    if backend == "varlen":
        if alibi:
            pytest.skip("varlen has no bias")
        pytest.importorskip("torch.nn.attention.varlen")
    if backend == "flex":
        pytest.importorskip("torch.nn.attention.flex_attention")


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("backend", ["varlen", "flash", "flex", "padded"])
@pytest.mark.parametrize("alibi", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gpu_backends_match_sdpa(backend, alibi, dtype):
    _available(backend, alibi)
    (q, k, v), slopes, reference = _gpu_case(dtype, alibi)
    fn = attention.select_backend("cuda", backend, alibi=alibi)
    out = fn(q, k, v, _cu(GPU_LENGTHS, "cuda"), max(GPU_LENGTHS), alibi_slopes=slopes, scale=0.125)
    assert out.shape == q.shape and out.dtype == q.dtype
    torch.testing.assert_close(out.float(), reference, atol=2e-2, rtol=2e-2)


@pytest.mark.gpu
@requires_cuda
def test_gpu_padded_fp32_exact():
    (q, k, v), slopes, reference = _gpu_case(torch.float32, alibi=True)
    out = attention.sdpa_padded(q, k, v, _cu(GPU_LENGTHS, "cuda"), max(GPU_LENGTHS), alibi_slopes=slopes, scale=0.125)
    torch.testing.assert_close(out, reference, atol=1e-4, rtol=1e-4)
