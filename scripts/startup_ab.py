#!/usr/bin/env python3
"""Array-task start-up of several versions of the code side by side: one planned run, one `virnucpro shard`
process per shard, the first (cold compile cache) with this tree, each later one (warm cache) with the package
folder named for it, so every version is measured on the same machine, files and cache in one call.

    python scripts/startup_ab.py --variants .gpu/old,.,.gpu/nothread --tokenizer .gpu/dnabert-s --json out.json

A variant is a folder holding a `virnucpro/` package ("." = this tree); its shard runs with that folder as the
working directory, so `python -m virnucpro` imports that package. Prints one JSON line per task.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=".", help="comma-separated package folders for the warm tasks")
    parser.add_argument("--reads", type=int, default=8000, help="150 bp reads per shard")
    parser.add_argument("--tokenizer", default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--device", default="cuda", help="cpu: a dry run with the tiny demo models")
    parser.add_argument("--sample", type=Path, default=None,
                        help="folder: also run one more warm task of this tree under scripts/stack_sampler.py and "
                             "write its samples there (not timed with the others)")
    args = parser.parse_args()
    from virnucpro.bench.pipeline import PART_FRAMES, timeline

    variants = ["."] + args.variants.split(",")  # the first task compiles (cold cache) with this tree
    tasks = [(variant, False) for variant in variants] + ([(".", True)] if args.sample else [])
    rundir = planned_run(args, shards=len(tasks))
    child_env = {**os.environ, "VIRNUCPRO_PART_FRAMES": str(PART_FRAMES), "VIRNUCPRO_NO_PROGRESS": "1"}
    rows = []
    for index, (variant, sampled) in enumerate(tasks):
        python = [sys.executable]
        if sampled:
            args.sample.mkdir(parents=True, exist_ok=True)
            python += [str(Path(__file__).with_name("stack_sampler.py")), "--out",
                       str(args.sample / f"task{index}.jsonl"), "--"]
        started = time.time()
        subprocess.run([*python, "-m", "virnucpro", "shard", str(rundir), "--index", str(index),
                        "--device", args.device], check=True, cwd=Path(variant).resolve(), env=child_env)
        row = {"task": index, "variant": variant + (" (sampled)" if sampled else ""),
               "cache": "cold" if index == 0 else "warm",
               "process_s": round(time.time() - started, 2), **timeline(rundir, started, shard=index)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


def planned_run(args, shards: int) -> Path:
    """A run directory planned into `shards` shards of `args.reads` stop-free 150 bp reads each, with real-format
    random-weight model files (tiny demo models on the CPU)."""
    import torch

    from virnucpro.bench.models import write_random_checkpoints
    from virnucpro.bench.workloads import stop_free_reads
    from virnucpro.config import EngineConfig, EnvConfig, PredictConfig
    from virnucpro.run.plan import plan_run

    work = Path(tempfile.mkdtemp(prefix="virnucpro-startup-"))
    if args.device == "cpu":
        from virnucpro.testing.demo import make_demo_models

        files = make_demo_models(work / "models")
    else:
        files = write_random_checkpoints(work / "models", torch.device(args.device), args.tokenizer)
    reads = work / "reads.fasta"
    stop_free_reads(reads, args.reads * shards, length=150)
    cfg = PredictConfig(input=reads, outdir=work / "run", chunk_length=300, models=files,
                        engine=EngineConfig(device=args.device), gpus=1)
    plan_run(cfg, EnvConfig.from_environ(dict(os.environ)), gpus=1, min_shards=shards)
    return cfg.outdir


if __name__ == "__main__":
    sys.exit(main())
