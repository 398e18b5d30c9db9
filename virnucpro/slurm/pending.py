"""What `submit` may (re)submit: the prep job when the run is not planned yet, else the shards without a `.done`
marker, and never while earlier jobs of the run still run."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Callable

from virnucpro.config import EngineConfig
from virnucpro.run.options import ignore_event
from virnucpro.run.rundir import RunDir
from virnucpro.run.status import is_complete, pending_shards
from virnucpro.slurm.jobs import JobsFile, PlanRequest, SlurmError, Submission, jobs_path
from virnucpro.slurm.profile import SlurmProfile
from virnucpro.slurm.status import active_jobs, job_states
from virnucpro.slurm.prep_job import submit_prep_job
from virnucpro.slurm.submit import cancel, submit_shards

log = logging.getLogger(__name__)


def submit_pending(rundir: Path, engine: EngineConfig, profile: SlurmProfile, *, resume: bool = False,
                   scorer_factory: Callable | None = None, sizing: dict | None = None,
                   on_event=ignore_event) -> Submission | None:
    """Submit what the run still needs; None when it is complete. A run whose prep job never finished planning
    (no manifest.json) gets a new prep job from the planning request recorded in jobs.json."""
    if is_complete(rundir):
        print(f"{rundir}: already complete (complete.json); nothing to submit", file=sys.stderr)
        return None
    if jobs_path(rundir).exists():
        refuse_active_jobs(rundir)
    if not RunDir(rundir).manifest.exists():
        plan = JobsFile.load(rundir).plan if jobs_path(rundir).exists() else None
        if plan is None:
            raise SlurmError(f"{rundir}: not planned (no manifest.json) and no prep job on record; "
                             "submit INPUT -o RUNDIR instead")
        return submit_prep_job(rundir, PlanRequest.from_dict(plan), engine, profile, resume=resume,
                               scorer_factory=scorer_factory)
    return submit_shards(rundir, pending_shards(rundir), engine, profile, resume=resume,
                         scorer_factory=scorer_factory, sizing=sizing, on_event=on_event)


def refuse_active_jobs(rundir: Path) -> None:
    """Two tasks must never write one shard: stop if earlier shard or prep jobs still run; drop a stale
    aggregation job."""
    states = job_states(rundir)
    if not states["scontrol"] or states["scontrol_error"]:
        raise SlurmError(f"{rundir}: cannot check whether jobs of an earlier submission still run "
                         f"({states['scontrol_error'] or 'scontrol not found'})")
    active = active_jobs(states)
    stale_aggregate = active.pop("aggregate", None)
    prep = active.pop("prep", None)
    if active or prep:
        shown = [f"the prep job ({prep})"] if prep else []
        shown += [f"shard {shard} ({job})" for shard, job in sorted(active.items(), key=lambda i: int(i[0]))]
        raise SlurmError(f"{rundir}: jobs of an earlier submission are still queued or running: {', '.join(shown)}; "
                         "wait for them or scancel them, then resubmit")
    if stale_aggregate:
        cancel([stale_aggregate])
        log.info("cancelled the earlier aggregation job %s", stale_aggregate)
