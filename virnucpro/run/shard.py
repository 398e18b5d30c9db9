"""Score one shard of the plan into checkpoint parts; a restart verifies what is there and fills the gaps.

Parts are handed to a writer thread, so the GPU loop never waits for HDF5 or fsync; the shard's `.done`
marker is written only after the last part is on disk.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from virnucpro.errors import RunStateError, plain_line
from virnucpro.io.prep_files import FrameSource
from virnucpro.run.dedup import scoring_source
from virnucpro.run.lock import hold_lock
from virnucpro.run.manifest import Manifest
from virnucpro.run.numerics import record_numerics
from virnucpro.run.options import RunOptions
from virnucpro.run.parts import (PartData, PartRef, is_done, list_parts, read_checked_part, write_done,
                                 write_part)
from virnucpro.run.rundir import HEARTBEAT, LOCK, RunDir, disk_errors, remove_temp_files
from virnucpro.run.telemetry import Heartbeat, Telemetry
from virnucpro.tokenize.protein import esm_tokens

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (frames, tokens) just scored


@dataclass
class ShardResult:
    index: int
    frames_scored: int
    skipped: bool


def checked_parts(shard_dir: Path, source: FrameSource, start: int, stop: int, with_embeddings: bool
                  ) -> Iterator[tuple[PartRef, PartData]]:
    """The parts that hold exactly their prepared frames, unaltered (content sha256), non-overlapping, in order,
    each with its content (read once); bad or redundant ones are deleted with a warning naming the part and why.
    The one place that decides whether a part is trusted (resume and aggregation)."""
    covered = start
    for ref in list_parts(shard_dir):
        inside = start <= ref.start < ref.stop <= stop
        part, problem = None, None if inside else "outside this shard"
        if problem is None and ref.start < covered:
            problem = "overlaps an earlier part"
        if problem is None:
            part, problem = read_checked_part(ref, source.header_lines(ref.start, ref.stop), with_embeddings)
        if problem:
            log.warning("%s: %s; deleted, it will be scored again", ref.path, plain_line(problem))
            ref.path.unlink(missing_ok=True)
            continue
        covered = ref.stop
        yield ref, part


def verified_parts(shard_dir: Path, source: FrameSource, start: int, stop: int, with_embeddings: bool) -> list[PartRef]:
    """The trusted parts of a shard (checked_parts), without their content."""
    return [ref for ref, _ in checked_parts(shard_dir, source, start, stop, with_embeddings)]


def missing_ranges(start: int, stop: int, parts: list[PartRef]) -> list[tuple[int, int]]:
    gaps, cursor = [], start
    for ref in parts:
        if ref.start > cursor:
            gaps.append((cursor, ref.start))
        cursor = max(cursor, ref.stop)
    if cursor < stop:
        gaps.append((cursor, stop))
    return gaps


class PartWriter:
    """Writes parts on a background thread; the first write error is raised in the scoring thread."""

    def __init__(self, shard_dir: Path, options: RunOptions, on_written: Callable[[PartData, float], None]):
        self.shard_dir, self.options, self.on_written = shard_dir, options, on_written
        self.queue: queue.Queue = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, name=f"parts-{shard_dir.name}", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while (part := self.queue.get()) is not None:
            if self.error is not None:
                continue  # drain so submit() never blocks after a failure
            try:
                started = time.perf_counter()
                write_part(self.shard_dir, part, before_commit=lambda: self.options.on_event("part-write"))
                self.options.on_event("part")
                self.on_written(part, time.perf_counter() - started)
            except BaseException as error:  # noqa: BLE001 - re-raised in the scoring thread
                self.error = error

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def submit(self, part: PartData) -> None:
        self._raise()
        self.queue.put(part)

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        self._raise()


class PartBuffer:
    """Collects scored blocks until a part is due (enough frames or enough seconds)."""

    def __init__(self, options: RunOptions):
        self.options = options
        self.blocks: list = []
        self.frames = 0
        self.since = time.perf_counter()

    def add(self, block) -> None:
        self.blocks.append(block)
        self.frames += len(block.ids)

    def due(self) -> bool:
        return self.frames >= self.options.part_frames or time.perf_counter() - self.since >= self.options.part_seconds

    def take(self) -> PartData | None:
        if not self.blocks:
            return None
        join = lambda name: (None if getattr(self.blocks[0], name) is None  # noqa: E731
                             else np.concatenate([getattr(b, name) for b in self.blocks]))
        part = PartData(self.blocks[0].start, [i for b in self.blocks for i in b.ids],
                        np.concatenate([b.scores for b in self.blocks]), join("dna"), join("protein"))
        self.blocks, self.frames, self.since = [], 0, time.perf_counter()
        return part


def _score_gap(scorer, source, gap, shard_start, keep, options, writer, progress, device) -> int:
    buffer, cursor = PartBuffer(options), gap[0]
    block_frames = max(1, min(options.block_frames, options.part_frames))
    if device == "cpu":
        block_frames = min(block_frames, options.cpu_block_frames)
    for block in scorer.score_range(source, gap[0], gap[1], keep_embeddings=keep, block_frames=block_frames,
                                    grid_start=shard_start):
        if block.start != cursor:
            raise RunStateError(f"scorer returned frames from {block.start}, expected {cursor}")
        cursor += len(block.ids)
        buffer.add(block)
        options.on_event("block")
        progress(len(block.ids), int(esm_tokens(source.aa_lengths[block.start:cursor]).sum()))
        if buffer.due():
            writer.submit(buffer.take())
    if (rest := buffer.take()) is not None:
        writer.submit(rest)
    if cursor != gap[1]:
        raise RunStateError(f"scorer stopped at frame {cursor}, expected {gap[1]}")
    return gap[1] - gap[0]


def _part_logger(telemetry: Telemetry, index: int, device: str, source: FrameSource, scorer,
                 beat: Heartbeat) -> Callable:
    last = {"time": time.perf_counter()}

    def on_written(part: PartData, write_seconds: float) -> None:
        beat.checkpointed(len(part.ids))
        now = time.perf_counter()
        seconds, last["time"] = now - last["time"], now
        tokens = int(esm_tokens(source.aa_lengths[part.start:part.stop]).sum())
        stats = getattr(scorer, "stats", None)
        telemetry.event("part", shard=index, device=device, start=part.start, stop=part.stop, frames=len(part.ids),
                        tokens=tokens, seconds=round(seconds, 4), frames_per_s=len(part.ids) / max(seconds, 1e-9),
                        tokens_per_s=tokens / max(seconds, 1e-9), write_seconds=round(write_seconds, 4),
                        engine=stats.as_dict() if hasattr(stats, "as_dict") else None,
                        placed_seconds=getattr(scorer, "placed_seconds", None))
    return on_written


def run_shard(rundir, index: int, scorer, *, options: RunOptions | None = None, device: str = "cpu",
              progress: Progress | None = None) -> ShardResult:
    """Score shard `index` of the run in `rundir` with a loaded scorer; idempotent and resumable. Holds the shard's
    lock meanwhile (RunLockedError when another live process scores it)."""
    options = options or RunOptions()
    run = RunDir(rundir)
    manifest = Manifest.load(run.manifest)
    manifest.shard(index)
    shard_dir = run.shard_dir(index)
    if is_done(shard_dir):
        return ShardResult(index, 0, skipped=True)
    with disk_errors(run.root):
        shard_dir.mkdir(parents=True, exist_ok=True)
        with hold_lock(shard_dir / LOCK, f"shard {index}", f"shard {index} of {run.root}"):
            if is_done(shard_dir):  # finished by the process that held the lock before us
                return ShardResult(index, 0, skipped=True)
            return _run_pending(run, manifest, index, scorer, options, device, progress or (lambda f, t: None))


def _run_pending(run, manifest, index, scorer, options, device, progress) -> ShardResult:
    start, stop, _tokens = manifest.shards[index]
    shard_dir = run.shard_dir(index)
    telemetry = Telemetry(run.telemetry)
    source = scoring_source(run, manifest)
    keep = manifest.identity.save_embeddings
    stale = remove_temp_files(shard_dir)
    parts = verified_parts(shard_dir, source, start, stop, keep)
    gaps = missing_ranges(start, stop, parts)
    telemetry.event("shard_start", shard=index, device=device, resumed=bool(parts or stale),
                    frames_missing=sum(b - a for a, b in gaps), stale_temp_files=stale)
    if changed := record_numerics(shard_dir, (getattr(scorer, "identity", None) or {}).get("numerics"), bool(parts)):
        telemetry.event("numerics_changed", shard=index, fields=changed)
    started = time.perf_counter()
    scored = 0
    with Heartbeat(shard_dir / HEARTBEAT, index, device, (stop - start) - sum(b - a for a, b in gaps)) as beat:
        on_written = _part_logger(telemetry, index, device, source, scorer, beat)
        writer = PartWriter(shard_dir, options, on_written)
        pulse = lambda frames, tokens: (beat.advance(frames, tokens), progress(frames, tokens))  # noqa: E731
        try:
            for gap in gaps:
                scored += _score_gap(scorer, source, gap, start, keep, options, writer, pulse, device)
        finally:
            writer.close()
        if missing_ranges(start, stop, list_parts(shard_dir)):
            raise RunStateError(f"{shard_dir}: parts do not cover frames {start}-{stop} after scoring")
        seconds = time.perf_counter() - started
        write_done(shard_dir, {"frames": stop - start, "scored_now": scored, "seconds": round(seconds, 3),
                               "device": device})
    telemetry.event("shard_done", shard=index, device=device, frames=stop - start, scored=scored,
                    seconds=round(seconds, 3))
    options.on_event("shard-done")
    return ShardResult(index, scored, skipped=False)
