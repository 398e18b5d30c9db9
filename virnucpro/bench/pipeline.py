"""Whole `predict` on one GPU, as users run it: real-format model files (random weights of the real shapes) read
from disk, prep, workers, both models, classifier, checkpoints, aggregation — compared with ESM-2 alone on the
same proteins, and split into load, warm-up, steady state and aggregation (from the run's own telemetry).

Then the start-up of array tasks: the run is planned in two shards and each is scored by its own
`virnucpro shard` process, the second finding the first one's compiled kernels in the run's compile cache.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from virnucpro.bench import peers
from virnucpro.bench.models import DEFAULT_NUMERICS, write_random_checkpoints
from virnucpro.bench.timing import Measurement, UtilisationSampler, timed
from virnucpro.bench.workloads import ESM_SHAPES, esm_flops_per_token, stop_free_reads
from virnucpro.config import EngineConfig, PredictConfig
from virnucpro.engine.loading import ESM_TOKEN_BUDGET
from virnucpro.io.prep_files import FrameSource
from virnucpro.run.manifest import Manifest
from virnucpro.run.options import RunOptions
from virnucpro.run.pipeline import predict_run
from virnucpro.run.plan import plan_run
from virnucpro.run.rundir import RunDir
from virnucpro.run.telemetry import read_events
from virnucpro.tokenize.protein import esm_tokens

READ_LENGTHS = {"reads150": (150, 300), "reads250": (250, 300), "chunks500": (500, 500)}  # read bp, chunk length
PART_FRAMES = 2048  # small checkpoint parts: a fine timeline for the split (a part costs ~10 ms to write)


def time_pipeline(args, env, device) -> list[Measurement]:
    work = Path(tempfile.mkdtemp(prefix="virnucpro-bench-"))
    files = write_random_checkpoints(work / "models", device, args.dnabert_tokenizer)  # outside every timing
    read_length, chunk_length = READ_LENGTHS[args.pipeline_workload]
    reads = work / "reads.fasta"
    stop_free_reads(reads, args.pipeline_reads, length=read_length, duplicates=args.dedup_fraction)
    cfg = PredictConfig(input=reads, outdir=work / "run", chunk_length=chunk_length, models=files,
                        engine=EngineConfig(device=device.type, token_budget=args.token_budget), gpus=1,
                        dedup=not args.no_dedup)
    with UtilisationSampler(device) as sampler:
        seconds = timed(lambda: predict_run(cfg, env, options=RunOptions(part_frames=PART_FRAMES)), device)
    whole = _whole_measurement(cfg.outdir, args.pipeline_workload, seconds, sampler.busy)
    esm_only = _esm_only(files, cfg.outdir, args, device)
    whole.details.update(vs_esm_only_whole=whole.tokens_per_s / esm_only.tokens_per_s,
                         vs_esm_only_steady=whole.details["steady_tokens_per_s"] / esm_only.tokens_per_s)
    _print(whole, esm_only)
    return [esm_only, whole, *_array_task_startup(cfg, env, work, args, device)]


def _whole_measurement(rundir: Path, workload: str, seconds: float, busy) -> Measurement:
    lengths = FrameSource(RunDir(rundir).prep).aa_lengths
    tokens = int(esm_tokens(lengths).sum())
    layers, dim, _ = ESM_SHAPES["3B"]
    mean_len = tokens / max(len(lengths), 1)
    m = Measurement("whole predict", "3B", workload, len(lengths), tokens, seconds,
                    esm_flops_per_token(layers, dim, mean_len), busy)
    m.details.update(timeline(rundir))
    manifest = Manifest.load(RunDir(rundir).manifest)  # tokens above: of every frame; computed: without repeats
    m.details.update(dedup=manifest.dedup, frames_scored=manifest.scored_frames, tokens_computed=manifest.tokens)
    return m


def timeline(rundir: Path, started: float | None = None, shard: int | None = None) -> dict:
    """Stage seconds, first-part latency and the steady-state rate (parts after the first) from telemetry; of
    one shard's process when `shard` is given."""
    events = [e for e in read_events(RunDir(rundir).telemetry)
              if shard is None or e.get("shard") == shard or (e["event"] == "stage" and e.get("time", 0) >= (started or 0))]
    stages = {e["stage"]: e["seconds"] for e in events if e["event"] == "stage"}
    parts = [e for e in events if e["event"] == "part"]
    starts = [e["time"] for e in events if e["event"] == "shard_start"]
    steady = parts[1:] or parts
    rate = sum(p["tokens"] for p in steady) / max(sum(p["seconds"] for p in steady), 1e-9)
    result = {"stages_s": stages, "parts": len(parts), "steady_tokens_per_s": rate}
    if parts and starts:
        result["first_part_after_shard_start_s"] = parts[0]["time"] - min(starts)
    if parts and started is not None:
        # seconds from process start until it ran at the steady rate: the first part's end, less the time the
        # first part would have taken at that rate
        result["startup_to_steady_s"] = parts[0]["time"] - started - parts[0]["tokens"] / rate
    return result


