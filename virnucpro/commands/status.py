"""`virnucpro status RUNDIR [--json]`: per-shard progress of a run directory, and its SLURM jobs if submitted."""

from __future__ import annotations

import json

from virnucpro.config import EnvConfig
from virnucpro.run.rundir import RunDir
from virnucpro.run.status import ShardStatus, is_complete, shard_status
from virnucpro.slurm.status import format_job_states, has_jobs, job_states


def register(subparsers) -> None:
    parser = subparsers.add_parser("status", help="per-shard progress of a run directory")
    parser.add_argument("rundir")
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    parser.set_defaults(handler=handle)


def handle(args, env: EnvConfig) -> int:
    slurm = job_states(args.rundir) if has_jobs(args.rundir) else None  # None: not submitted through SLURM
    planned = slurm is None or RunDir(args.rundir).manifest.exists()  # else its prep job has not planned it yet
    statuses = shard_status(args.rundir) if planned else []
    if args.json:
        print(json.dumps({"complete": is_complete(args.rundir), "shards": [s.as_dict() for s in statuses],
                          "slurm": slurm}, indent=1))
        return 0
    print_table(args.rundir, statuses)
    if slurm is not None:
        print(format_job_states(slurm))
    return 0


def print_table(rundir, statuses: list[ShardStatus]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{rundir} ({'complete' if is_complete(rundir) else 'in progress'})")
    for column in ("shard", "frames done", "tokens", "state", "tokens/s", "restarts"):
        table.add_column(column, justify="right")
    for s in statuses:
        state = "done" if s.done else ("running/partial" if s.frames_done else "pending")
        speed = f"{s.tokens_per_s:,.0f}" if s.tokens_per_s else "-"
        table.add_row(str(s.index), f"{s.frames_done}/{s.frames}", f"{s.tokens:,}", state, speed, str(s.restarts))
    Console().print(table)
