"""Plan a run: prepare the frames, index them, de-duplicate them, split the frames to score into token-balanced
shards, write the manifest.

Idempotent: on an existing run directory it checks that input, models, chunk length, precision and the
embedding choice are unchanged and that the prepared files are those it planned, and returns the stored manifest
(RunStateError naming what differs otherwise). Input and models are checked before anything is written; the run
directory is held (run.session) while planning.
"""

from __future__ import annotations

import functools
import logging
import math
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from virnucpro.config import CPU_PRECISION, EngineConfig, EnvConfig, ModelPaths, PredictConfig
from virnucpro.errors import InputError, RunLockedError
from virnucpro.io.mapped import iter_chunks
from virnucpro.io.prep_files import FrameSource, build_index
from virnucpro.run.checksums import ChecksumCache, check_prepared, shared_cache_path
from virnucpro.run.dedup import plan_dedup, unique_source
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
from virnucpro.tokenize.protein import esm_tokens

log = logging.getLogger(__name__)

COST_CHUNK = 1 << 22  # frames per step when summing or cutting token costs
Prepare = Callable[[Path, Path, int], object]  # run_prep(input, outdir, chunk_length)


class TokenCosts:
    """Tokens per frame as the GPU sees them (ESM-2: protein + BOS/EOS dominates the cost), computed slice by
    slice from memory-mapped residue counts: never a whole per-frame array in memory."""

    def __init__(self, aa_lengths: np.ndarray):
        self.aa_lengths = aa_lengths

    def __len__(self) -> int:
        return len(self.aa_lengths)

    def __getitem__(self, frames: slice) -> np.ndarray:
        return esm_tokens(self.aa_lengths[frames])

    def sum(self) -> int:
        return sum(int(self[a:b].sum()) for a, b in iter_chunks(len(self), COST_CHUNK))


def frame_costs(source: FrameSource) -> TokenCosts:
    return TokenCosts(source.aa_lengths)


def plan_shards(costs, min_shards: int, target_tokens: int, rounding: str = "up") -> list[tuple[int, int, int]]:
    """Contiguous [start, stop) ranges with about equal token sums: max(min_shards, tokens/target) of them,
    tokens/target rounded up (shards of at most target tokens) or down (of at least target tokens).

    `costs`: per-frame tokens, anything that slices into int arrays (an array, TokenCosts); read in chunks."""
    frames = len(costs)
    if frames == 0:
        return []
    total = sum(int(np.sum(costs[a:b])) for a, b in iter_chunks(frames, COST_CHUNK))
    by_size = (math.ceil if rounding == "up" else math.floor)(total / max(target_tokens, 1))
    count = min(frames, max(1, min_shards, by_size))
    cuts = _first_reaching(costs, total * np.arange(1, count) / count) + 1
    bounds = [0]
    for k, cut in enumerate(cuts.tolist(), start=1):  # keep every shard non-empty
        bounds.append(min(max(cut, bounds[-1] + 1), frames - (count - k)))
    bounds.append(frames)
    prefix = _prefix_sums(costs, bounds)
    return [(a, b, int(prefix[k + 1] - prefix[k])) for k, (a, b) in enumerate(zip(bounds, bounds[1:]))]


def _first_reaching(costs, goals: np.ndarray) -> np.ndarray:
    """For each (increasing) goal, the first frame whose cumulative cost reaches it (searchsorted, chunk by chunk)."""
    found, base, pending = np.empty(len(goals), dtype=np.int64), 0, 0
    for a, b in iter_chunks(len(costs), COST_CHUNK):
        cumulative = base + np.cumsum(costs[a:b])
        reached = int(np.searchsorted(goals, cumulative[-1], side="right"))
        found[pending:reached] = a + np.searchsorted(cumulative, goals[pending:reached], side="left")
        pending, base = reached, int(cumulative[-1])
    found[pending:] = len(costs) - 1
    return found


