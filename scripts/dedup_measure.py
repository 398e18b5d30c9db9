"""De-duplication on a read set with exact duplicate reads: whole `predict` with and without it, same input, same
model files: tiny random-weight models on the CPU (the mechanism), or on a GPU the real shapes (ESM-2 3B,
DNABERT-S, the published classifier) with random weights written in the real formats (bench.models).

    python scripts/dedup_measure.py --reads 20000 --length 150 --duplicates 0.3 --work /tmp/dedup-measure
    python scripts/dedup_measure.py --device cuda --tokenizer .gpu/dnabert-s ...   # the GPU figures

Each run is a process of its own (this script again, with --one), so neither inherits the other's CUDA context,
loaded weights or compiled kernels. By default each run directory compiles its kernels cold; with --warm a small
run first fills one compile cache (and the model store's checksum cache) that both measured runs then use, as the
array tasks of one run do, so the two differ only in what they compute.

Prints one JSON line per run (frames, distinct frames, ESM tokens computed and of all frames, wall seconds and the
run's stage times) and whether the calls (Prediction column, consensus, summary calls) are identical.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path


def run(reads: Path, outdir: Path, models, dedup: bool, chunk_length: int, device: str,
        compile_cache: Path | None = None) -> dict:
    from virnucpro.config import EngineConfig, EnvConfig, PredictConfig
    from virnucpro.run.manifest import Manifest
    from virnucpro.run.pipeline import predict_run
    from virnucpro.run.rundir import RunDir
    from virnucpro.run.telemetry import read_events

    cfg = PredictConfig(input=reads, outdir=outdir, chunk_length=chunk_length, models=models,
                        engine=EngineConfig(device=device, compile_cache=compile_cache and str(compile_cache)),
                        dedup=dedup)
    env = EnvConfig.from_environ({"VIRNUCPRO_NO_PROGRESS": "1"})
    started = time.perf_counter()
    predict_run(cfg, env)
    seconds = time.perf_counter() - started
    manifest = Manifest.load(RunDir(outdir).manifest)
    stages = {e["stage"]: round(e["seconds"], 2) for e in read_events(RunDir(outdir).telemetry) if e["event"] == "stage"}
    scoring = sum(e["seconds"] for e in read_events(RunDir(outdir).telemetry) if e["event"] == "shard_done")
    return {"dedup": dedup, "frames": manifest.frames, "scored_frames": manifest.scored_frames,
            "tokens_computed": manifest.tokens, "tokens_all_frames": manifest.frame_tokens,
            "wall_s": round(seconds, 2), "scoring_s": round(scoring, 2), "stages_s": stages}


def calls(outdir: Path) -> tuple:
    from virnucpro.outputs.results import read_prediction_results

    ids, _scores, labels = read_prediction_results(outdir / "prediction_results.txt")
    consensus = (outdir / "prediction_results_highestscore.csv").read_text()
    summary = [line.split("\t")[-1] for line in (outdir / "sequence_summary.tsv").read_text().splitlines()]
    return ids, labels, consensus, summary


def model_files(args):
    if args.device == "cpu":
        from virnucpro.testing.demo import make_demo_models

        return make_demo_models(args.work / "models")
    import torch

    from virnucpro.bench.models import write_random_checkpoints

    return write_random_checkpoints(args.work / "models", torch.device(args.device), args.tokenizer)


def one_run(args) -> int:
    from virnucpro.config import ModelPaths

    models = ModelPaths(**json.loads((args.work / "models.json").read_text()))
    chunk_length = 300 if args.length <= 300 else 500
    reads = args.work / ("reads-warmup.fasta" if args.one == "warmup" else "reads.fasta")
    result = run(reads, args.work / f"run-{args.one}", models, args.one != "full", chunk_length, args.device,
                 args.work / "compile-cache" if args.warm else None)
    print(json.dumps(result), flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reads", type=int, default=20000)
    parser.add_argument("--length", type=int, default=150)
    parser.add_argument("--duplicates", type=float, default=0.3)
    parser.add_argument("--work", type=Path, default=Path("dedup-measure"))
    parser.add_argument("--device", default="cpu", help="cpu: tiny models; cuda: the real shapes, random weights")
    parser.add_argument("--tokenizer", default=None, help="with --device cuda: folder of the real DNABERT-S tokenizer")
    parser.add_argument("--warm", action="store_true", help="a small run first warms one shared compile cache")
    parser.add_argument("--one", choices=("dedup", "full", "warmup"), help=argparse.SUPPRESS)  # a child: one run, then exit
    args = parser.parse_args()
    if args.one:
        return one_run(args)
    from virnucpro.bench.workloads import stop_free_reads

    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    reads = args.work / "reads.fasta"
    stop_free_reads(reads, args.reads, length=args.length, seed=5, duplicates=args.duplicates)
    (args.work / "models.json").write_text(json.dumps(vars(model_files(args))))
    results = {}
    if args.warm:
        stop_free_reads(args.work / "reads-warmup.fasta", max(args.reads // 10, 100), length=args.length, seed=6)
    for one in (["warmup"] if args.warm else []) + ["dedup", "full"]:
        child = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--one", one],
                               check=True, stdout=subprocess.PIPE, text=True)
        result = json.loads(child.stdout.strip().splitlines()[-1])
        print(json.dumps({"run": one, **result}), flush=True)
        if one != "warmup":
            results[one == "dedup"] = result
    same = calls(args.work / "run-full") == calls(args.work / "run-dedup")
    saved = 1 - results[True]["tokens_computed"] / results[False]["tokens_computed"]
    print(json.dumps({"calls_identical": same, "tokens_saved": round(saved, 4),
                      "scoring_time_saved": round(1 - results[True]["scoring_s"] / results[False]["scoring_s"], 4),
                      "wall_time_saved": round(1 - results[True]["wall_s"] / results[False]["wall_s"], 4)}))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
