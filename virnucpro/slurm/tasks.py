"""What the SLURM jobs run (pickled by submitit): one shard per array task, then the aggregation.

Both are submitit `Checkpointable`: on a time-limit warning (USR2, `signal_delay_s` before the limit) or a
preemption, submitit calls `checkpoint()`, stores the returned submission and requeues the job. Nothing has to be
saved at that moment: every finished part is already an atomic file, and `run_shard` skips recorded parts when
the requeued task starts again. A task SLURM restarts by itself (`scontrol requeue`, node failure) resumes the
same way.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

from submitit.core.utils import DelayedSubmission
from submitit.helpers import Checkpointable

from virnucpro.config import EngineConfig, EnvConfig

log = logging.getLogger(__name__)


@dataclass
class ShardTask(Checkpointable):
    rundir: str
    index: int
    engine: EngineConfig  # from `submit`; model files and precision come from the run's manifest
    block_delay_s: float = 0.0  # tests only: slows every scored block so a task can be interrupted mid-shard

    def __call__(self) -> dict:
        from virnucpro.run.command import manifest_config
        from virnucpro.run.multigpu import ScorerFactory, select_devices
        from virnucpro.run.options import default_options
        from virnucpro.run.rundir import RunDir, attach_log_file
        from virnucpro.run.shard import run_shard

        _configure_logging()
        env = EnvConfig.from_environ()
        attach_log_file(RunDir(self.rundir), f"shard{self.index:04d}")
        log.info("shard %d of %s (SLURM job %s, restart %d)", self.index, self.rundir, env.slurm_job_id,
                 env.slurm_restart_count)
        cfg = manifest_config(Path(self.rundir), self.engine.device)
        device = select_devices(cfg.engine, 1)[0]
        engine = replace(self.engine, device=device, precision=cfg.engine.precision)
        scorer = ScorerFactory(cfg.models, env, cfg.chunk_length)(engine)
        if self.block_delay_s > 0:
            scorer = SlowScorer(scorer, self.block_delay_s)
        result = run_shard(Path(self.rundir), self.index, scorer, options=default_options(), device=device)
        return {"shard": self.index, "frames_scored": result.frames_scored, "skipped": result.skipped,
                "restart": env.slurm_restart_count}

    def checkpoint(self, *args, **kwargs) -> DelayedSubmission:
        log.warning("shard %d: time limit or preemption; requeueing (finished parts are kept)", self.index)
        return DelayedSubmission(self, *args, **kwargs)


@dataclass
class AggregateTask(Checkpointable):
    rundir: str

    def __call__(self):
        from virnucpro.run.aggregate import aggregate
        from virnucpro.run.options import default_options

        _configure_logging()
        return aggregate(Path(self.rundir), default_options())


class SlowScorer:
    """A Scorer that scores in blocks of at most `block_frames` and sleeps after each one (test knob: gives a
    test time to requeue or kill a task between two checkpoint parts)."""

    def __init__(self, scorer, delay_s: float):
        self._scorer = scorer
        self._delay_s = delay_s

    def __getattr__(self, name):
        return getattr(self._scorer, name)

    def score_range(self, source, start: int, stop: int, *, block_frames: int = 4096, **options):
        for first in range(start, stop, block_frames):
            last = min(first + block_frames, stop)
            for block in self._scorer.score_range(source, first, last, block_frames=block_frames, **options):
                yield block
                time.sleep(self._delay_s)


def _configure_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