def _esm_only(files, rundir: Path, args, device) -> Measurement:
    """ESM-2 alone, in the default numerics, on exactly the run's proteins."""
    from virnucpro.models.esm2 import load_esm2, mean_pool_residues
    from virnucpro.tokenize.protein import ProteinTokenizer

    source = FrameSource(RunDir(rundir).prep)
    tokenizer = ProteinTokenizer()
    encoded = [tokenizer.encode(frame.protein) for frame in source.read(0, len(source))]
    model = load_esm2(files.esm, device, DEFAULT_NUMERICS.esm)
    model.fuse_elementwise(True)
    batches = peers.prepack(encoded, args.token_budget or ESM_TOKEN_BUDGET)
    peers.packed(model, mean_pool_residues, batches, device)  # compile every shape outside the timing
    with UtilisationSampler(device) as sampler:
        seconds = timed(lambda: peers.packed(model, mean_pool_residues, batches, device), device)
    tokens = sum(len(e) for e in encoded)
    layers, dim, _ = ESM_SHAPES["3B"]
    del model
    torch.cuda.empty_cache()
    return Measurement("ESM-2 only (same proteins)", "3B", args.pipeline_workload, len(encoded), tokens, seconds,
                       esm_flops_per_token(layers, dim, tokens / max(len(encoded), 1)), sampler.busy)


def _array_task_startup(cfg: PredictConfig, env, work: Path, args, device) -> list[Measurement]:
    """Two `virnucpro shard` processes of one run: the first compiles, the second reuses the run's cache."""
    run = replace(cfg, outdir=work / "array-run")
    plan_run(run, env, gpus=1, min_shards=2)
    # the tasks' own settings, inherited by the child processes (as a SLURM job's environment would set them)
    os.environ["VIRNUCPRO_PART_FRAMES"] = str(PART_FRAMES)
    os.environ["VIRNUCPRO_NO_PROGRESS"] = "1"
    results = []
    for index in (0, 1):
        started = time.time()
        subprocess.run([sys.executable, "-m", "virnucpro", "shard", str(run.outdir), "--index", str(index),
                        "--device", device.type], check=True)
        details = timeline(run.outdir, started, shard=index)
        parts = [e for e in read_events(RunDir(run.outdir).telemetry) if e["event"] == "part" and e["shard"] == index]
        tokens = sum(p["tokens"] for p in parts)
        m = Measurement(f"array task {index + 1} ({'cold' if index == 0 else 'warm'} compile cache)", "3B",
                        args.pipeline_workload, sum(p["frames"] for p in parts), tokens, time.time() - started)
        m.details.update(details)
        print(f"  array task {index + 1}: {m.seconds:.1f} s, steady state after "
              f"{details.get('startup_to_steady_s', float('nan')):.1f} s", flush=True)
        results.append(m)
    return results


def _print(whole: Measurement, esm_only: Measurement) -> None:
    d = whole.details
    print(f"  3B    {whole.workload:10s} whole predict {whole.tokens_per_s:12,.0f} ESM tokens/s "
          f"({d['vs_esm_only_whole']:.2f}x ESM-only {esm_only.tokens_per_s:,.0f}); steady state "
          f"{d['steady_tokens_per_s']:,.0f} ({d['vs_esm_only_steady']:.2f}x); stages {d['stages_s']}; ESM tokens "
          f"computed {d['tokens_computed']:,} of {whole.tokens:,} (dedup {d['dedup']})", flush=True)
