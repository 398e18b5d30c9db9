"""`virnucpro submit`: prepare the run directory here, then score its shards as a SLURM job array.

    virnucpro submit reads.fasta -o RUNDIR --profile slurm/profile.toml [--partition gpu --time 4:00:00 ...]
    virnucpro submit --resume RUNDIR      # after a task failed: only unfinished shards, plus a new aggregation
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from virnucpro.commands.options import (add_consensus_format_option, add_model_options, add_prep_options,
                                         predict_config_from_args, run_options)
from virnucpro.config import EngineConfig, EnvConfig
from virnucpro.run.calls import save_settings
from virnucpro.run.plan import plan_run
from virnucpro.run.recall import settings_with
from virnucpro.run.rundir import RunDir
from virnucpro.slurm.pending import refuse_active_jobs, submit_pending
from virnucpro.slurm.profile import SlurmProfile, load_profile, with_overrides
from virnucpro.slurm.submit import JobsFile, SlurmError, describe_submission, jobs_path

log = logging.getLogger(__name__)

# CLI flag -> profile key (flags override the profile file)
PROFILE_FLAGS = {
    "partition": str, "account": str, "qos": str, "time": str, "max_running": int, "gpus_per_task": int,
    "gpu_type": str, "cpus_per_task": int, "mem": str, "constraint": str, "image": str,
}


def register(subparsers) -> None:
    parser = subparsers.add_parser("submit", help="run a prediction as a SLURM job array (one task per shard)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", nargs="?", help="FASTA or FASTQ, plain or gzip")
    parser.add_argument("-o", "--output", help="run directory (on storage the compute nodes see)")
    parser.add_argument("--resume", metavar="RUNDIR", help="resubmit the unfinished shards of RUNDIR")
    parser.add_argument("--profile", help="SLURM profile TOML (see slurm/profile.toml)")
    parser.add_argument("--shards", type=int, default=0, help="split into at least this many shards (array tasks)")
    slurm = parser.add_argument_group("SLURM (override the profile)")
    for key, kind in PROFILE_FLAGS.items():
        slurm.add_argument("--" + key.replace("_", "-"), dest=key, type=kind, default=None)
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
    return with_overrides(profile, sbatch_flags=args.sbatch_flags, **overrides)


def handle(args, env: EnvConfig) -> int:
    if args.resume:
        rundir = Path(args.resume)
        jobs = JobsFile.load(rundir)
        engine, profile = jobs.engine, profile_from_args(args, base=jobs.profile)
    else:
        if not args.input or not args.output:
            raise SlurmError("virnucpro submit: give INPUT and -o RUNDIR (or --resume RUNDIR)")
        rundir = Path(args.output)
        engine, profile = _plan(args, env), profile_from_args(args)
    if args.consensus_format:  # the aggregation job reads it from the run directory
        save_settings(RunDir(rundir), settings_with(rundir, consensus_format=args.consensus_format))
    submission = submit_pending(rundir, engine, profile, resume=bool(args.resume))
    if submission is not None:
        print(describe_submission(rundir, submission))
    return 0


def _plan(args, env: EnvConfig) -> EngineConfig:
    cfg = predict_config_from_args(args, gpus=0)
    if args.force_restart and jobs_path(cfg.outdir).exists():
        refuse_active_jobs(cfg.outdir)  # never wipe shards under running tasks
    manifest = plan_run(cfg, env, gpus=1, min_shards=args.shards, options=run_options(args, env))
    log.info("%s: %d frames in %d shards", cfg.outdir, manifest.frames, len(manifest.shards))
    return cfg.engine
