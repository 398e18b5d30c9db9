"""`virnucpro submit`: prepare the run directory here, then score its shards as a SLURM job array.

    virnucpro submit reads.fasta -o RUNDIR --profile slurm/profile.toml [--partition gpu --time 4:00:00 ...]
    virnucpro submit --resume RUNDIR      # after a task failed: only unfinished shards, plus a new aggregation
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from pathlib import Path

from virnucpro.config import EngineConfig, EnvConfig, PredictConfig
from virnucpro.slurm.profile import SlurmProfile, load_profile, with_overrides
from virnucpro.slurm.submit import JobsFile, SlurmError, Submission, jobs_path, logs_folder, submit_shards

log = logging.getLogger(__name__)

# CLI flag -> profile key (flags override the profile file)
PROFILE_FLAGS = {
    "partition": str, "account": str, "qos": str, "time": str, "max_running": int, "gpus_per_task": int,
    "gpu_type": str, "cpus_per_task": int, "mem": str, "constraint": str, "image": str,
}


def register(subparsers) -> None:
    from virnucpro.engine.command import add_model_options

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
    parser.add_argument("--save-embeddings", action="store_true", help="also write embeddings.h5")
    parser.add_argument("--force-restart", action="store_true",
                        help="discard the run directory's shards instead of refusing a mismatched resume")
    parser.set_defaults(handler=submit_command)


def profile_from_args(args, base: SlurmProfile | None = None) -> SlurmProfile:
    profile = load_profile(args.profile) if args.profile or base is None else base
    overrides = {key: getattr(args, key) for key in PROFILE_FLAGS}
    return with_overrides(profile, sbatch_flags=args.sbatch_flags, **overrides)


def submit_command(args, env: EnvConfig) -> int:
    if args.resume:
        rundir = Path(args.resume)
        jobs = JobsFile.load(rundir)
        engine, profile, block_delay_s = jobs.engine, profile_from_args(args, base=jobs.profile), jobs.block_delay_s
    else:
        if not args.input or not args.output:
            raise SlurmError("virnucpro submit: give INPUT and -o RUNDIR (or --resume RUNDIR)")
        rundir = Path(args.output)
        engine, profile, block_delay_s = _plan(args, env), profile_from_args(args), 0.0
    submission = submit_pending(rundir, engine, profile, resume=bool(args.resume), block_delay_s=block_delay_s)
    if submission is not None:
        print(describe_submission(rundir, submission))
    return 0


def _plan(args, env: EnvConfig) -> EngineConfig:
    from virnucpro.engine.command import engine_config_from_args, model_paths_from_args
    from virnucpro.run.plan import plan_run

    engine = engine_config_from_args(args)
    cfg = PredictConfig(input=Path(args.input), outdir=Path(args.output), chunk_length=args.chunk_length,
                        models=model_paths_from_args(args), engine=engine, save_embeddings=args.save_embeddings,
                        force_restart=args.force_restart)
    if args.force_restart and jobs_path(cfg.outdir).exists():
        _refuse_active_jobs(cfg.outdir)  # never wipe shards under running tasks
    manifest = plan_run(cfg, env, gpus=1, min_shards=args.shards)
    log.info("%s: %d frames in %d shards", cfg.outdir, manifest.frames, len(manifest.shards))
    return engine


def submit_pending(rundir: Path, engine: EngineConfig, profile: SlurmProfile, *, resume: bool = False,
                   block_delay_s: float = 0.0) -> Submission | None:
    """Submit the shards without a `.done` marker and a new aggregation job; None when the run is complete."""
    from virnucpro.run.status import is_complete, pending_shards

    if is_complete(rundir):
        print(f"{rundir}: already complete (complete.json); nothing to submit", file=sys.stderr)
        return None
    if jobs_path(rundir).exists():
        _refuse_active_jobs(rundir)
    return submit_shards(rundir, pending_shards(rundir), engine, profile, resume=resume, block_delay_s=block_delay_s)


def _refuse_active_jobs(rundir: Path) -> None:
    """Two tasks must never write one shard: stop if earlier shard jobs still run; drop a stale aggregation job."""
    from virnucpro.slurm.status import active_jobs, job_states

    states = job_states(rundir)
    if not states["scontrol"] or states["scontrol_error"]:
        raise SlurmError(f"{rundir}: cannot check whether jobs of an earlier submission still run "
                         f"({states['scontrol_error'] or 'scontrol not found'})")
    active = active_jobs(states)
    stale_aggregate = active.pop("aggregate", None)
    if active:
        shown = ", ".join(f"shard {shard} ({job})" for shard, job in sorted(active.items(), key=lambda i: int(i[0])))
        raise SlurmError(f"{rundir}: jobs of an earlier submission are still queued or running: {shown}; "
                         "wait for them or scancel them, then resubmit")
    if stale_aggregate:
        subprocess.run(["scancel", stale_aggregate], capture_output=True, timeout=30)
        log.info("cancelled the earlier aggregation job %s", stale_aggregate)


def describe_submission(rundir: Path, submission: Submission) -> str:
    tasks = len(submission.tasks)
    ids = ",".join(filter(None, (submission.array_job_id, submission.aggregate_job_id)))
    lines = []
    if tasks:
        lines.append(f"submitted {tasks} shard task(s) as job {submission.array_job_id} "
                     f"(shards {_ranges(sorted(submission.tasks))})")
    lines += [
        f"aggregation job {submission.aggregate_job_id} starts when every shard task has succeeded",
        f"follow:  virnucpro status {rundir}    squeue -j {ids}",
        f"logs:    {logs_folder(rundir)}/",
        f"if a task fails: virnucpro submit --resume {rundir}",
    ]
    return "\n".join(lines)


def _ranges(numbers: list[int]) -> str:
    spans, start = [], None
    for position, number in enumerate(numbers):
        if start is None:
            start = number
        if position + 1 == len(numbers) or numbers[position + 1] != number + 1:
            spans.append(str(start) if start == number else f"{start}-{number}")
            start = None
    return ",".join(spans)
