"""Frames -> chunks, streamed: the per-chunk maxima the consensus and the summary are made of.

Frames arrive in frame order, block by block; a chunk's frames are contiguous (prep writes them so) but a block
boundary may cut a chunk, so the last chunk of a block is held back until the next block shows where it ends.
A frame whose scores are not finite (NaN after the engine's retry) is left out of its chunk's maxima and counted;
a chunk with no finite frame is not scored (its maxima are NaN).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Sequence

import numpy as np

FRAME_SUFFIX_LENGTH = 2  # F1..F3 / R1..R3


@dataclass
class ChunkBlock:
    """Consecutive chunks in frame order."""

    ids: list[str]
    best_others: np.ndarray  # float32 max score1 over the chunk's finite frames (NaN: none)
    best_virus: np.ndarray  # float32 max score2 over the chunk's finite frames (NaN: none)
    nonfinite: np.ndarray  # int64 frames of the chunk whose scores are not finite

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def scored(self) -> np.ndarray:
        return ~np.isnan(self.best_virus)

    def select(self, mask: np.ndarray) -> "ChunkBlock":
        return ChunkBlock(list(itertools.compress(self.ids, mask.tolist())), self.best_others[mask],
                          self.best_virus[mask], self.nonfinite[mask])

    def part(self, start: int, stop: int | None) -> "ChunkBlock":
        return ChunkBlock(self.ids[start:stop], self.best_others[start:stop], self.best_virus[start:stop],
                          self.nonfinite[start:stop])


def empty_block() -> ChunkBlock:
    return ChunkBlock([], np.zeros(0, np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))


class ChunkGrouper:
    """`add(frame ids, scores [n, 2])` returns the chunks completed so far; `finish()` the last one."""

    def __init__(self) -> None:
        self._held: ChunkBlock = empty_block()

    def add(self, frame_ids: Sequence[str], scores: np.ndarray) -> ChunkBlock:
        if not len(frame_ids):
            return empty_block()
        block = _group(frame_ids, np.asarray(scores, dtype=np.float32))
        if len(self._held) and block.ids[0] == self._held.ids[0]:
            block = _merge_first(self._held, block)
        elif len(self._held):
            block = _concat(self._held, block)
        last = len(block) - 1
        self._held = block.part(last, None)
        return block.part(0, last)

    def finish(self) -> ChunkBlock:
        held, self._held = self._held, empty_block()
        return held


def _group(frame_ids: Sequence[str], scores: np.ndarray) -> ChunkBlock:
    keys = [frame_id[:-FRAME_SUFFIX_LENGTH] for frame_id in frame_ids]
    starts = run_starts(keys)
    finite = np.isfinite(scores).all(axis=1)
    usable = np.where(finite[:, None], scores, np.nan)
    with np.errstate(invalid="ignore"):
        best = np.fmax.reduceat(usable, starts, axis=0)  # fmax skips NaN; all-NaN stays NaN
    nonfinite = np.add.reduceat((~finite).astype(np.int64), starts)
    return ChunkBlock([keys[i] for i in starts.tolist()], best[:, 0], best[:, 1], nonfinite)


def run_starts(keys: list[str]) -> np.ndarray:
    """Index of the first of each run of equal consecutive keys."""
    changes = np.fromiter(map(str.__ne__, keys[1:], keys[:-1]), dtype=bool, count=max(len(keys) - 1, 0))
    return np.concatenate([[0], np.flatnonzero(changes) + 1]).astype(np.int64)


def _merge_first(held: ChunkBlock, block: ChunkBlock) -> ChunkBlock:
    block.best_others[0] = np.fmax(held.best_others[0], block.best_others[0])
    block.best_virus[0] = np.fmax(held.best_virus[0], block.best_virus[0])
    block.nonfinite[0] += held.nonfinite[0]
    return block


def _concat(first: ChunkBlock, second: ChunkBlock) -> ChunkBlock:
    return ChunkBlock(first.ids + second.ids, np.concatenate([first.best_others, second.best_others]),
                      np.concatenate([first.best_virus, second.best_virus]),
                      np.concatenate([first.nonfinite, second.nonfinite]))
