"""Which frames of a scored block `--precision accurate` computes again in fp32.

Half-precision scores differ from fp32's by a few thousandths at most (docs/benchmarks.md, "Numerics"), so a call
can only differ from the fp32 reference's when it sits that close to its decision boundary. Two decisions are
made from scores: a frame's own call (score2 >= score1) and its chunk's consensus (best score2 of the chunk's
frames >= their best score1, outputs.consensus). A frame is rechecked when either is closer than the margin: its
own |score2 - score1|, or, for the frames holding a chunk's best score2 and best score1, the gap between them.

A chunk is seen whole only when all its frames are in one block; blocks follow a fixed grid (engine.batches), so
a chunk cut by a block edge is checked frame by frame only — one chunk per block edge at most.
"""

from __future__ import annotations

import numpy as np

from virnucpro.outputs.chunks import FRAME_SUFFIX_LENGTH


def rows_to_recheck(ids: list[str], scores: np.ndarray, margin: float) -> np.ndarray:
    """Ascending positions of the frames whose frame call or chunk call is within `margin` of its boundary.

    `scores` is [n, 2] (score1 = others, score2 = virus); non-finite rows are left to the non-finite guard."""
    if not len(ids):
        return np.zeros(0, dtype=np.int64)
    others, virus = scores[:, 0], scores[:, 1]
    near = np.abs(virus - others) < margin
    starts = _chunk_starts(ids)
    best_virus = np.maximum.reduceat(virus, starts)
    best_others = np.maximum.reduceat(others, starts)
    close_chunks = np.flatnonzero(np.abs(best_virus - best_others) < margin)
    if close_chunks.size:
        near[_deciding_rows(virus, starts, close_chunks)] = True
        near[_deciding_rows(others, starts, close_chunks)] = True
    return np.flatnonzero(near & np.isfinite(scores).all(1))


def _chunk_starts(ids: list[str]) -> np.ndarray:
    """Row where each run of frames of one chunk begins (a chunk's frames are consecutive)."""
    chunks = np.array([frame_id[:-FRAME_SUFFIX_LENGTH] for frame_id in ids])
    return np.flatnonzero(np.r_[True, chunks[1:] != chunks[:-1]])


def _deciding_rows(values: np.ndarray, starts: np.ndarray, chunks: np.ndarray) -> np.ndarray:
    """For each chunk in `chunks`, the row of its largest value (the first, on ties)."""
    stops = np.r_[starts[1:], len(values)]
    return np.array([starts[c] + int(np.argmax(values[starts[c]:stops[c]])) for c in chunks], dtype=np.int64)
