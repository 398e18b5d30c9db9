"""RUNDIR/slurm/jobs.json: every SLURM job of a run, so that `status` and `submit --resume` see one run.

    {"engine": EngineConfig, "profile": SlurmProfile,
     "plan": the planning request of a prep job (PredictConfig + shard size), or null,
     "submissions": [Submission, ...]}  (oldest first)

A submission is a prep job (it plans the run, then makes a submission of its own, `parent_job_id` = its id), or
shard arrays (task -> shard) plus one aggregation job. A submission is recorded after each of its jobs is
accepted by sbatch (same `id`, updated in place), so a submitter killed between two arrays leaves every array it
submitted on record.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from virnucpro.config import EngineConfig, ModelPaths, PredictConfig
from virnucpro.errors import VirNucProError
from virnucpro.io.atomic import write_text_atomic
from virnucpro.slurm.profile import SlurmProfile
from virnucpro.slurm.sizing import ShardSize

JOBS_FILE = "jobs.json"


class SlurmError(VirNucProError):
    """SLURM refused or is missing (sbatch not found, submission rejected, jobs still running)."""

    exit_code = 5


@dataclass(frozen=True)
class Submission:
    array_job_id: str  # the first array ("" when none); all of them in array_job_ids
    tasks: dict[int, str]  # shard index -> SLURM job id of its task ("123_4"; "123" for a one-task array)
    aggregate_job_id: str  # "" until submitted (or for a prep job's submission)
    submitted: str = ""
    resume: bool = False
    array_job_ids: tuple[str, ...] = ()
    prep_job_id: str = ""  # a prep job: plans the run, then submits the shards itself (parent_job_id = this)
    parent_job_id: str = ""  # the prep job that made this submission
    sizing: dict = field(default_factory=dict)  # the figures the shard plan and the arrays were cut by
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def to_dict(self) -> dict:
        data = asdict(self)
        data["tasks"] = {str(shard): job for shard, job in self.tasks.items()}
        data["array_job_ids"] = list(self.array_job_ids)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Submission":
        data = dict(data)
        data["tasks"] = {int(shard): job for shard, job in data["tasks"].items()}
        arrays = data.get("array_job_ids") or ([data["array_job_id"]] if data.get("array_job_id") else [])
        data["array_job_ids"] = tuple(arrays)
        data.setdefault("id", "")
        return cls(**data)

    def with_array(self, array_id: str, tasks: dict[int, str]) -> "Submission":
        arrays = (*self.array_job_ids, array_id)
        return replace(self, array_job_id=arrays[0], array_job_ids=arrays, tasks={**self.tasks, **tasks})


@dataclass(frozen=True)
class PlanRequest:
    """What a prep job plans: the run's configuration and how to size its shards."""

    config: PredictConfig
    size: ShardSize

    def to_dict(self) -> dict:
        config = asdict(self.config)
        config.update(input=str(self.config.input), outdir=str(self.config.outdir))
        return {"config": config, "size": self.size.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> "PlanRequest":
        config = dict(data["config"])
        config.update(input=Path(config["input"]), outdir=Path(config["outdir"]),
                      models=ModelPaths(**config["models"]), engine=EngineConfig(**config["engine"]))
        return cls(PredictConfig(**config), ShardSize(**data["size"]))


@dataclass
class JobsFile:
    """The settings of the run's tasks, the prep job's planning request and every submission, newest last."""

    engine: EngineConfig
    profile: SlurmProfile
    submissions: list[Submission] = field(default_factory=list)
    plan: dict | None = None  # PlanRequest.to_dict() of the run's prep job

    def save(self, rundir: Path) -> None:
        data = {"engine": asdict(self.engine), "profile": asdict(self.profile), "plan": self.plan,
                "submissions": [s.to_dict() for s in self.submissions]}
        write_text_atomic(jobs_path(rundir), json.dumps(data, indent=1))

    @classmethod
    def load(cls, rundir: Path) -> "JobsFile":
        path = jobs_path(rundir)
        try:
            data = json.loads(path.read_text())
            profile = dict(data["profile"], sbatch_flags=tuple(data["profile"].get("sbatch_flags", ())))
            return cls(EngineConfig(**data["engine"]), SlurmProfile(**profile),
                       [Submission.from_dict(s) for s in data["submissions"]], data.get("plan"))
        except FileNotFoundError:
            raise SlurmError(f"{path}: no SLURM submission recorded here (submit with `virnucpro submit`)") from None
        except (ValueError, KeyError, TypeError) as error:
            raise SlurmError(f"{path}: unreadable ({error})") from None

    def latest_job_of_shard(self) -> dict[int, str]:
        jobs: dict[int, str] = {}
        for submission in self.submissions:
            jobs.update(submission.tasks)
        return jobs

    def latest_prep(self) -> Submission | None:
        return next((s for s in reversed(self.submissions) if s.prep_job_id), None)

    def record(self, submission: Submission) -> None:
        """Add the submission, or update the one recorded with its id."""
        for position, earlier in enumerate(self.submissions):
            if submission.id and earlier.id == submission.id:
                self.submissions[position] = submission
                return
        self.submissions.append(submission)


def jobs_path(rundir: Path) -> Path:
    return Path(rundir) / "slurm" / JOBS_FILE


def logs_folder(rundir: Path) -> Path:
    return Path(rundir).resolve() / "slurm" / "logs"


def prep_error_path(rundir: Path) -> Path:
    """Where a failed prep job leaves its one-line error (shown by `virnucpro status`)."""
    return Path(rundir) / "slurm" / "prep-error.txt"


def record_submission(rundir: Path, engine: EngineConfig, profile: SlurmProfile, submission: Submission,
                      plan: PlanRequest | None = None) -> None:
    path = jobs_path(rundir)
    jobs = JobsFile.load(rundir) if path.exists() else JobsFile(engine, profile)
    jobs.engine, jobs.profile = engine, profile
    if plan is not None:
        jobs.plan = plan.to_dict()
    jobs.record(submission)
    jobs.save(rundir)
