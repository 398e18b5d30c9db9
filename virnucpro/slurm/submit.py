"""Submit a planned run to SLURM through submitit: job arrays of shard tasks (each under the cluster's
MaxArraySize), then one aggregation job depending on all of them (a prep job, slurm.prep_job, submits the same
from a compute node).

    RUNDIR/slurm/jobs.json    every submission (slurm.jobs): arrays, task -> shard, aggregation, prep job, settings
    RUNDIR/slurm/logs/        submitit's sbatch scripts, pickled tasks and the jobs' stdout/stderr
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import sys
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

from virnucpro.config import EngineConfig
from virnucpro.run.options import ignore_event
from virnucpro.slurm.jobs import SlurmError, Submission, logs_folder, record_submission
from virnucpro.slurm.profile import SlurmProfile, parse_sbatch_flags, task_memory, time_to_minutes
from virnucpro.slurm.sizing import array_limit, array_throttle, split_arrays

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- sbatch parameters


def _common_parameters(profile: SlurmProfile) -> dict:
    """submitit SlurmExecutor parameters shared by the array and the aggregation job."""
    params: dict = {"signal_delay_s": profile.signal_delay_s,
                    # batch logs: no progress bars redrawn into files
                    "setup": ["export VIRNUCPRO_NO_PROGRESS=1"]}
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(profile, key):
            params[key] = getattr(profile, key)
    extra = parse_sbatch_flags(profile.sbatch_flags)
    if extra:
        params["additional_parameters"] = extra
    return params


def gres(profile: SlurmProfile) -> str | None:
    if profile.gpus_per_task <= 0:
        return None
    kind = f"{profile.gpu_type}:" if profile.gpu_type else ""
    return f"gpu:{kind}{profile.gpus_per_task}"


def array_parameters(profile: SlurmProfile, job_name: str, tasks: int, throttle: int | None = None) -> dict:
    """One shard per task: GPU(s), CPUs for the DataLoader workers, memory, time limit, array throttle
    (`throttle`, default the profile's max_running; 0 = none)."""
    throttle = profile.max_running if throttle is None else throttle
    params = _common_parameters(profile)
    params.update(job_name=job_name, time=time_to_minutes(profile.time), cpus_per_task=profile.cpus_per_task,
                  mem=task_memory(profile), array_parallelism=throttle or max(tasks, 1))
    if gres(profile):
        params["gres"] = gres(profile)
    return params


def aggregate_parameters(profile: SlurmProfile, job_name: str, array_job_ids: str | Sequence[str]) -> dict:
    """Starts once every task of every array succeeded; is cancelled by SLURM if one fails (then --resume).
    Without an array (every shard already done) it starts at once."""
    arrays = [array_job_ids] if isinstance(array_job_ids, str) else list(array_job_ids)
    params = _common_parameters(profile)
    params.update(job_name=job_name, time=time_to_minutes(profile.aggregate_time), cpus_per_task=profile.aggregate_cpus,
                  mem=profile.aggregate_mem)
    if any(arrays):
        params["dependency"] = "afterok:" + ":".join(filter(None, arrays))
    params["additional_parameters"] = {"kill-on-invalid-dep": "yes", **params.get("additional_parameters", {})}
    return params


def prep_parameters(profile: SlurmProfile, job_name: str) -> dict:
    """The prep job: CPUs and memory for prep and de-duplication, no GPU; held until it is on record (released
    by `submit_prep_job`); never requeued by SLURM (`submit --resume` starts it again)."""
    params = _common_parameters(profile)
    params.update(job_name=job_name, time=time_to_minutes(profile.prep_time), cpus_per_task=profile.prep_cpus,
                  mem=profile.prep_mem, use_srun=False)  # it submits jobs itself: no job step around it
    params["additional_parameters"] = {"hold": True, "no-requeue": True, **params.get("additional_parameters", {})}
    return params


def python_command(profile: SlurmProfile) -> str:
    """How the jobs start Python: inside the Apptainer image when the profile names one, else this interpreter."""
    if profile.image:
        return f"apptainer exec {profile.apptainer_flags} {shlex.quote(profile.image)} python".replace("  ", " ")
    return shlex.quote(sys.executable)


def make_executor(folder: Path, profile: SlurmProfile, parameters: dict, python: str | None = None):
    import submitit

    try:
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=profile.max_requeues,
                                          python=python or python_command(profile))
    except RuntimeError as error:  # submitit: "Could not detect srun"
        raise SlurmError(f"cannot submit from this machine: {error}") from None
    executor.update_parameters(**parameters)
    return executor


