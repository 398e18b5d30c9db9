"""Plan a run: prepare the frames, index them, de-duplicate them, split the frames to score into token-balanced
shards, write the manifest.

Idempotent: on an existing run directory it checks that input, models, chunk length, precision and the
embedding choice are unchanged and returns the stored manifest (RunStateError naming what differs otherwise).
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

from virnucpro.config import EnvConfig, PredictConfig
from virnucpro.errors import InputError
from virnucpro.io.mapped import iter_chunks
from virnucpro.io.prep_files import FrameSource, build_index
from virnucpro.run.checksums import ChecksumCache
from virnucpro.run.dedup import plan_dedup, unique_source
from virnucpro.run.manifest import Manifest, RunIdentity, check_resumable
from virnucpro.run.models import MODEL_ROLES, resolve_models
from virnucpro.run.multigpu import select_devices
from virnucpro.run.options import RunOptions
from virnucpro.run.rundir import RunDir, disk_errors
from virnucpro.run.telemetry import Telemetry

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
        return np.asarray(self.aa_lengths[frames], dtype=np.int64) + 2

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
    options.on_event("index")
    plan = plan_frames(run.prep, cfg.dedup, min_shards, options, telemetry)
    manifest = Manifest(identity, plan.frames, plan.tokens, plan.shards, dedup=plan.dedup,
                        unique_frames=plan.unique_frames, frame_tokens=plan.frame_tokens,
                        created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    options.on_event("plan")
    manifest.save(run.manifest)  # last: its presence means prep and index are complete
    log.info("planned %d frames (%d tokens) in %d shards", manifest.scored_frames, manifest.tokens, len(plan.shards))
    return manifest
