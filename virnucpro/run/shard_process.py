"""One shard of a planned run scored in a process of its own: what `virnucpro shard` and a SLURM array task run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

from virnucpro.config import EngineConfig, EnvConfig
from virnucpro.run.manifest import manifest_config
from virnucpro.run.multigpu import ScorerFactory, load_scorer, select_devices
from virnucpro.run.options import RunOptions
from virnucpro.run.rundir import RunDir
from virnucpro.run.shard import ShardResult, run_shard


def score_shard(rundir, index: int, env: EnvConfig, *, device: str, options: RunOptions,
                engine: EngineConfig | None = None, scorer_factory: Callable | None = None) -> ShardResult:
    """Score shard `index` on one device (`device`: auto | cpu | cuda | cuda:N) with the run's model files and
    precision (from its manifest).

    engine: the kernel settings a submission chose (its precision is replaced by the run's; its compile cache,
    if unset, by the run's); None: the manifest's defaults. scorer_factory: (EngineConfig) -> scorer; None: the real
    engine on the manifest's model files."""
    cfg = manifest_config(Path(rundir), device)
    chosen = select_devices(cfg.engine, 1)[0]
    base = engine or cfg.engine
    engine = replace(base, device=chosen, precision=cfg.engine.precision,
                     compile_cache=base.compile_cache or cfg.engine.compile_cache)
    scorer = load_scorer(RunDir(rundir), scorer_factory or ScorerFactory(cfg.models, env), engine, chosen)
    return run_shard(Path(rundir), index, scorer, options=options, device=chosen)
