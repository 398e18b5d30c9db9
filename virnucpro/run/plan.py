"""Plan a run: prepare the frames, index them, split them into token-balanced shards, write the manifest.

Idempotent: on an existing run directory it checks that input, models, chunk length, precision and the
embedding choice are unchanged and returns the stored manifest (RunStateError naming what differs otherwise).
"""

from __future__ import annotations

import functools
import logging
import math
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from virnucpro.config import EnvConfig, PredictConfig
from virnucpro.errors import InputError
from virnucpro.io.prep_files import FrameSource, build_index
from virnucpro.run.checksums import ChecksumCache
from virnucpro.run.manifest import Manifest, RunIdentity, check_resumable
from virnucpro.run.models import MODEL_ROLES, resolve_models
from virnucpro.run.multigpu import select_devices
from virnucpro.run.options import RunOptions
from virnucpro.run.rundir import RunDir, disk_errors
from virnucpro.run.telemetry import Telemetry

log = logging.getLogger(__name__)

Prepare = Callable[[Path, Path, int], object]  # run_prep(input, outdir, chunk_length)


def frame_costs(source: FrameSource) -> np.ndarray:
    """Tokens per frame as the GPU sees them: ESM-2 (protein + BOS/EOS) dominates the cost."""
    return source.aa_lengths.astype(np.int64) + 2


def plan_shards(costs: np.ndarray, min_shards: int, target_tokens: int) -> list[tuple[int, int, int]]:
    """Contiguous [start, stop) ranges with about equal token sums: max(min_shards, tokens/target) of them."""
    frames = len(costs)
    if frames == 0:
        return []
    cumulative = np.cumsum(costs)
    total = int(cumulative[-1])
    count = min(frames, max(1, min_shards, math.ceil(total / max(target_tokens, 1))))
    goals = total * np.arange(1, count) / count
    cuts = (np.searchsorted(cumulative, goals, side="left") + 1).tolist()
    bounds = [0]
    for k, cut in enumerate(cuts, start=1):  # keep every shard non-empty
        bounds.append(min(max(cut, bounds[-1] + 1), frames - (count - k)))
    bounds.append(frames)
    return [(a, b, int(cumulative[b - 1] - (cumulative[a - 1] if a else 0))) for a, b in zip(bounds, bounds[1:])]


def run_identity(cfg: PredictConfig, env: EnvConfig, cache: ChecksumCache) -> RunIdentity:
    if not Path(cfg.input).is_file():
        raise InputError(cfg.input, "input file not found")
    files = resolve_models(cfg, env)
    models = {role: cache.file_identity(Path(getattr(files, role))) for role in MODEL_ROLES}
    identity = RunIdentity(cache.file_identity(Path(cfg.input)), cfg.chunk_length, models,
                           cfg.engine.precision, cfg.save_embeddings, cfg.min_length)
    cache.save()
    return identity


def default_prepare(input_path: Path, outdir: Path, chunk_length: int, min_length: int = 0) -> object:
    from virnucpro.prep.pipeline import run_prep

    return run_prep(input_path, outdir, chunk_length, min_length=min_length)


def plan_run(cfg: PredictConfig, env: EnvConfig, *, gpus: int | None = None, min_shards: int = 0,
             options: RunOptions | None = None, prepare: Prepare | None = None) -> Manifest:
    """Create or resume the run directory cfg.outdir and return its manifest.

    gpus (default: the GPUs `predict` would use) only sets the minimum shard count of a new plan."""
    options = options or RunOptions()
    run = RunDir(cfg.outdir).create()
    with disk_errors(run.root):
        identity = run_identity(cfg, env, ChecksumCache(run.checksum_cache))
        if run.manifest.exists():
            existing = Manifest.load(run.manifest)
            if not cfg.force_restart:
                check_resumable(run.manifest, existing, identity)
                return existing
            log.warning("--force-restart: clearing %s", run.root)
            run.clear_results()
        if gpus is None:
            gpus = sum(device.startswith("cuda") for device in select_devices(cfg.engine, cfg.gpus))
        return _plan_new(run, cfg, identity, max(min_shards, shards_for_gpus(gpus)), options,
                         prepare or functools.partial(default_prepare, min_length=cfg.min_length))


def shards_for_gpus(gpus: int) -> int:
    """Fewest shards for a new plan: one on a single device (every shard boundary drains the GPU's pipeline),
    two per GPU on several so that a GPU that finishes early takes over queued work. Large inputs get more
    shards anyway from shard_tokens."""
    return 1 if gpus <= 1 else 2 * gpus


def _plan_new(run: RunDir, cfg: PredictConfig, identity: RunIdentity, min_shards: int, options: RunOptions,
              prepare: Prepare) -> Manifest:
    telemetry = Telemetry(run.telemetry)
    shutil.rmtree(run.shards, ignore_errors=True)  # parts of an unfinished earlier plan are meaningless now
    run.shards.mkdir(parents=True, exist_ok=True)
    with telemetry.stage("prep"):
        prepare(Path(cfg.input), run.prep, cfg.chunk_length)
    options.on_event("prep")
    with telemetry.stage("index"):
        build_index(run.prep)
        source = FrameSource(run.prep)
    costs = frame_costs(source)
    shards = plan_shards(costs, min_shards, options.shard_tokens)
    manifest = Manifest(identity, len(source), int(costs.sum()), shards,
                        created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    options.on_event("plan")
    manifest.save(run.manifest)  # last: its presence means prep and index are complete
    log.info("planned %d frames (%d tokens) in %d shards", manifest.frames, manifest.tokens, len(shards))
    return manifest