def _prefix_sums(costs, bounds: list[int]) -> np.ndarray:
    """Sum of costs[:bound] for each (increasing) bound."""
    sums, base, position = np.zeros(len(bounds), dtype=np.int64), 0, 0
    for a, b in iter_chunks(len(costs), COST_CHUNK):
        cumulative = base + np.concatenate(([0], np.cumsum(costs[a:b])))
        while position < len(bounds) and bounds[position] <= b:
            sums[position] = cumulative[bounds[position] - a]
            position += 1
        base = int(cumulative[-1])
    return sums


@dataclass(frozen=True)
class FramePlan:
    """What the shards score: every prepared frame, or only the distinct ones (de-duplication)."""

    frames: int  # prepared frames
    tokens: int  # tokens the shards compute
    shards: list[tuple[int, int, int]]  # over the scored frames
    dedup: bool
    unique_frames: int | None  # distinct frames (de-duplicated runs)
    frame_tokens: int  # tokens of every prepared frame: what a run without de-duplication computes


def plan_frames(prep_dir: Path, dedup: bool, min_shards: int, options: RunOptions, telemetry: Telemetry) -> FramePlan:
    """After prep and index: de-duplicate (when asked) and split the frames to score into token-balanced shards."""
    source = FrameSource(prep_dir)
    frame_tokens = frame_costs(source).sum()
    unique = None
    if dedup:
        with telemetry.stage("dedup"):
            unique = plan_dedup(prep_dir, on_event=options.on_event).unique_frames
        source = unique_source(prep_dir)
    costs = frame_costs(source)
    tokens = costs.sum()
    shards = plan_shards(costs, min_shards, options.shard_tokens, options.shard_rounding)
    if dedup:
        log.info("de-duplication: %d of %d frames distinct, %d of %d tokens to compute (%.1f%% saved)", unique,
                 source.prepared_frames, tokens, frame_tokens, 100 * (1 - tokens / max(frame_tokens, 1)))
    return FramePlan(source.prepared_frames, tokens, shards, dedup, unique, frame_tokens)


def effective_precision(engine: EngineConfig, gpus: int) -> str:
    """The --precision mode that really computes: on the CPU every mode runs fp32 (config.CPU_PRECISION),
    so a CPU run records fp32 and may be resumed with any --precision on the CPU."""
    return CPU_PRECISION if engine.device == "cpu" or gpus == 0 else engine.precision


def run_identity(cfg: PredictConfig, files: ModelPaths, precision: str, cache: ChecksumCache) -> RunIdentity:
    models = {role: cache.file_identity(Path(getattr(files, role)), shared=True) for role in MODEL_ROLES}
    identity = RunIdentity(cache.file_identity(Path(cfg.input)), cfg.chunk_length, models, precision,
                           cfg.save_embeddings, cfg.min_length)
    cache.save()
    return identity


def default_prepare(input_path: Path, outdir: Path, chunk_length: int, min_length: int = 0) -> object:
    from virnucpro.prep.pipeline import run_prep

    return run_prep(input_path, outdir, chunk_length, min_length=min_length)


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
        cache = ChecksumCache(run.checksum_cache, shared=shared_cache_path(env.models_dir))
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
                         prepare or functools.partial(default_prepare, min_length=cfg.min_length), cache)


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
    options.on_event("index")
    plan = plan_frames(run.prep, cfg.dedup, min_shards, options, telemetry)
    after = _listing(run.prep)
    written = sorted(name for name, inode in after.items() if before.get(name) != inode or name in PREP_NAMES)
    manifest = Manifest(identity, plan.frames, plan.tokens, plan.shards, dedup=plan.dedup,
                        unique_frames=plan.unique_frames, frame_tokens=plan.frame_tokens,
                        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                        prep_files={name: cache.sha256(run.prep / name) for name in written})
    cache.save()
    options.on_event("plan")
    manifest.save(run.manifest)  # last: its presence means prep and index are complete
    log.info("planned %d frames (%d tokens) in %d shards", manifest.scored_frames, manifest.tokens, len(plan.shards))
    return manifest


def _listing(folder: Path) -> dict[str, int]:
    """Visible files in `folder` -> inode (an atomic write gives a file a new inode: that is how prep's own files
    are told from anything else in the folder)."""
    if not folder.is_dir():
        return {}
    return {p.name: p.stat().st_ino for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}
