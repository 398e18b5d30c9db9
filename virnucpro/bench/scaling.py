"""Scaling of the whole predict path over the GPUs of one node: the same input on 1, 2, ... GPUs, one spawned
process per GPU, each building its own random-weight real-size models.

The rate is ESM tokens over the scoring window (first shard start to last shard done, from the run's telemetry),
so model construction in the children is left out but start-up skew between GPUs and tail imbalance are in.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from virnucpro.bench.models import RandomModelsFactory, stand_in_model_files
from virnucpro.bench.timing import Measurement
from virnucpro.bench.workloads import ESM_SHAPES, esm_flops_per_token, stop_free_reads
from virnucpro.config import EngineConfig, PredictConfig
from virnucpro.engine.loading import ESM_TOKEN_BUDGET
from virnucpro.run.manifest import Manifest
from virnucpro.run.pipeline import predict_run
from virnucpro.run.rundir import RunDir
from virnucpro.run.telemetry import read_events


def scoring_window(rundir: Path) -> float:
    events = read_events(RunDir(rundir).telemetry)
    starts = [e["time"] for e in events if e["event"] == "shard_start"]
    dones = [e["time"] for e in events if e["event"] == "shard_done"]
    return max(dones) - min(starts)


def time_scaling(args, env, device) -> list[Measurement]:
    work = Path(tempfile.mkdtemp(prefix="virnucpro-scaling-"))
    reads = work / "reads.fasta"
    stop_free_reads(reads, args.scaling_reads)
    factory = RandomModelsFactory(args.dnabert_tokenizer, args.token_budget or ESM_TOKEN_BUDGET, env)
    layers, dim, _ = ESM_SHAPES["3B"]
    results = []
    for gpus in [int(count) for count in args.scaling.split(",") if count]:
        if gpus > torch.cuda.device_count():
            print(f"  scaling: {gpus} GPUs asked, {torch.cuda.device_count()} visible: skipped", flush=True)
            continue
        cfg = PredictConfig(input=reads, outdir=work / f"run-{gpus}gpu", chunk_length=500,
                            models=stand_in_model_files(work / "models"), engine=EngineConfig(device="cuda"), gpus=gpus)
        predict_run(cfg, env, scorer_factory=factory)
        manifest = Manifest.load(RunDir(cfg.outdir).manifest)
        m = Measurement(f"predict on {gpus} GPU", "3B", "scaling", manifest.frames, manifest.tokens,
                        scoring_window(cfg.outdir), esm_flops_per_token(layers, dim, 168), None)
        speedup = m.tokens_per_s / results[0].tokens_per_s if results else 1.0
        print(f"  3B    {gpus} GPU(s), {len(manifest.shards)} shards  {m.tokens_per_s:12,.0f} ESM tokens/s"
              f"  {speedup:.2f}x over {results[0].name if results else 'itself'}", flush=True)
        results.append(m)
    return results
