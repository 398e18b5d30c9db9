"""Scored frames in frame order: every prepared frame exactly once, from the shards' verified parts.

Parts hold what the GPU computed: every prepared frame, or, in a de-duplicated run (run.dedup), each distinct
frame once. `iter_scored` fans the distinct frames' scores (and embeddings) out to every occurrence, so its
callers see every prepared frame, with its own id, in prep order, whichever way the run was planned.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np

from virnucpro.errors import RunStateError
from virnucpro.io.mapped import iter_chunks, scratch_array
from virnucpro.io.prep_files import FrameSource
from virnucpro.run.dedup import scoring_source, unique_of_frames
from virnucpro.run.manifest import Manifest
from virnucpro.run.parts import PartData, done_path
from virnucpro.run.rundir import RunDir, remove_temp_files
from virnucpro.run.shard import checked_parts

FANOUT_FRAMES = 1 << 16  # prepared frames per batch yielded by a de-duplicated run
# Temporary tables of distinct frames (memory-mapped, in the run directory): scratch_array names them
# `.fanout.<random>.tmp`, which remove_temp_files knows as temporaries of "fanout".
_SCRATCH = "fanout"


def _shard_parts(run: RunDir, index: int, manifest: Manifest, source: FrameSource,
                 with_embeddings: bool) -> Iterator[PartData]:
    """The verified parts of shard `index` in order, streamed (each read once); a gap, left by a part missing or
    found corrupt (removed), raises once the rest of the shard is checked."""
    start, stop, _ = manifest.shards[index]
    shard_dir = run.shard_dir(index)
    cursor, gap = start, False
    for ref, part in checked_parts(shard_dir, source, start, stop, with_embeddings):
        gap = gap or ref.start != cursor  # nothing after a gap is yielded: it would not be in frame order
        if not gap:
            cursor = ref.stop
            yield part
    if gap or cursor != stop:
        done_path(shard_dir).unlink(missing_ok=True)
        raise RunStateError(f"{shard_dir}: checkpoint parts are missing or corrupt (removed); "
                            "rerun predict (or `virnucpro shard`) to redo them, then aggregate")


def check_plan(manifest: Manifest, source: FrameSource) -> None:
    """The shards cover the frames to score exactly once, in order."""
    bounds = [(start, stop) for start, stop, _ in manifest.shards]
    contiguous = all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    covered = (bounds[0][0], bounds[-1][1]) if bounds else (0, 0)
    if len(source) != manifest.scored_frames or not contiguous or covered != (0, len(source)):
        raise RunStateError(f"manifest shard plan does not cover the {len(source)} frames to score exactly once")


def _computed(run: RunDir, manifest: Manifest, source: FrameSource, with_embeddings: bool) -> Iterator[PartData]:
    """PartData of every shard in order, each verified against the ids of the frames it should hold."""
    for index in range(len(manifest.shards)):
        yield from _shard_parts(run, index, manifest, source, with_embeddings)


def iter_scored(run: RunDir, manifest: Manifest, *, with_embeddings: bool = False) -> Iterator[PartData]:
    """Every prepared frame exactly once, in prep order, in batches; duplicates carry their own ids."""
    source = scoring_source(run, manifest)
    check_plan(manifest, source)
    computed = _computed(run, manifest, source, with_embeddings)
    if manifest.dedup:
        return _fanned_out(run, manifest, computed, with_embeddings)
    return computed


class _DistinctTable:
    """Scores (and embeddings) of the distinct frames, filled in order from the parts, looked up by ordinal.

    Memory-mapped scratch files: a duplicate may refer to any earlier distinct frame, and RAM must not grow with
    the input."""

    def __init__(self, run: RunDir, rows: int, stack):
        self.run, self.rows, self.stack = run, rows, stack
        self.filled = 0
        self.columns: dict[str, np.ndarray] = {}

    def _column(self, name: str, values: np.ndarray) -> np.ndarray:
        if name not in self.columns:
            shape = (self.rows, *values.shape[1:])
            self.columns[name] = self.stack.enter_context(scratch_array(self.run.root, _SCRATCH, np.float32, shape))
        return self.columns[name]

    def add(self, part: PartData) -> None:
        if part.start != self.filled:
            raise RunStateError(f"{self.run.root}: scored parts out of order at distinct frame {self.filled}")
        for name in ("scores", "dna", "protein"):
            values = getattr(part, name)
            if values is not None:
                self._column(name, values)[part.start:part.stop] = values
        self.filled = part.stop

    def take(self, name: str, ordinals: np.ndarray) -> np.ndarray | None:
        return np.asarray(self.columns[name][ordinals]) if name in self.columns else None


def _fanned_out(run: RunDir, manifest: Manifest, computed: Iterator[PartData], with_embeddings: bool):
    prepared = FrameSource(run.prep)
    unique_of = unique_of_frames(run.prep)
    remove_temp_files(run.root, (_SCRATCH,))  # left by a killed aggregation
    with contextlib.ExitStack() as stack:
        table = _DistinctTable(run, manifest.unique_frames, stack)
        for start, stop in iter_chunks(manifest.frames, FANOUT_FRAMES):
            ordinals = np.asarray(unique_of[start:stop])
            while table.filled <= int(ordinals.max()):
                table.add(next(computed))  # the plan check guarantees the parts cover every distinct frame
            dna, protein = (table.take(name, ordinals) if with_embeddings else None for name in ("dna", "protein"))
            yield PartData(start, prepared.ids(start, stop), table.take("scores", ordinals), dna, protein)
