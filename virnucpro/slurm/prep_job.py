"""Prep as a SLURM job of its own: on a compute node it prepares the input, indexes and de-duplicates the frames,
plans the shards, then submits the shard arrays and the aggregation itself, recorded in RUNDIR/slurm/jobs.json
beside its own submission, so `status` and `submit --resume` see one run.

Used by `submit` when the input is large (profile `prep_job`, `prep_job_min_input`): planning a 10^8-read input
takes minutes of CPU and gigabytes of disk traffic that a login node should not carry.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from virnucpro.config import EngineConfig, EnvConfig
from virnucpro.errors import VirNucProError
from virnucpro.io.atomic import write_text_atomic
from virnucpro.run.options import RunOptions, ignore_event
from virnucpro.run.plan import plan_run
from virnucpro.run.rundir import RunDir, attach_log_file, claim
from virnucpro.run.status import pending_shards
from virnucpro.slurm.jobs import PlanRequest, SlurmError, Submission, logs_folder, prep_error_path, record_submission
from virnucpro.slurm.profile import SlurmProfile
from virnucpro.slurm.sizing import describe_shards
from virnucpro.slurm.submit import cancel, make_executor, now, prep_parameters, refused, submit_shards
from virnucpro.slurm.tasks import configure_logging

log = logging.getLogger(__name__)


@dataclass
class PrepTask:
    """The prep job: plans the run here (prep, index, de-duplication, shard plan sized as `request.size` says),
    then submits the shard arrays and the aggregation, parented to this job. Not requeued: a prep job that died
    is submitted again by `submit --resume`, which finds the plan done (manifest.json) or redoes it.

    A failure leaves its one-line message in RUNDIR/slurm/prep-error.txt (shown by `virnucpro status`)."""

    rundir: str
    request: PlanRequest
    engine: EngineConfig
    profile: SlurmProfile
    scorer_factory: Callable | None = None  # handed to the shard tasks (tests)
    on_event: Callable | None = None  # the run's event hook (tests' fault injection)

    def __call__(self) -> dict:
        configure_logging()
        env = EnvConfig.from_environ()
        rundir = Path(self.rundir)
        run = RunDir(rundir)
        claim(run)  # `submit` marked it a run directory already; a prep job submitted on its own marks it here
        attach_log_file(run.create(), "prep")
        prep_error_path(rundir).unlink(missing_ok=True)
        size = self.request.size
        options = replace(RunOptions.from_env(env, on_event=self.on_event or ignore_event), shard_tokens=size.tokens,
                          shard_rounding=size.rounding)
        try:
            manifest = plan_run(self.request.config, env, gpus=1, min_shards=size.min_shards, options=options)
            figures = describe_shards(size, manifest.tokens, manifest.shards, self.profile)
            log.info("%s", figures)
            submission = submit_shards(rundir, pending_shards(rundir), self.engine, self.profile,
                                       scorer_factory=self.scorer_factory, parent_job_id=env.slurm_job_id or "",
                                       sizing={"shard_size": figures}, on_event=options.on_event)
        except (VirNucProError, OSError) as error:
            write_text_atomic(prep_error_path(rundir), f"{error}\n")
            log.error("prep job failed: %s", error)
            raise
        return {"shards": len(manifest.shards), "arrays": list(submission.array_job_ids),
                "aggregate": submission.aggregate_job_id}



def submit_prep_job(rundir: Path, request: PlanRequest, engine: EngineConfig, profile: SlurmProfile, *,
                    resume: bool = False, scorer_factory: Callable | None = None, on_event=None) -> Submission:
    """Submit the prep job: on a compute node it plans the run (prep, index, de-duplication, shard plan) and
    submits the shard arrays and the aggregation itself (slurm.tasks.PrepTask). It starts held and is released
    once it is on record, so its own submission is always recorded after it.

    It runs in this Python (it calls sbatch, which a container image does not have); scorer_factory and
    on_event are handed to it (tests)."""
    from submitit.core.utils import FailedJobError

    rundir = Path(rundir).resolve()
    executor = make_executor(logs_folder(rundir), profile, prep_parameters(profile, f"virnucpro-{rundir.name}-prep"),
                             python=shlex.quote(sys.executable))
    try:
        job = executor.submit(PrepTask(str(rundir), request, engine, profile, scorer_factory, on_event))
    except FailedJobError as error:
        raise refused(error) from None
    submission = Submission("", {}, "", now(), resume, prep_job_id=job.job_id, sizing={"shard_size": request.size.why})
    resumable = PlanRequest(replace(request.config, force_restart=False), request.size)  # a resubmission resumes
    record_submission(rundir, engine, profile, submission, plan=resumable)
    released = subprocess.run(["scontrol", "release", job.job_id], capture_output=True, text=True, timeout=60)
    if released.returncode != 0:
        cancel([job.job_id])
        raise SlurmError(f"cannot release the prep job {job.job_id}: {released.stderr.strip() or 'scontrol failed'}")
    return submission
