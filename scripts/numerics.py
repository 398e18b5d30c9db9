"""Numerics sweep on the GPU (issue 11): for each candidate precision, agreement of the engine's calls with the
fp32 reference under calibrated classifiers, and the speed of each model; then determinism of reruns and a
kernel-time profile of ESM-2 3B (issue 16).

    python scripts/numerics.py --out DIR [--variants a,b,...] [--sequences 8192] [--profile-variant bf16]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS; must precede CUDA init

import numpy as np  # noqa: E402
import torch  # noqa: E402

from virnucpro.bench import fidelity, peers  # noqa: E402
from virnucpro.bench.models import random_dnabert, random_fairesm  # noqa: E402
from virnucpro.bench.timing import esm_gemm_ceiling, timed  # noqa: E402
from virnucpro.bench.workloads import ESM_SHAPES, WORKLOADS  # noqa: E402
from virnucpro.config import EnvConfig  # noqa: E402
from virnucpro.models.dnabert import mean_pool_all_tokens  # noqa: E402
from virnucpro.models.esm2 import mean_pool_residues  # noqa: E402
from virnucpro.tokenize.dna import DnaTokenizer  # noqa: E402
from virnucpro.tokenize.protein import ProteinTokenizer  # noqa: E402


def log(*parts) -> None:
    print(time.strftime("%H:%M:%S"), *parts, flush=True)


def speed(model, pool, encoded, budget, device) -> float:
    batches = peers.prepack(encoded, budget)
    peers.packed(model, pool, batches, device)  # compile/warm every shape outside the timing
    seconds = timed(lambda: peers.packed(model, pool, batches, device), device)
    return sum(len(e) for e in encoded) / seconds


def measure_variant(variant, ctx, args) -> dict:
    started = time.perf_counter()
    models = fidelity.build_models(variant, ctx["fair"], ctx["folder"], ctx["classifiers"][0], ctx["device"])
    built = time.perf_counter() - started
    first = time.perf_counter()
    features = fidelity.engine_features(models, ctx["source"], ctx["env"])
    first_pass = time.perf_counter() - first
    again = time.perf_counter()
    features2 = fidelity.engine_features(models, ctx["source"], ctx["env"])
    second_pass = time.perf_counter() - again
    row = {"variant": variant.mode, "esm": variant.esm.describe(), "dnabert": variant.dnabert.describe(),
           "build_s": round(built, 2), "first_pass_s": round(first_pass, 2), "second_pass_s": round(second_pass, 2),
           "rerun_identical": bool(torch.equal(features, features2)),
           **fidelity.compare(ctx["reference"], fidelity.features_per_classifier(
               models, ctx["source"], ctx["env"], ctx["classifiers"], first=features), ctx["classifiers"]).as_dict()}
    del features, features2
    scale = 1 if variant.esm.half else 4
    row["esm_tokens_per_s"] = {w: round(speed(models.esm, mean_pool_residues, ctx["proteins"][w][: args.sequences // scale],
                                              32768, ctx["device"])) for w in ("chunks500", "reads150")}
    row["dnabert_tokens_per_s"] = round(speed(models.dnabert, mean_pool_all_tokens,
                                              ctx["dna"][: args.sequences // scale], 65536, ctx["device"]))
    log(json.dumps(row))
    del models
    torch.cuda.empty_cache()
    return row


def deterministic_check(variant, ctx) -> dict:
    """Two engine passes with deterministic algorithms on: identical bytes? and ESM-2 speed in that mode."""
    import torch._inductor.config as inductor_config

    torch.use_deterministic_algorithms(True)
    if hasattr(torch.utils, "deterministic"):
        torch.utils.deterministic.fill_uninitialized_memory = False
    if hasattr(inductor_config, "deterministic"):
        inductor_config.deterministic = True
    torch._dynamo.reset()
    models = fidelity.build_models(variant, ctx["fair"], ctx["folder"], ctx["classifiers"][0], ctx["device"])
    runs = [fidelity.engine_features(models, ctx["source"], ctx["env"]) for _ in range(3)]
    result = {"variant": variant.mode, "identical_runs": [bool(torch.equal(runs[0], r)) for r in runs[1:]],
              "max_abs_diff": [float((runs[0] - r).abs().max()) for r in runs[1:]],
              "esm_tokens_per_s_deterministic": round(speed(models.esm, mean_pool_residues,
                                                            ctx["proteins"]["chunks500"], 32768, ctx["device"]))}
    log("deterministic", json.dumps(result))
    torch.use_deterministic_algorithms(False)
    del models
    torch.cuda.empty_cache()
    return result


def profile(variant, ctx, out: Path) -> dict:
    from torch.profiler import ProfilerActivity, profile as torch_profile

    models = fidelity.build_models(variant, ctx["fair"], ctx["folder"], ctx["classifiers"][0], ctx["device"])
    batches = peers.prepack(ctx["proteins"]["chunks500"][:2048], 32768)
    peers.packed(models.esm, mean_pool_residues, batches, ctx["device"])
    with torch_profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        seconds = timed(lambda: peers.packed(models.esm, mean_pool_residues, batches, ctx["device"]), ctx["device"])
    categories: dict[str, float] = {}
    kernels = []
    for event in prof.key_averages():
        cuda_us = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0)
        if event.device_type != torch.autograd.DeviceType.CUDA or not cuda_us:
            continue
        name = event.key.lower()
        kind = ("gemm" if any(k in name for k in ("gemm", "nvjet", "xmma", "cutlass", "cublas")) else
                "attention" if any(k in name for k in ("flash", "fmha", "attention")) else
                "triton (fused elementwise)" if name.startswith("triton") else
                "copy" if "memcpy" in name or "copy" in name else "other")
        categories[kind] = categories.get(kind, 0.0) + cuda_us / 1e6
        kernels.append((cuda_us / 1e6, event.key[:90], event.count))
    (out / "profile-kernels.txt").write_text("\n".join(f"{s:9.4f} s  {n:6d}x  {k}" for s, k, n in sorted(kernels, reverse=True)[:60]))
    tokens = sum(int(b.input_ids.numel()) for b in batches)
    result = {"variant": variant.mode, "wall_s": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds,
              "kernel_seconds": {k: round(v, 4) for k, v in sorted(categories.items(), key=lambda kv: -kv[1])},
              "gemm_ceiling_tokens_per_s": esm_gemm_ceiling(36, 2560, 32768, variant.esm.gemm, ctx["device"])}
    log("profile", json.dumps(result))
    del models
    torch.cuda.empty_cache()
    return result


def setup(args) -> dict:
    device = torch.device("cuda")
    workdir = fidelity.scratch_dir()
    source = fidelity.fidelity_frames(workdir)
    frames = source.read(0, len(source))
    torch.manual_seed(0)
    fair, _ = random_fairesm(ESM_SHAPES["3B"], device)
    _, folder = random_dnabert(device, torch.float32, args.tokenizer, fuse=False)
    started = time.perf_counter()
    reference = fidelity.reference_features(fair, folder, frames, device)
    log(f"{len(frames)} frames, reference in {time.perf_counter() - started:.1f} s")
    classifiers = [fidelity.calibrated_classifier(reference, seed) for seed in fidelity.CLASSIFIER_SEEDS]
    tokenizer = ProteinTokenizer()
    proteins = {w: [tokenizer.encode(p) for p in WORKLOADS[w].proteins(args.sequences)] for w in ("chunks500", "reads150")}
    dna = DnaTokenizer(folder).encode_batch(WORKLOADS["chunks500"].nucleotides(args.sequences))
    return {"device": device, "source": source, "fair": fair, "folder": folder, "reference": reference,
            "classifiers": classifiers, "proteins": proteins, "dna": dna, "env": EnvConfig.from_environ()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variants", default=",".join(fidelity.CANDIDATES))
    parser.add_argument("--sequences", type=int, default=8192)
    parser.add_argument("--tokenizer", default=os.environ.get("VIRNUCPRO_DNABERT_TOKENIZER"))
    parser.add_argument("--check-variant", default="bf16", help="variant for the determinism check and the profile")
    parser.add_argument("--skip-checks", action="store_true", help="variants only (no profile, no determinism)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    ctx = setup(args)
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "frames": len(ctx["source"]),
              "variants": []}
    save = lambda: (args.out / "numerics.json").write_text(json.dumps(report, indent=1))  # noqa: E731
    for name in [v for v in args.variants.split(",") if v]:
        report["variants"].append(measure_variant(fidelity.CANDIDATES[name], ctx, args))
        save()
    if args.skip_checks:
        return
    check = fidelity.CANDIDATES[args.check_variant]
    report["profile"] = profile(check, ctx, args.out)
    save()
    report["deterministic"] = deterministic_check(check, ctx)
    save()


if __name__ == "__main__":
    main()
