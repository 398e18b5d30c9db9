"""Run directories that survive anything: plan, shard, checkpoint, resume, aggregate.

API (what the commands and the SLURM tasks call; `options` defaults to RunOptions(), the commands build it from
EnvConfig with RunOptions.from_env):

    plan_run(cfg: PredictConfig, env: EnvConfig, *, gpus=None, min_shards=0, options=None, prepare=None) -> Manifest
        Create cfg.outdir (prep + frame index + de-duplication unless cfg.dedup is False + token-balanced shard plan
        over the frames to score + manifest.json) or, if it exists, check input sha256 / chunk length / model
        sha256s / precision / --save-embeddings / prepared files are unchanged and return the stored manifest
        (RunStateError naming every difference unless cfg.force_restart, which deletes the run's own prepared
        files, parts and outputs, nothing else). Shard count = max(min_shards, shards_for_gpus(gpus), tokens / shard_tokens),
        fixed here so a resume with another GPU count works. Model names are resolved in the store (run.models).
    run_shards(rundir, cfg, env, gpus=None, *, devices=None, scorer_factory=None, options=None) -> list[int]
        Score every pending shard: in this process on CPU / one GPU, else one spawned process per GPU
        (CUDA_VISIBLE_DEVICES set per child; models loaded once per child; shards pulled from a queue).
        devices=None -> select_devices(cfg.engine, gpus or cfg.gpus) (all visible GPUs by default).
        scorer_factory: (EngineConfig) -> scorer; default ScorerFactory(resolve_models(cfg, env), env).
    run_shard(rundir, index, scorer, *, options=None, device="cpu", progress=None) -> ShardResult
        One shard: verify existing parts, redo torn ones, score the gaps, write parts from a writer thread
        (temp name, fsync, rename: part-<start>-<stop>.h5), write `.done` last.
    aggregate(rundir, options=None, *, settings=None, embeddings=True) -> AggregateReport
        Refuses while a shard is not done; streams every prepared frame once in prep order (bounded memory) into
        prediction_results.txt, prediction_results_highestscore.csv, sequence_summary.tsv,
        viral_sequences.fasta, nonfinite_frames.tsv, report.html (+ embeddings.h5), renamed together, then
        calls.json (the CallSettings used; default: those recorded) and complete.json.
    predict_run(cfg, env, *, scorer_factory=None, options=None, prepare=None, consensus_format=None) -> AggregateReport
        plan_run + run_shards + aggregate: the whole of `virnucpro predict` after argument parsing.
    recall.call_run(rundir, changes, classifier=None, options=None): `virnucpro call` (aggregate with new settings).
    run_status(rundir) -> RunStatus (running / stopped at T, frames done, tokens/s, ETA; per shard from parts and
        heartbeats);  shard_status(rundir) -> list[ShardStatus];  pending_shards(rundir);  is_complete(rundir)
    run_session(root, name) (run.session): claim + lock + log of a command on a run directory (predict, plan and
        aggregate take it; reentrant); run_shard holds the shard's lock (run.lock.hold_lock).
    RunOptions(part_frames, part_seconds, block_frames, cpu_block_frames, shard_tokens, shard_rounding, on_event):
        checkpoint cadence and shard size (shard_rounding "up": shards of at most shard_tokens; "down": of at
        least, as `submit` plans)
        (EnvConfig: VIRNUCPRO_PART_FRAMES / _PART_SECONDS / _BLOCK_FRAMES / _SHARD_TOKENS) and the event hook,
        called at the moments named in run.options.RUN_EVENTS (a no-op unless a caller installs one).
    manifest_config(rundir, device) -> PredictConfig: what a shard process runs, from the manifest.

Errors: RunStateError (not resumable as asked, not a run directory, incomplete shards), RunLockedError (another
live process holds the run or shard), DiskFullError (resumable), InputError / ModelError (checked before anything
is written): one line each.
"""

from virnucpro.run.aggregate import AggregateReport, aggregate
from virnucpro.run.manifest import Manifest, RunIdentity, manifest_config
from virnucpro.run.multigpu import ScorerFactory, run_shards, select_devices
from virnucpro.run.options import RunOptions
from virnucpro.run.pipeline import predict_run
from virnucpro.run.plan import plan_run, plan_shards
from virnucpro.run.shard import ShardResult, run_shard
from virnucpro.run.status import RunStatus, ShardStatus, is_complete, pending_shards, run_status, shard_status

__all__ = [
    "AggregateReport", "Manifest", "RunIdentity", "RunOptions", "RunStatus", "ScorerFactory", "ShardResult",
    "ShardStatus", "aggregate", "is_complete", "manifest_config", "pending_shards", "plan_run", "plan_shards",
    "predict_run", "run_shard", "run_shards", "run_status", "select_devices", "shard_status",
]
