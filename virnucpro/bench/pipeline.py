"""Whole `predict` on one GPU (prep, workers, both models, classifier, checkpoints, aggregation, writing),
with random-weight real-size models held in memory, compared with the ESM-2-only rate on the same proteins."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from virnucpro.bench.models import in_memory_scorer_factory, stand_in_model_files
from virnucpro.bench.timing import Measurement, UtilisationSampler, timed
from virnucpro.bench.workloads import ESM_SHAPES, esm_flops_per_token, stop_free_reads
from virnucpro.config import EngineConfig, PredictConfig
from virnucpro.engine.loading import ESM_TOKEN_BUDGET
from virnucpro.io.prep_files import FrameSource
from virnucpro.run.pipeline import predict_run

def time_pipeline(args, env, device) -> list[Measurement]:
    work = Path(tempfile.mkdtemp(prefix="virnucpro-bench-"))
    reads = work / "reads.fasta"
    stop_free_reads(reads, args.pipeline_reads)
    # models built here, outside the timed region
    factory = in_memory_scorer_factory(env, device, args.dnabert_tokenizer, args.token_budget or ESM_TOKEN_BUDGET)
    cfg = PredictConfig(input=reads, outdir=work / "run", chunk_length=500, models=stand_in_model_files(work / "models"),
                        engine=EngineConfig(device=device.type), gpus=1)
    with UtilisationSampler(device) as sampler:
        seconds = timed(lambda: predict_run(cfg, env, scorer_factory=factory), device)
    if args.json:  # keep the run's own timeline (per-stage, per-part) beside the results
        shutil.copyfile(work / "run" / "telemetry.jsonl", Path(args.json).with_suffix(".telemetry.jsonl"))
    lengths = FrameSource(work / "run" / "prep").aa_lengths
    tokens = int((lengths.astype(np.int64) + 2).sum())
    layers, dim, _ = ESM_SHAPES["3B"]
    m = Measurement("whole predict", "3B", "chunks500", len(lengths), tokens, seconds,
                    esm_flops_per_token(layers, dim, 168), sampler.busy)
    print(f"  3B    chunks500  whole predict  {m.tokens_per_s:12,.0f} ESM tokens/s, GPU busy {m.gpu_busy}", flush=True)
    return [m]
