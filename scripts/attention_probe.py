"""ESM-2 3B on a GPU: the work before and in attention, and where a layer's time goes (issue 16).

  python scripts/attention_probe.py [--tiles] [--model] [--profile DIR] [--json FILE]

Prints JSON lines. Always: on real chunks500 and reads150 batches (32,768-token budget, 3B shapes, fp16), the
region "LayerNorm, q/k/v, rotary, attention" two ways — torch.compile's region with three projections and the
varlen kernel (before), against the LayerNorm kernel, one fused q/k/v GEMM and the rotary attention kernel
(models.rotary_attention) — with each one's error against an fp32 reference; with --tiles, the attention kernel
under candidate tiles first (the fastest is kept). --model: whole-model tokens/s for compiled, epilogues with the
varlen kernel, and epilogues with the rotary kernel (the default), beside the shape-GEMM ceiling. --profile: the
default path under torch.profiler, kernel time by kind, the kernel table written to DIR.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from virnucpro.bench.timing import esm_gemm_ceiling, timed  # noqa: E402
from virnucpro.models import fused_kernels as fk  # noqa: E402
from virnucpro.models import rotary_attention as ra  # noqa: E402
from virnucpro.models.attention import sdpa_padded, select_backend, sequence_of_token  # noqa: E402
from virnucpro.models.esm2 import ESM2, TransformerLayer, apply_rotary, attention_inputs  # noqa: E402
from virnucpro.models.precision import FP16  # noqa: E402

DIM, HEADS, LAYERS, BUDGET = 2560, 40, 36, 32768
CUDA = torch.device("cuda")
A = ra.AttentionTiles
TILE_CANDIDATES = [A(64, 32, 4, 2), A(64, 32, 4, 1), A(64, 32, 4, 3), A(64, 64, 4, 1), A(64, 64, 4, 2), A(64, 16, 4, 2),
                   A(128, 32, 8, 2), A(128, 64, 8, 2), A(128, 32, 4, 2), A(32, 32, 2, 2), A(64, 32, 8, 2)]


def seconds_per_call(fn, repeats: int = 20, warm_up: int = 3) -> float:
    for _ in range(warm_up):
        fn()
    return timed(lambda: [fn() for _ in range(repeats)], CUDA) / repeats


def emit(record: dict, sink) -> None:
    line = json.dumps(record)
    print(line, flush=True)
    if sink:
        sink.write(line + "\n")
        sink.flush()


def first_batch(workload: str):
    from virnucpro.bench.peers import prepack
    from virnucpro.bench.workloads import WORKLOADS
    from virnucpro.tokenize.protein import ProteinTokenizer

    tokenizer = ProteinTokenizer()
    batch = prepack([tokenizer.encode(p) for p in WORKLOADS[workload].proteins(4096)], BUDGET)[0]
    return batch.cu_seqlens.to(CUDA), batch.max_len


def layer_and_input(tokens: int):
    torch.manual_seed(0)
    layer = TransformerLayer(DIM, HEADS).to(CUDA)
    layer.self_attn_layer_norm.weight.data.normal_(1.0, 0.2)
    x = torch.randn(tokens, DIM, device=CUDA) * 3
    return layer, x


def fp32_reference(layer, x, cu, max_len):
    attn = layer.self_attn
    shape = (x.shape[0], HEADS, DIM // HEADS)
    h = layer.self_attn_layer_norm(x)
    sequence = sequence_of_token(cu, x.shape[0])
    cos, sin = attn.rot_emb.cos_sin(torch.arange(x.shape[0], device=CUDA) - cu.long()[sequence])
    q, k = (apply_rotary(p(h).view(shape), cos, sin) for p in (attn.q_proj, attn.k_proj))
    return sdpa_padded(q, k, attn.v_proj(h).view(shape), cu, max_len, scale=attn.head_dim ** -0.5)


def before_attention(workload: str, sink) -> None:
    cu, max_len = first_batch(workload)
    layer, x = layer_and_input(int(cu[-1]))
    with torch.inference_mode():
        reference = fp32_reference(layer, x, cu, max_len)
        layer.half().self_attn_layer_norm.float()
        attn = layer.self_attn
        varlen = select_backend(CUDA, "varlen", dtype=torch.float16)
        compiled = torch.compile(attention_inputs, dynamic=True)
        cos, sin = attn.rot_emb.cos_sin(torch.arange(x.shape[0], device=CUDA) -
                                        cu.long()[sequence_of_token(cu, x.shape[0])])
        by_position = attn.rot_emb.cos_sin(torch.arange(max_len, device=CUDA))

        def before():
            q, k, v = compiled(x, layer.self_attn_layer_norm, attn, cos, sin, torch.float16)
            return varlen(q, k, v, cu, max_len, scale=attn.head_dim ** -0.5)

        attn.fuse_projections()
        qkv = F.linear(fk.layer_norm(x, layer.self_attn_layer_norm, torch.float16), attn.qkv_weight, attn.qkv_bias)

        def now():
            h = fk.layer_norm(x, layer.self_attn_layer_norm, torch.float16)
            fused = F.linear(h, attn.qkv_weight, attn.qkv_bias)
            return ra.rotary_varlen_attention(fused, cu, max_len, *by_position, HEADS, attn.head_dim ** -0.5)

        parts = {"layer_norm+qkv_gemm": lambda: F.linear(fk.layer_norm(x, layer.self_attn_layer_norm, torch.float16),
                                                         attn.qkv_weight, attn.qkv_bias),
                 "rotary_attention_kernel": lambda: ra.rotary_varlen_attention(qkv, cu, max_len, *by_position, HEADS,
                                                                               attn.head_dim ** -0.5)}
        for name, fn in {"compiled+varlen": before, "kernels": now, **parts}.items():
            out = fn()
            record = {"probe": "before-attention", "workload": workload, "variant": name, "tokens": x.shape[0],
                      "sequences": cu.numel() - 1, "max_len": max_len, "seconds": seconds_per_call(fn)}
            if name in ("compiled+varlen", "kernels"):
                error = (out.float() - reference).abs()
                record |= {"max_abs_error": error.max().item(), "mean_abs_error": error.mean().item()}
            emit(record, sink)


def choose_tiles(sink) -> None:
    """Each candidate tile on both workloads' first batch; the fastest in sum goes into ra.TILES."""
    inputs = []
    for workload in ("chunks500", "reads150"):
        cu, max_len = first_batch(workload)
        torch.manual_seed(0)
        qkv = torch.randn(int(cu[-1]), 3 * DIM, device=CUDA, dtype=torch.float16)
        inputs.append((workload, qkv, cu, max_len))
    cos, sin = TransformerLayer(DIM, HEADS).self_attn.rot_emb.to(CUDA).cos_sin(torch.arange(1026, device=CUDA))
    best = (float("inf"), None)
    for tiles in TILE_CANDIDATES:
        total = 0.0
        for workload, qkv, cu, max_len in inputs:
            try:
                seconds = seconds_per_call(lambda: ra.rotary_varlen_attention(qkv, cu, max_len, cos, sin, HEADS,
                                                                              0.125, tiles))
            except Exception as error:  # a tile that does not fit: say so and go on
                emit({"probe": "attention-tiles", "tiles": tiles.__dict__, "error": str(error)[:200]}, sink)
                total = float("inf")
                break
            emit({"probe": "attention-tiles", "workload": workload, "tiles": tiles.__dict__, "seconds": seconds}, sink)
            total += seconds
        best = min(best, (total, tiles), key=lambda pair: pair[0])
    ra.TILES = best[1]
    emit({"probe": "attention-tiles-chosen", "tiles": best[1].__dict__}, sink)


