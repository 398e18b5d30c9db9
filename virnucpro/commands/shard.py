"""`virnucpro shard RUNDIR [--index N]`: score one shard of a planned run (what a SLURM array task runs)."""

from __future__ import annotations

import sys

from virnucpro.commands.options import run_options
from virnucpro.config import EnvConfig
from virnucpro.errors import RunStateError
from virnucpro.run.rundir import RunDir
from virnucpro.run.session import run_log
from virnucpro.run.shard_process import score_shard


def register(subparsers) -> None:
    parser = subparsers.add_parser("shard", help="score one shard of a planned run (what a SLURM array task runs)")
    parser.add_argument("rundir")
    parser.add_argument("--index", type=int, default=None, help="shard index (default: $SLURM_ARRAY_TASK_ID)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.set_defaults(handler=handle)


def handle(args, env: EnvConfig) -> int:
    index = args.index if args.index is not None else env.slurm_array_task_id
    if index is None:
        raise RunStateError("virnucpro shard: give --index (or run inside a SLURM array task)")
    run = RunDir(args.rundir)
    with run_log(run, f"shard{index:04d}"):  # no run lock: the shards of a run are scored in parallel
        result = score_shard(run.root, index, env, device=args.device, options=run_options(args, env))
    print(f"shard {index}: {'already done' if result.skipped else f'{result.frames_scored} frames scored'}",
          file=sys.stderr)
    return 0
