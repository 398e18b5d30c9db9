"""`virnucpro status RUNDIR [--json]`: progress, liveness, speed and ETA of a run directory, per shard, and its SLURM
jobs if submitted."""

from __future__ import annotations

import json

from virnucpro.config import EnvConfig
from virnucpro.run.rundir import RunDir
from virnucpro.run.status import RunStatus, ShardStatus, run_status
from virnucpro.slurm.status import format_job_states, has_jobs, job_states


def register(subparsers) -> None:
    parser = subparsers.add_parser("status", help="progress, liveness and ETA of a run directory",
                                   description=__doc__.split(":", 1)[1].strip())
    parser.add_argument("rundir")
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    parser.set_defaults(handler=handle)


def handle(args, env: EnvConfig) -> int:
    slurm = job_states(args.rundir) if has_jobs(args.rundir) else None  # None: not submitted through SLURM
    planning = slurm is not None and not RunDir(args.rundir).manifest.exists()  # its prep job has not planned yet
    status = None if planning else run_status(args.rundir)
    if args.json:
        print(json.dumps({**(status.as_dict() if status else {"state": "preparing", "shards": []}), "slurm": slurm},
                         indent=1))
        return 0
    if status is None:
        print(f"{args.rundir}: preparing (its SLURM prep job plans the run)")
    else:
        print_summary(args.rundir, status)
        print_table(status.shards)
    if slurm is not None:
        print(format_job_states(slurm))
    return 0


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def print_summary(rundir, status: RunStatus) -> None:
    percent = 100.0 * status.frames_done / max(status.frames, 1)
    print(f"{rundir}: {status.state} ({status.detail})")
    line = (f"frames {status.frames_done:,}/{status.frames:,} ({percent:.1f}%), "
            f"{status.frames_checkpointed:,} checkpointed")
    if status.tokens_per_s:
        line += f"; {status.tokens_per_s:,.0f} ESM tokens/s now"
    if status.eta_seconds is not None:
        line += f"; ETA {_duration(status.eta_seconds)}"
    print(line)


def print_table(shards: list[ShardStatus]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for column in ("shard", "frames done", "checkpointed", "tokens", "state", "tokens/s", "restarts"):
        table.add_column(column, justify="right")
    for s in shards:
        beat = s.heartbeat if s.state == "running" else None
        state = s.state + (f" (pid {beat['pid']} on {beat['host']})" if beat else "")
        speed = (beat or {}).get("tokens_per_s") or s.tokens_per_s
        table.add_row(str(s.index), f"{s.frames_done}/{s.frames}", str(s.frames_checkpointed), f"{s.tokens:,}", state,
                      f"{speed:,.0f}" if speed else "-", str(s.restarts))
    Console().print(table)
