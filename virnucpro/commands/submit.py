"""`virnucpro submit`: plan the run directory (here, or in a prep job of its own when the input is large), then
score its shards as SLURM job arrays and aggregate them in a dependent job.

    virnucpro submit reads.fasta -o RUNDIR --profile slurm/profile.toml [--partition gpu --time 4:00:00 ...]
    virnucpro submit --resume RUNDIR      # after a job failed: only unfinished work, plus a new aggregation
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path

from virnucpro.commands.options import (add_consensus_format_option, add_model_options, add_prep_options,
                                         predict_config_from_args, run_options)
from virnucpro.config import EnvConfig, PredictConfig
from virnucpro.errors import InputError
from virnucpro.run.calls import save_settings
from virnucpro.run.models import resolve_models
from virnucpro.run.plan import plan_run
from virnucpro.run.recall import settings_with
from virnucpro.run.rundir import RunDir, claim
from virnucpro.slurm.jobs import JobsFile, PlanRequest, SlurmError, jobs_path
from virnucpro.slurm.pending import refuse_active_jobs, submit_pending
from virnucpro.slurm.profile import PREP_JOB_CHOICES, SlurmProfile, load_profile, size_to_bytes, with_overrides
from virnucpro.slurm.sizing import ShardSize, describe_shards, shard_size
from virnucpro.slurm.prep_job import submit_prep_job
from virnucpro.slurm.submit import describe_submission

log = logging.getLogger(__name__)

# CLI flag -> profile key (flags override the profile file)
PROFILE_FLAGS = {
    "partition": str, "account": str, "qos": str, "time": str, "max_running": int, "gpus_per_task": int,
    "gpu_type": str, "cpus_per_task": int, "mem": str, "constraint": str, "image": str,
    "max_array_size": int, "startup_s": float, "tokens_per_s": float,
}


def register(subparsers) -> None:
    parser = subparsers.add_parser("submit", help="run a prediction as SLURM job arrays (one task per shard)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", nargs="?", help="FASTA or FASTQ, plain or gzip")
    parser.add_argument("-o", "--output", help="run directory (on storage the compute nodes see)")
    parser.add_argument("--resume", metavar="RUNDIR", help="resubmit the unfinished work of RUNDIR")
    parser.add_argument("--profile", help="SLURM profile TOML (see slurm/profile.toml)")
    parser.add_argument("--shards", type=int, default=0,
                        help="exactly this many shards (array tasks) instead of sizing them from the profile's "
                             "measured start-up and throughput")
    slurm = parser.add_argument_group("SLURM (override the profile)")
    for key, kind in PROFILE_FLAGS.items():
        slurm.add_argument("--" + key.replace("_", "-"), dest=key, type=kind, default=None)
    slurm.add_argument("--prep-job", choices=PREP_JOB_CHOICES, default=None,
                       help="prepare and plan in a SLURM job of its own (auto: when the input is at least the "
                            "profile's prep_job_min_input)")
    slurm.add_argument("--sbatch-flag", dest="sbatch_flags", action="append", default=None, metavar="FLAG",
                       help="extra sbatch option for every job, e.g. --sbatch-flag=--mail-type=END (repeatable)")
    add_model_options(parser)
    add_prep_options(parser)
    add_consensus_format_option(parser)
    parser.add_argument("--save-embeddings", action="store_true", help="also write embeddings.h5")
    parser.add_argument("--force-restart", action="store_true",
                        help="discard the run directory's shards instead of refusing a mismatched resume")
    parser.set_defaults(handler=handle)


def profile_from_args(args, base: SlurmProfile | None = None) -> SlurmProfile:
    profile = load_profile(args.profile) if args.profile or base is None else base
    overrides = {key: getattr(args, key) for key in PROFILE_FLAGS}
    return with_overrides(profile, sbatch_flags=args.sbatch_flags, prep_job=args.prep_job, **overrides)


def handle(args, env: EnvConfig) -> int:
    on_event = run_options(args, env).on_event
    if args.resume:
        rundir = Path(args.resume)
        jobs = JobsFile.load(rundir)
        record_consensus_format(args, rundir)
        submission = submit_pending(rundir, jobs.engine, profile_from_args(args, base=jobs.profile), resume=True,
                                    on_event=on_event)
    else:
        if not args.input or not args.output:
            raise SlurmError("virnucpro submit: give INPUT and -o RUNDIR (or --resume RUNDIR)")
        cfg, profile = predict_config_from_args(args, gpus=0), profile_from_args(args)
        size = shard_size(profile, args.shards, env.shard_tokens)
        if args.force_restart and jobs_path(cfg.outdir).exists():
            refuse_active_jobs(cfg.outdir)  # never wipe shards under running jobs
        if prep_in_a_job(cfg, profile):
            check_submittable(cfg, env)
            claim(RunDir(cfg.outdir))  # marked as a run directory before its prep job plans it there
            record_consensus_format(args, cfg.outdir)
            submission = submit_prep_job(cfg.outdir, PlanRequest(cfg, size), cfg.engine, profile, on_event=None)
        else:
            figures = plan_here(args, env, cfg, profile, size)
            record_consensus_format(args, cfg.outdir)
            submission = submit_pending(cfg.outdir, cfg.engine, profile, sizing={"shard_size": figures},
                                        on_event=on_event)
        rundir = cfg.outdir
    if submission is not None:
        print(describe_submission(rundir, submission))
    return 0


def record_consensus_format(args, rundir: Path) -> None:
    """The aggregation job reads the consensus format from the run directory: recorded before anything runs."""
    if args.consensus_format:
        save_settings(RunDir(rundir), settings_with(rundir, consensus_format=args.consensus_format))


def prep_in_a_job(cfg: PredictConfig, profile: SlurmProfile) -> bool:
    """Prep runs as its own job when the profile says always, or auto and the input is large; a run already
    planned (manifest.json, no --force-restart) only has its identity checked here."""
    if profile.prep_job == "never" or (RunDir(cfg.outdir).manifest.exists() and not cfg.force_restart):
        return False
    if profile.prep_job == "always":
        return True
    try:
        return Path(cfg.input).stat().st_size >= size_to_bytes(profile.prep_job_min_input)
    except OSError:
        return False  # planning here reports the missing input


def check_submittable(cfg: PredictConfig, env: EnvConfig) -> None:
    """What can fail at once is checked before a prep job is queued: the input is a file, the models resolve."""
    if not Path(cfg.input).is_file():
        raise InputError(cfg.input, "input file not found")
    resolve_models(cfg, env)


def plan_here(args, env: EnvConfig, cfg: PredictConfig, profile: SlurmProfile, size: ShardSize) -> str:
    options = replace(run_options(args, env), shard_tokens=size.tokens, shard_rounding=size.rounding)
    manifest = plan_run(cfg, env, gpus=1, min_shards=size.min_shards, options=options)
    figures = describe_shards(size, manifest.tokens, manifest.shards, profile)
    print(figures)
    log.info("%s: %d frames (%d to score) in %d shards", cfg.outdir, manifest.frames, manifest.scored_frames,
             len(manifest.shards))
    return figures
