"""Submit a planned run to SLURM through submitit: one array task per shard, then a dependent aggregation job.

    RUNDIR/slurm/jobs.json    every submission: array job id, array task -> shard, aggregation job id, settings
    RUNDIR/slurm/logs/        submitit's sbatch scripts, pickled tasks and the jobs' stdout/stderr
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from virnucpro.config import EngineConfig
from virnucpro.errors import VirNucProError
from virnucpro.io.atomic import write_text_atomic
from virnucpro.slurm.profile import SlurmProfile, parse_sbatch_flags, task_memory, time_to_minutes

JOBS_FILE = "jobs.json"


class SlurmError(VirNucProError):
    """SLURM refused or is missing (sbatch not found, submission rejected, jobs still running)."""

    exit_code = 5


@dataclass(frozen=True)
class Submission:
    array_job_id: str
    tasks: dict[int, str]  # shard index -> SLURM job id of its task ("123_4"; "123" for a one-task submission)
    aggregate_job_id: str
    submitted: str = ""
    resume: bool = False

    def to_dict(self) -> dict:
        data = asdict(self)
        data["tasks"] = {str(shard): job for shard, job in self.tasks.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Submission":
        data = dict(data)
        data["tasks"] = {int(shard): job for shard, job in data["tasks"].items()}
        return cls(**data)


@dataclass
class JobsFile:
    """RUNDIR/slurm/jobs.json: the settings of the run's tasks and every submission, newest last."""

    engine: EngineConfig
    profile: SlurmProfile
    submissions: list[Submission] = field(default_factory=list)

    def save(self, rundir: Path) -> None:
        data = {"engine": asdict(self.engine), "profile": asdict(self.profile),
                "submissions": [s.to_dict() for s in self.submissions]}
        write_text_atomic(jobs_path(rundir), json.dumps(data, indent=1))

    @classmethod
    def load(cls, rundir: Path) -> "JobsFile":
        path = jobs_path(rundir)
        try:
            data = json.loads(path.read_text())
            profile = dict(data["profile"], sbatch_flags=tuple(data["profile"].get("sbatch_flags", ())))
            return cls(EngineConfig(**data["engine"]), SlurmProfile(**profile),
                       [Submission.from_dict(s) for s in data["submissions"]])
        except FileNotFoundError:
            raise SlurmError(f"{path}: no SLURM submission recorded here (submit with `virnucpro submit`)") from None
        except (ValueError, KeyError, TypeError) as error:
            raise SlurmError(f"{path}: unreadable ({error})") from None

    def latest_job_of_shard(self) -> dict[int, str]:
        jobs: dict[int, str] = {}
        for submission in self.submissions:
            jobs.update(submission.tasks)
        return jobs


def jobs_path(rundir: Path) -> Path:
    return Path(rundir) / "slurm" / JOBS_FILE


def logs_folder(rundir: Path) -> Path:
    return Path(rundir).resolve() / "slurm" / "logs"


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


def array_parameters(profile: SlurmProfile, job_name: str, tasks: int) -> dict:
    """One shard per task: GPU(s), CPUs for the DataLoader workers, memory, time limit, array throttle."""
    params = _common_parameters(profile)
    params.update(job_name=job_name, time=time_to_minutes(profile.time), cpus_per_task=profile.cpus_per_task,
                  mem=task_memory(profile), array_parallelism=profile.max_running or max(tasks, 1))
    if gres(profile):
        params["gres"] = gres(profile)
    return params


def aggregate_parameters(profile: SlurmProfile, job_name: str, array_job_id: str) -> dict:
    """Starts once every task of the array succeeded; is cancelled by SLURM if one fails (then --resume).
    Without an array (every shard already done) it starts at once."""
    params = _common_parameters(profile)
    params.update(job_name=job_name, time=time_to_minutes(profile.aggregate_time), cpus_per_task=profile.aggregate_cpus,
                  mem=profile.aggregate_mem)
    if array_job_id:
        params["dependency"] = f"afterok:{array_job_id}"
    params["additional_parameters"] = {"kill-on-invalid-dep": "yes", **params.get("additional_parameters", {})}
    return params


def python_command(profile: SlurmProfile) -> str:
    """How the jobs start Python: inside the Apptainer image when the profile names one, else this interpreter."""
    if profile.image:
        return f"apptainer exec {profile.apptainer_flags} {shlex.quote(profile.image)} python".replace("  ", " ")
    return shlex.quote(sys.executable)


def make_executor(folder: Path, profile: SlurmProfile, parameters: dict):
    import submitit

    try:
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=profile.max_requeues,
                                          python=python_command(profile))
    except RuntimeError as error:  # submitit: "Could not detect srun"
        raise SlurmError(f"cannot submit from this machine: {error}") from None
    executor.update_parameters(**parameters)
    return executor


# ---------------------------------------------------------------- submission


def submit_shards(rundir: Path, shards: list[int], engine: EngineConfig, profile: SlurmProfile,
                  *, resume: bool = False, scorer_factory: Callable | None = None) -> Submission:
    """Submit `shards` as one array (task i runs shards[i]) plus the aggregation job; record both in jobs.json.

    scorer_factory: (engine) -> scorer for the tasks (see ShardTask); it is pickled into the jobs."""
    from submitit.core.utils import FailedJobError

    from virnucpro.slurm.tasks import AggregateTask, ShardTask

    rundir = Path(rundir).resolve()
    name = f"virnucpro-{rundir.name}"
    folder = logs_folder(rundir)
    tasks = [ShardTask(str(rundir), index, engine, scorer_factory) for index in shards]
    array_id = ""
    try:
        array = make_executor(folder, profile, array_parameters(profile, name, len(tasks)))
        jobs = array.submit_array(tasks) if tasks else []
        array_id = jobs[0].job_id.split("_")[0] if jobs else ""
        aggregator = make_executor(folder, profile, aggregate_parameters(profile, f"{name}-aggregate", array_id))
        aggregate_job = aggregator.submit(AggregateTask(str(rundir)))
    except FailedJobError as error:
        if array_id:  # an array without its aggregation would be unrecorded work: take it back
            subprocess.run(["scancel", array_id], capture_output=True, timeout=30)
        raise SlurmError(f"sbatch refused the submission: {str(error).strip().splitlines()[-1]}") from None
    submission = Submission(array_id, {s: job.job_id for s, job in zip(shards, jobs)}, aggregate_job.job_id,
                            datetime.now(timezone.utc).isoformat(timespec="seconds"), resume)
    record_submission(rundir, engine, profile, submission)
    return submission


def record_submission(rundir: Path, engine: EngineConfig, profile: SlurmProfile, submission: Submission) -> None:
    path = jobs_path(rundir)
    jobs = JobsFile.load(rundir) if path.exists() else JobsFile(engine, profile)
    jobs.engine, jobs.profile = engine, profile
    jobs.submissions.append(submission)
    jobs.save(rundir)


def describe_submission(rundir: Path, submission: Submission) -> str:
    """What `virnucpro submit` prints: the jobs, how to follow them, what to do when a task fails."""
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
