"""`virnucpro bench`: tokens/s, sequences/s and MFU of this engine and its peers, same inputs, one process."""

from __future__ import annotations

import logging
import sys

from virnucpro.bench.workloads import ESM_SHAPES, WORKLOADS

PEERS = ("ours", "hf-sdpa-bf16", "fairesm-fp16", "published")

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="benchmark the engine against its peers on a GPU")
    parser.add_argument("--esm", default="3B,650M", help="ESM-2 shapes to run (650M, 3B, 15B)")
    parser.add_argument("--workloads", default="chunks500,reads150", help=f"any of {', '.join(WORKLOADS)}")
    parser.add_argument("--peers", default=",".join(PEERS), help=f"any of {', '.join(PEERS)}")
    parser.add_argument("--sequences", type=int, default=8192, help="sequences for our engine per case")
    parser.add_argument("--peer-sequences", type=int, default=1024, help="sequences for the faster peers")
    parser.add_argument("--published-sequences", type=int, default=256, help="sequences for the published way")
    parser.add_argument("--token-budget", type=int, default=0, help="packed batch size for ours (0 = auto)")
    parser.add_argument("--dnabert", action="store_true", help="also benchmark DNABERT-S")
    parser.add_argument("--dnabert-tokenizer", default=None, help="folder with the real tokenizer.json")
    parser.add_argument("--pipeline", action="store_true", help="also time the whole predict path")
    parser.add_argument("--pipeline-reads", type=int, default=32768, help="reads for --pipeline")
    parser.add_argument("--pipeline-workload", choices=("reads150", "reads250", "chunks500"), default="reads150",
                        help="read length of --pipeline (150/250 bp reads: 300 bp chunks; chunks500: 500 bp reads)")
    parser.add_argument("--dedup-fraction", type=float, default=0.0,
                        help="--pipeline: this fraction of the reads are exact copies of earlier ones")
    parser.add_argument("--no-dedup", action="store_true", help="--pipeline: score every frame, repeats too")
    parser.add_argument("--scaling", default="", help="whole predict on these GPU counts, e.g. 1,2,4")
    parser.add_argument("--scaling-reads", type=int, default=32768, help="500 bp reads for --scaling")
    parser.add_argument("--json", default=None, help="write all measurements to this JSON file")
    parser.set_defaults(handler=handle)


def handle(args, env) -> int:
    import torch  # here, not at the top: the other commands' start-up does not need it

    if not torch.cuda.is_available():
        print("virnucpro bench needs a CUDA GPU", file=sys.stderr)
        return 2
    from virnucpro.bench import suites
    from virnucpro.bench.report import print_table, write_json
    from virnucpro.bench.timing import measured_gemm_peak
    from virnucpro.engine.determinism import make_deterministic

    device = torch.device("cuda")
    make_deterministic(device)  # as `predict` runs, and before cuBLAS starts (its workspace setting)
    peak = measured_gemm_peak(device)
    results = []
    peers = [p for p in args.peers.split(",") if p]
    for shape in [s for s in args.esm.split(",") if s]:
        results += suites.esm_suite(ESM_SHAPES[shape], shape, args.workloads.split(","), peers, args, device)
    if args.dnabert:
        results += suites.dnabert_suite(args, device)
    if args.pipeline:
        from virnucpro.bench.pipeline import time_pipeline

        results += time_pipeline(args, env, device)
    if args.scaling:
        from virnucpro.bench.scaling import time_scaling

        results += time_scaling(args, env, device)
    print_table(results, peak)
    if args.json:
        write_json(args.json, results, peak, device)
    return 0