# ---------------------------------------------------------------- submission


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def refused(error) -> SlurmError:
    return SlurmError(f"sbatch refused the submission: {str(error).strip().splitlines()[-1]}")


def cancel(job_ids: Sequence[str]) -> None:
    """scancel each job (quietly: one already gone is not an error)."""
    for job_id in job_ids:
        subprocess.run(["scancel", job_id], capture_output=True, timeout=30)


def submit_shards(rundir: Path, shards: list[int], engine: EngineConfig, profile: SlurmProfile,
                  *, resume: bool = False, scorer_factory: Callable | None = None, parent_job_id: str = "",
                  sizing: dict | None = None, on_event=ignore_event) -> Submission:
    """Submit `shards` as job arrays of at most the cluster's MaxArraySize tasks (task i of an array runs its
    i-th shard) plus one aggregation job waiting for all of them; each job is on record in jobs.json as soon as
    sbatch accepts it (on_event("submit") after each array).

    scorer_factory: (engine) -> scorer for the tasks (see ShardTask); it is pickled into the jobs."""
    from submitit.core.utils import FailedJobError

    from virnucpro.slurm.tasks import AggregateTask, ShardTask

    rundir = Path(rundir).resolve()
    name, folder = f"virnucpro-{rundir.name}", logs_folder(rundir)
    limit, source = array_limit(profile)
    groups = split_arrays(shards, limit)
    submission = Submission("", {}, "", now(), resume, parent_job_id=parent_job_id,
                            sizing={**(sizing or {}), "array_limit": limit, "array_limit_source": source})
    try:
        for group in groups:
            executor = make_executor(folder, profile, array_parameters(profile, name, len(group),
                                                                       array_throttle(profile, len(groups))))
            jobs = executor.submit_array([ShardTask(str(rundir), index, engine, scorer_factory) for index in group])
            submission = submission.with_array(jobs[0].job_id.split("_")[0],
                                               {shard: job.job_id for shard, job in zip(group, jobs)})
            record_submission(rundir, engine, profile, submission)
            on_event("submit")
        aggregator = make_executor(folder, profile,
                                   aggregate_parameters(profile, f"{name}-aggregate", submission.array_job_ids))
        aggregate_job = aggregator.submit(AggregateTask(str(rundir)))
    except FailedJobError as error:
        cancel(submission.array_job_ids)  # arrays without their aggregation: take them back (still on record)
        raise refused(error) from None
    submission = replace(submission, aggregate_job_id=aggregate_job.job_id)
    record_submission(rundir, engine, profile, submission)
    return submission


def describe_submission(rundir: Path, submission: Submission) -> str:
    """What `virnucpro submit` prints: the jobs, how to follow them, what to do when a task fails."""
    ids = ",".join(filter(None, (submission.prep_job_id, *submission.array_job_ids, submission.aggregate_job_id)))
    lines = []
    if submission.prep_job_id:
        lines.append(f"submitted the prep job {submission.prep_job_id}: it prepares and plans the run on a compute "
                     "node, then submits the shard arrays and the aggregation itself")
        lines.append(f"shard size: {submission.sizing.get('shard_size', '')}")
    for array in submission.array_job_ids:
        shards = sorted(shard for shard, job in submission.tasks.items() if job.split("_")[0] == array)
        lines.append(f"submitted {len(shards)} shard task(s) as job {array} (shards {_ranges(shards)})")
    if len(submission.array_job_ids) > 1:
        lines.append(f"{len(submission.array_job_ids)} arrays: at most {submission.sizing.get('array_limit')} tasks "
                     f"each ({submission.sizing.get('array_limit_source')})")
    if submission.aggregate_job_id:
        lines.append(f"aggregation job {submission.aggregate_job_id} starts when every shard task has succeeded")
    lines += [
        f"follow:  virnucpro status {rundir}    squeue -j {ids}",
        f"logs:    {logs_folder(rundir)}/",
        f"if a job fails: virnucpro submit --resume {rundir}",
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
