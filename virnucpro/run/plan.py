"""Plan a run: prepare the frames, index them, split them into token-balanced shards, write the manifest.

Idempotent: on an existing run directory it checks that input, models, chunk length, precision and the
embedding choice are unchanged and that the prepared files are those it planned, and returns the stored manifest
(RunStateError naming what differs otherwise). Input and models are checked before anything is written; the run
directory is held (run.session) while planning.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from virnucpro.config import EngineConfig, EnvConfig, ModelPaths, PredictConfig
from virnucpro.errors import RunLockedError
from virnucpro.io.prep_files import FrameSource, build_index
from virnucpro.models.precision import CPU_NUMERICS
from virnucpro.run.checksums import ChecksumCache, check_prepared
from virnucpro.run.lock import inspect_lock
from virnucpro.run.manifest import Manifest, RunIdentity, check_resumable
from virnucpro.run.models import MODEL_ROLES, resolve_models
from virnucpro.run.multigpu import select_devices
from virnucpro.run.options import RunOptions
from virnucpro.run.rundir import (LOCK, PREP_NAMES, RunDir, clear_results, disk_errors, remove_shard_files,
                                  remove_stale_temps)
from virnucpro.run.session import run_session
from virnucpro.run.telemetry import Telemetry
from virnucpro.run.validate import check_input, check_model_files

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


def effective_precision(engine: EngineConfig, gpus: int) -> str:
    """The --precision mode that really computes: on the CPU every mode runs fp32 (models.precision.CPU_NUMERICS),
    so a CPU run records fp32 and may be resumed with any --precision on the CPU."""
    return CPU_NUMERICS.mode if engine.device == "cpu" or gpus == 0 else engine.precision


def run_identity(cfg: PredictConfig, files: ModelPaths, precision: str, cache: ChecksumCache) -> RunIdentity:
    models = {role: cache.file_identity(Path(getattr(files, role))) for role in MODEL_ROLES}
    identity = RunIdentity(cache.file_identity(Path(cfg.input)), cfg.chunk_length, models, precision,
                           cfg.save_embeddings)
    cache.save()
    return identity


def default_prepare(input_path: Path, outdir: Path, chunk_length: int) -> object:
    from virnucpro.prep.pipeline import run_prep

    return run_prep(input_path, outdir, chunk_length)


def plan_run(cfg: PredictConfig, env: EnvConfig, *, gpus: int | None = None, min_shards: int = 0,
             options: RunOptions | None = None, prepare: Prepare | None = None) -> Manifest:
    """Create or resume the run directory cfg.outdir and return its manifest.

    gpus (default: the GPUs `predict` would use; 0 = the CPU) sets the minimum shard count of a new plan and the
    precision that really runs."""
    options = options or RunOptions()
    check_input(cfg.input)
    files = resolve_models(cfg, env)
    if gpus is None:
        gpus = sum(device.startswith("cuda") for device in select_devices(cfg.engine, cfg.gpus))
    if cfg.force_restart or not RunDir(cfg.outdir).manifest.exists():
        check_model_files(files)  # before anything is written: a bad model never gets into a manifest
    with run_session(cfg.outdir, "plan") as run, disk_errors(run.root):
        cache = ChecksumCache(run.checksum_cache)
        identity = run_identity(cfg, files, effective_precision(cfg.engine, gpus), cache)
        existing = Manifest.load(run.manifest) if run.manifest.exists() else None
        remove_stale_temps(run, tuple(existing.prep_files) if existing else ())
        if existing is not None and not cfg.force_restart:
            check_resumable(run.manifest, existing, identity)
            check_prepared(run.prep, existing.prep_files, cache)
            return existing
        if existing is not None:
            refuse_busy_shards(run)
            log.warning("--force-restart: removing this run's prepared files, parts and outputs in %s", run.root)
            clear_results(run, tuple(existing.prep_files))
        return _plan_new(run, cfg, identity, max(min_shards, shards_for_gpus(gpus)), options,
                         prepare or default_prepare, cache)


def refuse_busy_shards(run: RunDir) -> None:
    """--force-restart never deletes parts under a live process (a SLURM task, another predict)."""
    for shard_dir in run.shard_dirs():
        state = inspect_lock(shard_dir / LOCK)
        if state is not None and state.alive:
            who = state.holder.describe() if state.holder else "another process"
            raise RunLockedError(f"{shard_dir}: being scored by {who}; stop it before --force-restart")


def shards_for_gpus(gpus: int) -> int:
    """Fewest shards for a new plan: one on a single device (every shard boundary drains the GPU's pipeline),
    two per GPU on several so that a GPU that finishes early takes over queued work. Large inputs get more
    shards anyway from shard_tokens."""
    return 1 if gpus <= 1 else 2 * gpus


def _plan_new(run: RunDir, cfg: PredictConfig, identity: RunIdentity, min_shards: int, options: RunOptions,
              prepare: Prepare, cache: ChecksumCache) -> Manifest:
    telemetry = Telemetry(run.create().telemetry)
    for shard_dir in run.shard_dirs():  # parts of an unfinished earlier plan are meaningless now
        remove_shard_files(shard_dir)
    before = _listing(run.prep)
    with telemetry.stage("prep"):
        prepare(Path(cfg.input), run.prep, cfg.chunk_length)
    options.on_event("prep")
    with telemetry.stage("index"):
        build_index(run.prep)
        source = FrameSource(run.prep)
    costs = frame_costs(source)
    shards = plan_shards(costs, min_shards, options.shard_tokens)
    after = _listing(run.prep)
    written = sorted(name for name, inode in after.items() if before.get(name) != inode or name in PREP_NAMES)
    manifest = Manifest(identity, len(source), int(costs.sum()), shards,
                        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                        prep_files={name: cache.sha256(run.prep / name) for name in written})
    cache.save()
    options.on_event("plan")
    manifest.save(run.manifest)  # last: its presence means prep and index are complete
    log.info("planned %d frames (%d tokens) in %d shards", manifest.frames, manifest.tokens, len(shards))
    return manifest


def _listing(folder: Path) -> dict[str, int]:
    """Visible files in `folder` -> inode (an atomic write gives a file a new inode: that is how prep's own files
    are told from anything else in the folder)."""
    if not folder.is_dir():
        return {}
    return {p.name: p.stat().st_ino for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}
