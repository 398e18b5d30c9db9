"""`predict` in one call: plan (or resume) the run directory, score every pending shard, aggregate."""

from __future__ import annotations

import logging

from virnucpro.config import EnvConfig, PredictConfig
from virnucpro.errors import RunStateError
from virnucpro.run.aggregate import AggregateReport, aggregate
from virnucpro.run.multigpu import run_shards, select_devices
from virnucpro.run.options import RunOptions
from virnucpro.run.plan import plan_run
from virnucpro.run.recall import settings_with
from virnucpro.run.session import run_session
from virnucpro.run.status import pending_shards

log = logging.getLogger(__name__)


def predict_run(cfg: PredictConfig, env: EnvConfig, *, scorer_factory=None, options: RunOptions | None = None,
                prepare=None, consensus_format: str | None = None) -> AggregateReport:
    """Holds the run directory throughout (run.session: lock, log, no skeleton left by a failed first attempt).
    consensus_format: None keeps what the run directory has recorded (published for a new one)."""
    options = options or RunOptions()
    devices = select_devices(cfg.engine, cfg.gpus)
    gpus = sum(device.startswith("cuda") for device in devices)
    with run_session(cfg.outdir, "predict"):
        manifest = plan_run(cfg, env, gpus=gpus, options=options, prepare=prepare)
        log.info("%s: %d frames in %d shards on %s", cfg.outdir, manifest.frames, len(manifest.shards),
                 ", ".join(devices))
        run_shards(cfg.outdir, cfg, env, devices=devices, scorer_factory=scorer_factory, options=options)
        settings = settings_with(cfg.outdir, **({"consensus_format": consensus_format} if consensus_format else {}))
        try:
            return aggregate(cfg.outdir, options, settings=settings)
        except RunStateError:
            if not pending_shards(cfg.outdir):
                raise
            # a part failed its check at aggregation (deleted, with a warning naming it): score it again, once
            log.warning("%s: scoring again the parts that failed verification", cfg.outdir)
            run_shards(cfg.outdir, cfg, env, devices=devices, scorer_factory=scorer_factory, options=options)
            return aggregate(cfg.outdir, options, settings=settings)
