"""Which frames of a scored block `--precision accurate` computes again in fp32.

Half-precision scores differ from fp32's by a few thousandths at most (docs/benchmarks.md, "Numerics"), so a call
can only differ from the fp32 reference's when it sits that close to its decision boundary. Two decisions are
made from scores: a frame's own call (score2 >= score1) and its chunk's consensus (best score2 of the chunk's
frames >= their best score1, outputs.consensus). A frame is rechecked when its own |score2 - score1| is under the
margin, and all frames of a chunk are when the gap between the chunk's best score2 and best score1 is (rechecking
only the two deciding frames is not enough: once one of them is exact, another frame's half-precision score can
become the best). With every error under half the margin, both calls then equal fp32's (tests/test_recheck.py).

A chunk is seen whole only when all its frames are in one block; blocks follow a fixed grid (engine.batches), so
a chunk cut by a block edge is checked frame by frame only — one chunk per block edge at most.
"""

from __future__ import annotations

import numpy as np

from virnucpro.outputs.chunks import FRAME_SUFFIX_LENGTH


def rows_to_recheck(ids: list[str], scores: np.ndarray, margin: float) -> np.ndarray:
    """Ascending positions of the frames to compute again: those whose own call is within `margin` of its boundary,
    and every frame of a chunk whose consensus is (so the whole chunk is then decided in fp32).

    `scores` is [n, 2] (score1 = others, score2 = virus). Non-finite rows are left to the non-finite guard and, as
    in the consensus (outputs.chunks), out of their chunk's maxima."""
    if not len(ids):
        return np.zeros(0, dtype=np.int64)
    finite = np.isfinite(scores).all(1)
    others, virus = (np.where(finite, scores[:, column], -np.inf) for column in (0, 1))
    starts = _chunk_starts(ids)
    with np.errstate(invalid="ignore"):  # a non-finite frame, a chunk without a finite one: -inf - -inf, never near
        near = np.abs(virus - others) < margin
        close = np.abs(np.maximum.reduceat(virus, starts) - np.maximum.reduceat(others, starts)) < margin
    near |= np.repeat(close, np.diff(np.r_[starts, len(ids)]))
    return np.flatnonzero(near & finite)


def _chunk_starts(ids: list[str]) -> np.ndarray:
    """Row where each run of frames of one chunk begins (a chunk's frames are consecutive)."""
    chunks = np.array([frame_id[:-FRAME_SUFFIX_LENGTH] for frame_id in ids])
    return np.flatnonzero(np.r_[True, chunks[1:] != chunks[:-1]])
