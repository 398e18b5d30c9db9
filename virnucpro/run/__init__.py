"""Run directories that survive anything: plan, shard, checkpoint, resume, aggregate.

API (what `predict`, SLURM and `status` call):

    plan_run(cfg: PredictConfig, env: EnvConfig, *, gpus=None, min_shards=0, options=None, prepare=None) -> Manifest
        Create cfg.outdir (prep + frame index + token-balanced shard plan + manifest.json) or, if it exists,
        check input sha256 / chunk length / model sha256s / precision / --save-embeddings are unchanged and
        return the stored manifest (RunStateError naming every difference unless cfg.force_restart, which
        clears prep, shards and outputs). Shard count = max(min_shards, shards_for_gpus(gpus), tokens / shard_tokens),
        fixed here so a resume with another GPU count works.
    run_shards(rundir, cfg, env, gpus=None, *, devices=None, scorer_factory=None, options=None) -> list[int]
        Score every pending shard: in this process on CPU / one GPU, else one spawned process per GPU
        (CUDA_VISIBLE_DEVICES set per child; models loaded once per child; shards pulled from a queue).
        devices=None -> select_devices(cfg.engine, gpus or cfg.gpus) (all visible GPUs by default).
    run_shard(rundir, index, scorer, *, options=None, device="cpu", progress=None) -> ShardResult
        One shard: verify existing parts, redo torn ones, score the gaps, write parts from a writer thread
        (temp name, fsync, rename: part-<start>-<stop>.h5), write `.done` last.
    aggregate(rundir, options=None) -> AggregateReport
        Refuses while a shard is not done; checks every prepared frame is present once in prep order; writes
        prediction_results.txt, prediction_results_highestscore.csv, sequence_summary.tsv (+ embeddings.h5)
        atomically, then complete.json.
    predict_run(cfg, env, *, scorer_factory=None, options=None, prepare=None) -> AggregateReport
        plan_run + run_shards + aggregate: the whole of `virnucpro predict` after argument parsing.
    shard_status(rundir) -> list[ShardStatus];  pending_shards(rundir) -> list[int];  is_complete(rundir)
    default_options() / RunOptions.from_env(env) (EnvConfig, read once per process): part cadence (VIRNUCPRO_PART_FRAMES / _PART_SECONDS), shard size
        (VIRNUCPRO_SHARD_TOKENS) and the test kill hook VIRNUCPRO_TEST_KILL_AT=<event>:<n>.

Errors: RunStateError (not resumable as asked, incomplete shards, disk full: one line, resumable state).
"""

from virnucpro.run.aggregate import AggregateReport, aggregate
from virnucpro.run.manifest import Manifest, RunIdentity
from virnucpro.run.multigpu import ScorerFactory, run_shards, select_devices
from virnucpro.run.options import RunOptions
from virnucpro.run.pipeline import predict_run
from virnucpro.run.plan import plan_run, plan_shards
from virnucpro.run.shard import ShardResult, run_shard
from virnucpro.run.status import ShardStatus, is_complete, pending_shards, shard_status

__all__ = [
    "AggregateReport", "Manifest", "RunIdentity", "RunOptions", "ScorerFactory", "ShardResult", "ShardStatus",
    "aggregate", "is_complete", "pending_shards", "plan_run", "plan_shards", "predict_run", "run_shard",
    "run_shards", "select_devices", "shard_status",
]
