"""What `submit` may (re)submit: the shards without a `.done` marker, never while earlier jobs still write them."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Callable

from virnucpro.config import EngineConfig
from virnucpro.run.status import is_complete, pending_shards
from virnucpro.slurm.profile import SlurmProfile
from virnucpro.slurm.status import active_jobs, job_states
from virnucpro.slurm.submit import SlurmError, Submission, jobs_path, submit_shards

log = logging.getLogger(__name__)


def submit_pending(rundir: Path, engine: EngineConfig, profile: SlurmProfile, *, resume: bool = False,
                   scorer_factory: Callable | None = None) -> Submission | None:
    """Submit the shards without a `.done` marker and a new aggregation job; None when the run is complete."""
    if is_complete(rundir):
        print(f"{rundir}: already complete (complete.json); nothing to submit", file=sys.stderr)
        return None
    if jobs_path(rundir).exists():
        refuse_active_jobs(rundir)
    return submit_shards(rundir, pending_shards(rundir), engine, profile, resume=resume,
                         scorer_factory=scorer_factory)


def refuse_active_jobs(rundir: Path) -> None:
    """Two tasks must never write one shard: stop if earlier shard jobs still run; drop a stale aggregation job."""
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
