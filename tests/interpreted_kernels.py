"""models.fused_kernels run by Triton's interpreter on the CPU, against fp32 references; prints one JSON object.

Run by tests/test_fused_kernels.py in its own process: TRITON_INTERPRET must be set before the kernels are
defined, and must not reach the GPU tests' process.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from triton.runtime import interpreter  # noqa: E402

from virnucpro.models import esm2  # noqa: E402
from virnucpro.models import fused_kernels as fk  # noqa: E402
from virnucpro.models import rotary_attention as ra  # noqa: E402
from virnucpro.models.attention import sdpa_per_sequence, sequence_of_token  # noqa: E402
from virnucpro.models.precision import FP16  # noqa: E402

_patch_tensor = interpreter._patch_lang_tensor


def _patch_tensor_index(tensor, scope):
    """Triton 3.6's interpreter takes int() of one-element arrays, which NumPy 2 refuses (loop bounds)."""
    _patch_tensor(tensor, scope)
    scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))


interpreter._patch_lang_tensor = _patch_tensor_index
SMALL = fk.TileShape(block_m=32, block_n=64, block_k=32)  # several tiles in every direction at test sizes
fk.TILES.update({role: SMALL for role in fk.TILES})
WIDTH, HEADS, TOKENS = 128, 4, 70  # 70 rows: the last row tile is partial
HALF_ULP = 2.0**-11  # fp16's relative rounding bound


def excess(got: torch.Tensor, want: torch.Tensor, relative: float, absolute: float) -> float:
    """How far the worst element is beyond |got - want| <= relative * |want| + absolute (<= 0: within)."""
    return ((got.float() - want).abs() - relative * want.abs() - absolute).max().item()


def gemm_checks() -> dict:
    h = torch.randn(TOKENS, WIDTH).half()
    fc1 = torch.nn.Linear(WIDTH, 4 * WIDTH).half()
    want = F.gelu(h.float() @ fc1.weight.float().T + fc1.bias.float())
    checks = {"gelu": excess(fk.linear_gelu(h, fc1), want, HALF_ULP, 1e-5)}
    c = torch.randn(TOKENS, 4 * WIDTH).half()
    fc2 = torch.nn.Linear(4 * WIDTH, WIDTH).half()
    residual = torch.randn(TOKENS, WIDTH) * 4
    want = residual + c.float() @ fc2.weight.float().T + fc2.bias.float()
    written = fk.linear_residual(c, fc2, residual, "fc2")
    checks["residual"] = excess(written, want, 1e-6, 1e-5)
    checks["residual_in_place"] = written is residual
    norm = torch.nn.LayerNorm(WIDTH)
    torch.nn.init.normal_(norm.weight, 1.0, 0.3)
    torch.nn.init.normal_(norm.bias, 0.0, 0.3)
    x = torch.randn(TOKENS, WIDTH) * 3 + 1
    checks["layer_norm"] = excess(fk.layer_norm(x, norm, torch.float16), norm(x), HALF_ULP, 1e-5)
    return checks


def attention_checks() -> dict:
    """The rotary attention kernel on sequences of 70, 5, 1 and 84 tokens (partial and several query and key
    blocks) against fp32 attention of the same fp16-rounded rotated q and k. Its roundings: p to fp16 before
    p @ v (at most half an ulp of max |v|) and the output (half an ulp of it)."""
    heads, head_dim = 4, 32
    cu = torch.tensor([0, 70, 75, 76, 160], dtype=torch.int32)
    total, longest = int(cu[-1]), int((cu[1:] - cu[:-1]).max())
    qkv = torch.randn(total, 3 * heads * head_dim).half()
    rotary = esm2.RotaryEmbedding(head_dim)
    got = ra.rotary_varlen_attention(qkv, cu, longest, *rotary.cos_sin(torch.arange(longest)), heads,
                                     head_dim ** -0.5, ra.AttentionTiles(block_m=32, block_n=32, warps=4, stages=1))
    sequence = sequence_of_token(cu, total)
    cos, sin = rotary.cos_sin(torch.arange(total) - cu.long()[sequence])
    q, k, v = qkv.float().view(total, 3, heads, head_dim).unbind(1)
    q, k = (esm2.apply_rotary(t, cos, sin, torch.float16).float() for t in (q, k))
    want = sdpa_per_sequence(q, k, v, cu, longest, scale=head_dim ** -0.5)
    return {"rotary_attention": excess(got, want, HALF_ULP, HALF_ULP * v.abs().max().item() + 1e-5)}


def model_checks() -> dict:
    """A 2-layer ESM-2 through the epilogue kernels and through the eager fp16 path, both against fp32 (the
    region before attention, which torch.compile would fuse, runs eagerly here)."""
    torch.compile = lambda fn, **options: fn
    reference = esm2.ESM2(2, WIDTH, HEADS).eval()
    for layer in reference.layers:
        for norm in (layer.self_attn_layer_norm, layer.final_layer_norm):
            torch.nn.init.normal_(norm.weight, 1.0, 0.3)
    ids = torch.randint(4, 24, (TOKENS,))
    cu = torch.tensor([0, 30, TOKENS], dtype=torch.int32)
    with torch.inference_mode():
        want = reference(ids, cu, 40)
    errors = {}
    for variant in ("eager", "epilogues"):
        model = copy.deepcopy(reference).set_precision(FP16)
        model.set_attention("cpu")
        if variant == "epilogues":
            model._epilogue_kernels_run_here = lambda: True  # the interpreter stands in for a Hopper GPU
        model.fuse_elementwise(variant == "epilogues")
        with torch.inference_mode():
            errors[variant] = (model(ids, cu, 40).float() - want).abs().max().item()
        errors[f"{variant}_path"] = model.elementwise, model.attention_backend
    return {"model_error_epilogues": errors["epilogues"], "model_error_eager": errors["eager"],
            "model_path": list(errors["epilogues_path"])}


def main() -> None:
    torch.manual_seed(0)
    results = gemm_checks() | attention_checks() | model_checks()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
