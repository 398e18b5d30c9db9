"""ESM-2 3B on a GPU: cuBLAS + Inductor against the Triton epilogue kernels (models.fused_kernels), issue 16.

  python scripts/epilogue_probe.py [--tokens 32768] [--tiles] [--model] [--json FILE]

Prints JSON lines: with --tiles, each GEMM after attention under candidate tile shapes against cuBLAS F.linear
(the fastest of each then used below); the region after attention (out_proj, residual, LN, fc1, GELU, fc2,
residual) both ways with its error against an fp32 reference; the LayerNorm alone both ways; with --model,
whole-model tokens/s (3B, random weights, fp16) on chunks500 and reads150 both ways beside the shape-GEMM ceiling.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from virnucpro.bench.timing import esm_gemm_ceiling, timed  # noqa: E402
from virnucpro.models import fused_kernels as fk  # noqa: E402
from virnucpro.models.esm2 import (ESM2, TransformerLayer, attention_output_and_ffn,  # noqa: E402
                                   attention_output_and_ffn_in_epilogues)
from virnucpro.models.precision import FP16  # noqa: E402

DIM, HEADS, LAYERS = 2560, 40, 36


def seconds_per_call(fn, repeats: int = 20, warm_up: int = 3) -> float:
    for _ in range(warm_up):
        fn()
    return timed(lambda: [fn() for _ in range(repeats)], torch.device("cuda")) / repeats


def emit(record: dict, sink) -> None:
    line = json.dumps(record)
    print(line, flush=True)
    if sink:
        sink.write(line + "\n")
        sink.flush()


def region_after_attention(tokens: int, sink) -> None:
    torch.manual_seed(0)
    layer32 = TransformerLayer(DIM, HEADS).cuda()
    for norm in (layer32.final_layer_norm, layer32.self_attn_layer_norm):
        norm.weight.data.normal_(1.0, 0.2)
        norm.bias.data.normal_(0.0, 0.2)
    layer = copy.deepcopy(layer32)
    for linear in (layer.self_attn.out_proj, layer.fc1, layer.fc2):
        linear.half()
    x = torch.randn(tokens, DIM, device="cuda") * 3
    context = torch.randn(tokens, HEADS, DIM // HEADS, device="cuda", dtype=torch.float16)
    with torch.inference_mode():
        reference = attention_output_and_ffn(x.clone(), context.float(), layer32)
        compiled = torch.compile(attention_output_and_ffn, dynamic=True)
        variants = {"compiled": lambda: compiled(x.clone(), context, layer),
                    "epilogues": lambda: attention_output_and_ffn_in_epilogues(x.clone(), context, layer)}
        copy_only = seconds_per_call(lambda: x.clone())
        for name, fn in variants.items():
            error = (fn() - reference).abs()
            seconds = seconds_per_call(fn) - copy_only
            emit({"probe": "after-attention", "variant": name, "tokens": tokens, "seconds": seconds,
                  "tokens_per_s_36_layers": tokens / (seconds * LAYERS), "max_abs_error": error.max().item(),
                  "mean_abs_error": error.mean().item()}, sink)
        norm = layer.final_layer_norm
        compiled_ln = torch.compile(lambda v: F.layer_norm(v, (DIM,), norm.weight, norm.bias).half(), dynamic=True)
        for name, fn in {"compiled": lambda: compiled_ln(x), "triton": lambda: fk.layer_norm(x, norm, torch.float16)}.items():
            error = (fn().float() - F.layer_norm(x, (DIM,), norm.weight, norm.bias)).abs().max().item()
            seconds = seconds_per_call(fn)
            emit({"probe": "layer-norm", "variant": name, "seconds": seconds,
                  "bytes_per_s": tokens * DIM * 6 / seconds, "max_abs_error": error}, sink)


T = fk.TileShape
CANDIDATES = {
    "fc1": [T(128, 256, 64, stages=3, warp_specialize=True), T(128, 256, 64, stages=3, warp_specialize=True, tma_out=True),
            T(128, 256, 64, stages=3, warp_specialize=True, subtile=True), T(128, 256, 64, stages=4, warp_specialize=True),
            T(128, 256, 64, stages=4, warp_specialize=True, subtile=True, tma_out=True),
            T(128, 256, 64, stages=4, tma_out=True, subtile=True)],
    "fc2": [T(128, 128, 64, stages=4), T(128, 256, 64, stages=3, subtile=True),
            T(128, 256, 64, stages=3, subtile=True, tma_out=True), T(128, 256, 64, stages=3, warp_specialize=True,
                                                                     subtile=True),
            T(128, 128, 64, stages=4, warp_specialize=True), T(128, 128, 64, stages=3, tma_out=True),
            T(128, 256, 64, stages=3, warp_specialize=True, subtile=True, tma_out=True)],
}
CANDIDATES["out_proj"] = CANDIDATES["fc2"]
ROLE_SHAPES = {"fc1": (DIM, 4 * DIM, fk.EPILOGUE_GELU), "fc2": (4 * DIM, DIM, fk.EPILOGUE_RESIDUAL),
               "out_proj": (DIM, DIM, fk.EPILOGUE_RESIDUAL)}


def time_role(role: str, tiles, tokens: int) -> float:
    k, n, epilogue = ROLE_SHAPES[role]
    a = torch.randn(tokens, k, device="cuda", dtype=torch.float16)
    w = torch.randn(n, k, device="cuda", dtype=torch.float16) / k ** 0.5
    b = torch.randn(n, device="cuda", dtype=torch.float16)
    if tiles == "cublas":
        return seconds_per_call(lambda: F.linear(a, w, b))
    out = torch.zeros(tokens, n, device="cuda", dtype=torch.float32 if epilogue == fk.EPILOGUE_RESIDUAL
                      else torch.float16)
    return seconds_per_call(lambda: fk.gemm_epilogue(a, w, b, out, epilogue, tiles))


def choose_tiles(tokens: int, sink) -> None:
    """Each role's candidates timed at the model's shapes; the fastest goes into fk.TILES."""
    for role, candidates in CANDIDATES.items():
        k, n, _ = ROLE_SHAPES[role]
        flops = 2 * tokens * k * n
        cublas = time_role(role, "cublas", tokens)
        emit({"probe": "gemm", "role": role, "variant": "cublas F.linear", "seconds": cublas,
              "tflops": flops / cublas / 1e12}, sink)
        best = (float("inf"), None)
        for tiles in candidates:
            try:
                seconds = time_role(role, tiles, tokens)
            except Exception as error:  # e.g. a tile that does not fit shared memory: say so and go on
                emit({"probe": "gemm", "role": role, "tiles": tiles.__dict__, "error": str(error)[:200]}, sink)
                continue
            emit({"probe": "gemm", "role": role, "tiles": tiles.__dict__, "seconds": seconds,
                  "tflops": flops / seconds / 1e12, "of_cublas": cublas / seconds}, sink)
            best = min(best, (seconds, tiles), key=lambda pair: pair[0])
        if best[1] is not None:
            fk.TILES[role] = best[1]
    emit({"probe": "chosen", "tiles": {role: tiles.__dict__ for role, tiles in fk.TILES.items()}}, sink)


def pooled(model, batches, device) -> torch.Tensor:
    from virnucpro.models.esm2 import mean_pool_residues

    results = []
    with torch.inference_mode():
        for batch in batches:
            cu = batch.cu_seqlens.to(device)
            results.append(mean_pool_residues(model(batch.input_ids.to(device), cu, batch.max_len), cu))
    return torch.cat(results)


def whole_model(sink) -> None:
    from virnucpro.bench.peers import packed, prepack
    from virnucpro.bench.workloads import WORKLOADS
    from virnucpro.engine.loading import ESM_TOKEN_BUDGET
    from virnucpro.models.esm2 import mean_pool_residues
    from virnucpro.tokenize.protein import ProteinTokenizer

    device = torch.device("cuda")
    torch.manual_seed(0)
    with torch.device(device):
        model = ESM2(LAYERS, DIM, HEADS)
    model = model.set_precision(FP16).eval()
    model.set_attention(device)
    tokenizer = ProteinTokenizer()
    ceiling = esm_gemm_ceiling(LAYERS, DIM, ESM_TOKEN_BUDGET, torch.float16, device)
    for workload in ("chunks500", "reads150"):
        proteins = WORKLOADS[workload].proteins(2048)
        batches = prepack([tokenizer.encode(p) for p in proteins], ESM_TOKEN_BUDGET)
        tokens = sum(int(b.input_ids.numel()) for b in batches)
        outputs = {}
        for variant in ("compiled", "epilogues"):
            model.fuse_elementwise(True, epilogues=variant == "epilogues")
            outputs[variant] = pooled(model, batches[:2], device)
            seconds = seconds_per_call(lambda: packed(model, mean_pool_residues, batches, device), 2, warm_up=1)
            emit({"probe": "model", "workload": workload, "variant": variant, "elementwise": model.elementwise,
                  "tokens": tokens, "tokens_per_s": tokens / seconds, "gemm_ceiling": ceiling,
                  "of_ceiling": tokens / seconds / ceiling}, sink)
        a, b = outputs["compiled"], outputs["epilogues"]
        emit({"probe": "model-agreement", "workload": workload, "cosine_min": F.cosine_similarity(a, b).min().item(),
              "max_abs": (a - b).abs().max().item()}, sink)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=32768)
    parser.add_argument("--tiles", action="store_true")
    parser.add_argument("--model", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args()
    sink = open(args.json, "a") if args.json else None
    emit({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "tiles": {k: v.__dict__ for k, v in
                                                                                        fk.TILES.items()}}, sink)
    if args.tiles:
        choose_tiles(args.tokens, sink)
    region_after_attention(args.tokens, sink)
    if args.model:
        whole_model(sink)


if __name__ == "__main__":
    main()