PATHS = {"compiled": ("auto", False), "epilogues+varlen": ("varlen", True),
         "epilogues+rotary-attention": ("auto", True)}  # (attention requested, GEMM epilogues); the last: default


def build_3b(path: str) -> ESM2:
    attention, epilogues = PATHS[path]
    torch.manual_seed(0)
    with torch.device(CUDA):
        model = ESM2(LAYERS, DIM, HEADS)
    model = model.set_precision(FP16).eval()
    model.set_attention(CUDA, attention)
    model.fuse_elementwise(True, epilogues=epilogues)
    return model


def whole_model(sink) -> None:
    from virnucpro.bench.peers import packed, prepack
    from virnucpro.bench.workloads import WORKLOADS
    from virnucpro.models.esm2 import mean_pool_residues
    from virnucpro.tokenize.protein import ProteinTokenizer

    tokenizer = ProteinTokenizer()
    ceiling = esm_gemm_ceiling(LAYERS, DIM, BUDGET, torch.float16, CUDA)
    batches = {w: prepack([tokenizer.encode(p) for p in WORKLOADS[w].proteins(2048)], BUDGET)
               for w in ("chunks500", "reads150")}
    pooled = {}
    for name in PATHS:
        model = build_3b(name)
        for workload, chosen in batches.items():
            tokens = sum(int(b.input_ids.numel()) for b in chosen)
            seconds = seconds_per_call(lambda: packed(model, mean_pool_residues, chosen, CUDA), 2, warm_up=1)
            emit({"probe": "model", "workload": workload, "variant": name, "elementwise": model.elementwise,
                  "attention": model.attention_backend, "tokens": tokens, "tokens_per_s": tokens / seconds,
                  "gemm_ceiling": ceiling, "of_ceiling": tokens / seconds / ceiling}, sink)
            with torch.inference_mode():
                cu = chosen[0].cu_seqlens.to(CUDA)
                pooled[name, workload] = mean_pool_residues(model(chosen[0].input_ids.to(CUDA), cu,
                                                                  chosen[0].max_len), cu)
        del model
        torch.cuda.empty_cache()
    for workload in batches:
        a, b = pooled["compiled", workload], pooled["epilogues+rotary-attention", workload]
        emit({"probe": "model-agreement", "workload": workload, "cosine_min": F.cosine_similarity(a, b).min().item(),
              "max_abs": (a - b).abs().max().item()}, sink)


