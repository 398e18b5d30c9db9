"""`virnucpro bench`: tokens/s, sequences/s and MFU of this engine and its peers, same inputs, one process."""

from __future__ import annotations

import json
import logging
import sys

import torch

from virnucpro.bench.timing import Measurement, measured_gemm_peak
from virnucpro.bench.workloads import ESM_SHAPES, WORKLOADS

log = logging.getLogger(__name__)

PEERS = ("ours", "hf-sdpa-bf16", "fairesm-fp16", "published")


def register(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="benchmark the engine against its peers on a GPU")
    parser.add_argument("--esm", default="3B,650M", help="ESM-2 shapes to run (650M, 3B, 15B)")
    parser.add_argument("--workloads", default="chunks500,mixed", help=f"any of {', '.join(WORKLOADS)}")
    parser.add_argument("--peers", default=",".join(PEERS), help=f"any of {', '.join(PEERS)}")
    parser.add_argument("--sequences", type=int, default=8192, help="sequences for our engine per case")
    parser.add_argument("--peer-sequences", type=int, default=1024, help="sequences for the faster peers")
    parser.add_argument("--published-sequences", type=int, default=256, help="sequences for the published way")
    parser.add_argument("--token-budget", type=int, default=0, help="packed batch size for ours (0 = auto)")
    parser.add_argument("--dnabert", action="store_true", help="also benchmark DNABERT-S")
    parser.add_argument("--dnabert-tokenizer", default=None, help="folder with the real tokenizer.json")
    parser.add_argument("--pipeline", action="store_true", help="also time the whole predict path")
    parser.add_argument("--pipeline-reads", type=int, default=16384, help="500 bp reads for --pipeline")
    parser.add_argument("--scaling", default="", help="whole predict on these GPU counts, e.g. 1,2,4")
    parser.add_argument("--scaling-reads", type=int, default=32768, help="500 bp reads for --scaling")
    parser.add_argument("--json", default=None, help="write all measurements to this JSON file")
    parser.set_defaults(handler=run_bench)


def run_bench(args, env) -> int:
    if not torch.cuda.is_available():
        print("virnucpro bench needs a CUDA GPU", file=sys.stderr)
        return 2
    from virnucpro.bench import suites

    device = torch.device("cuda")
    peak = measured_gemm_peak(device)
    results: list[Measurement] = []
    peers = [p for p in args.peers.split(",") if p]
    for shape in [s for s in args.esm.split(",") if s]:
        results += suites.esm_suite(ESM_SHAPES[shape], shape, args.workloads.split(","), peers, args, device)
    if args.dnabert:
        results += suites.dnabert_suite(args, device)
    if args.pipeline:
        results += suites.pipeline_suite(args, env, device)
    if args.scaling:
        from virnucpro.bench.scaling import time_scaling

        results += time_scaling(args, env, device)
    print_table(results, peak)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"device": torch.cuda.get_device_name(device), "gemm_peak_flops": peak,
                       "results": [dict(vars(m), tokens_per_s=m.tokens_per_s, sequences_per_s=m.sequences_per_s,
                                        mfu=m.mfu(peak)) for m in results]}, handle, indent=1)
    return 0


def print_table(results: list[Measurement], peak: float) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"virnucpro bench on {torch.cuda.get_device_name()} (bf16 GEMM peak {peak / 1e12:.0f} TFLOP/s)")
    for column in ("model", "workload", "way", "tokens/s", "seq/s", "MFU", "vs published", "vs ours", "GPU busy"):
        table.add_column(column, justify="right" if column not in ("model", "workload", "way") else "left")
    for m in results:
        same = [r for r in results if r.model == m.model and r.workload == m.workload]
        published = next((r for r in same if r.name == "published"), None)
        ours = next((r for r in same if r.name == "ours"), None)
        ratio = lambda ref: f"{m.tokens_per_s / ref.tokens_per_s:.2f}x" if ref else "-"  # noqa: E731
        busy = f"{m.gpu_busy:.0%}" if m.gpu_busy is not None else "-"
        table.add_row(m.model, m.workload, m.name, f"{m.tokens_per_s:,.0f}", f"{m.sequences_per_s:,.0f}",
                      f"{m.mfu(peak):.0%}" if m.flops_per_token else "-", ratio(published), ratio(ours), busy)
    Console(stderr=False, width=160).print(table)
