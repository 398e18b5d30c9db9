"""`predict` in one call: plan (or resume) the run directory, score every pending shard, aggregate."""

from __future__ import annotations

import logging

from virnucpro.config import EnvConfig, PredictConfig
from virnucpro.run.aggregate import AggregateReport, aggregate
from virnucpro.run.multigpu import run_shards, select_devices
from virnucpro.run.options import RunOptions
from virnucpro.run.plan import plan_run
from virnucpro.run.recall import settings_with
from virnucpro.run.rundir import RunDir, attach_log_file

log = logging.getLogger(__name__)


def predict_run(cfg: PredictConfig, env: EnvConfig, *, scorer_factory=None, options: RunOptions | None = None,
                prepare=None, consensus_format: str | None = None) -> AggregateReport:
    """consensus_format: None keeps what the run directory has recorded (published for a new one)."""
    options = options or RunOptions()
    handler = attach_log_file(RunDir(cfg.outdir).create(), "predict")
    try:
        devices = select_devices(cfg.engine, cfg.gpus)
        gpus = sum(device.startswith("cuda") for device in devices)
        manifest = plan_run(cfg, env, gpus=gpus, options=options, prepare=prepare)
        log.info("%s: %d frames in %d shards on %s", cfg.outdir, manifest.frames, len(manifest.shards), ", ".join(devices))
        run_shards(cfg.outdir, cfg, env, devices=devices, scorer_factory=scorer_factory, options=options)
        changes = {"consensus_format": consensus_format} if consensus_format else {}
        return aggregate(cfg.outdir, options, settings=settings_with(cfg.outdir, **changes))
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
