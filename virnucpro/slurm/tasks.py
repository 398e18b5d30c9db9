"""What the SLURM jobs run (pickled by submitit): one shard per array task, then the aggregation (the prep job's
task is in slurm.prep_job).

Both are submitit `Checkpointable`: on a time-limit warning (USR2, `signal_delay_s` before the limit) or a
preemption, submitit calls `checkpoint()`, stores the returned submission and requeues the job. Nothing has to be
saved at that moment: every finished part is already an atomic file, and `run_shard` skips recorded parts when
the requeued task starts again. A task SLURM restarts by itself (`scontrol requeue`, node failure) resumes the
same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from submitit.core.utils import DelayedSubmission
from submitit.helpers import Checkpointable

from virnucpro.config import EngineConfig, EnvConfig
from virnucpro.run.aggregate import aggregate
from virnucpro.run.options import RunOptions
from virnucpro.run.rundir import RunDir, attach_log_file
from virnucpro.run.shard_process import score_shard

log = logging.getLogger(__name__)


@dataclass
class ShardTask(Checkpointable):
    rundir: str
    index: int
    engine: EngineConfig  # from `submit`; model files and precision come from the run's manifest
    # (engine) -> scorer; None: the real engine on the manifest's model files (see run.shard_process.score_shard)
    scorer_factory: Callable | None = None

    def __call__(self) -> dict:
        configure_logging()
        env = EnvConfig.from_environ()  # this job's environment: read once, here at its entry point
        attach_log_file(RunDir(self.rundir), f"shard{self.index:04d}")
        log.info("shard %d of %s (SLURM job %s, restart %d)", self.index, self.rundir, env.slurm_job_id,
                 env.slurm_restart_count)
        result = score_shard(self.rundir, self.index, env, device=self.engine.device, options=RunOptions.from_env(env),
                             engine=self.engine, scorer_factory=self.scorer_factory)
        return {"shard": self.index, "frames_scored": result.frames_scored, "skipped": result.skipped,
                "restart": env.slurm_restart_count}

    def checkpoint(self, *args, **kwargs) -> DelayedSubmission:
        log.warning("shard %d: time limit or preemption; requeueing (finished parts are kept)", self.index)
        return DelayedSubmission(self, *args, **kwargs)


@dataclass
class AggregateTask(Checkpointable):
    rundir: str

    def __call__(self):
        configure_logging()
        return aggregate(Path(self.rundir), RunOptions.from_env(EnvConfig.from_environ()))


def configure_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