def profile(folder: Path, sink) -> None:
    from torch.profiler import ProfilerActivity, profile as torch_profile

    from virnucpro.bench.peers import packed, prepack
    from virnucpro.bench.workloads import WORKLOADS
    from virnucpro.models.esm2 import mean_pool_residues
    from virnucpro.tokenize.protein import ProteinTokenizer

    tokenizer = ProteinTokenizer()
    batches = prepack([tokenizer.encode(p) for p in WORKLOADS["chunks500"].proteins(2048)], BUDGET)
    name = "epilogues+rotary-attention"
    model = build_3b(name)
    packed(model, mean_pool_residues, batches, CUDA)
    with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
        seconds = timed(lambda: packed(model, mean_pool_residues, batches, CUDA), CUDA)
    kinds, kernels = {}, []
    for event in prof.key_averages():
        device_s = (getattr(event, "device_time_total", 0) or 0) / 1e6
        if event.device_type != torch.autograd.DeviceType.CUDA or not device_s:
            continue
        kind = kernel_kind(event.key.lower())
        kinds[kind] = kinds.get(kind, 0.0) + device_s
        kernels.append((device_s, event.count, event.key[:100]))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "profile-kernels.txt").write_text("".join(f"{s:9.4f} s {n:6d}x  {k}\n" for s, n, k in sorted(kernels,
                                                                                                   reverse=True)))
    tokens = sum(int(b.input_ids.numel()) for b in batches)
    emit({"probe": "profile", "variant": name, "wall_s": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds,
          "layer_batches": len(batches) * LAYERS, "kernel_seconds": {k: round(v, 4) for k, v in kinds.items()}}, sink)


def kernel_kind(name: str) -> str:
    for prefix, kind in (("_gemm_epilogue", "Triton GEMM + epilogue"), ("_rotary_attention", "rotary attention"),
                         ("_layer_norm", "LayerNorm kernel"), ("flash", "attention (flash)"),
                         ("triton", "Inductor elementwise")):
        if prefix in name:
            return kind
    if any(k in name for k in ("nvjet", "gemm", "cutlass", "xmma", "cublas")):
        return "cuBLAS GEMM"
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiles", action="store_true")
    parser.add_argument("--model", action="store_true")
    parser.add_argument("--profile", type=Path)
    parser.add_argument("--json")
    args = parser.parse_args()
    sink = open(args.json, "a") if args.json else None
    emit({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "attention_tiles": ra.TILES.__dict__},
         sink)
    if args.tiles:
        choose_tiles(sink)
    for workload in ("chunks500", "reads150"):
        before_attention(workload, sink)
    if args.model:
        whole_model(sink)
    if args.profile:
        profile(args.profile, sink)


if __name__ == "__main__":
    main()
