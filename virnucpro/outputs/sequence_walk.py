"""Chunks (in frame order) -> per-sequence summaries (in input order), walking prep/sequences.tsv once.

A chunk id is `<sequence id>_chunk_<n>`: the sequence id is what precedes the last `_chunk_` (an input id may
itself contain `_chunk_`, a chunk number cannot). Each sequence is found by walking the table forward, so a chunk
that belongs to no later sequence, a number outside 1..chunks or chunks out of order are refused: the prepared
files and the scores disagree. Sequences without scored chunks still get their row, in order.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from virnucpro.errors import RunStateError
from virnucpro.io.prep_files import SequenceInfo
from virnucpro.outputs.chunks import ChunkBlock, run_starts
from virnucpro.outputs.summary import SequenceSummary

CHUNK_INFIX = "_chunk_"


class SequenceWalk:
    """`add(chunks, is_virus)` returns the summaries finished so far; `finish()` the rest of the table."""

    def __init__(self, sequences: Iterator[SequenceInfo], where: str = "prep/sequences.tsv"):
        self._sequences = sequences
        self._where = where
        self._current: SequenceSummary | None = None
        self._last_number = 0

    def add(self, chunks: ChunkBlock, is_virus: np.ndarray) -> list[SequenceSummary]:
        if not len(chunks):
            return []
        owners, numbers = _split_ids(chunks.ids, self._where)
        starts = run_starts(owners)
        totals = _run_totals(chunks, is_virus, starts)
        finished: list[SequenceSummary] = []
        first_owner = owners[0]
        continuing = self._current is not None and self._current.info.id == first_owner
        chunk_counts = []
        for start, run_totals in zip(starts.tolist(), zip(*totals)):
            self._advance_to(owners[start], finished)
            self._current.add(*run_totals)
            chunk_counts.append(self._current.info.chunks)
        self._check_numbers(owners, numbers, starts, chunk_counts, self._last_number if continuing else 0)
        self._last_number = int(numbers[-1])
        return finished

    def finish(self) -> list[SequenceSummary]:
        finished = [] if self._current is None else [self._current]
        finished.extend(SequenceSummary(info) for info in self._sequences)
        self._current = None
        return finished

    def _advance_to(self, owner: str, finished: list[SequenceSummary]) -> None:
        if self._current is not None and self._current.info.id == owner:
            return
        if self._current is not None:
            finished.append(self._current)
        for info in self._sequences:
            if info.id == owner:
                self._current = SequenceSummary(info)
                return
            finished.append(SequenceSummary(info))
        raise RunStateError(f"{self._where}: scored chunks of '{owner}' come after every sequence it lists "
                            "(missing, or out of order); the prepared files and the scores disagree")

    def _check_numbers(self, owners: list[str], numbers: np.ndarray, starts: np.ndarray, chunk_counts: list[int],
                       before_first: int) -> None:
        """Within each run the numbers increase, start after what came before and stay within its chunk count."""
        previous = np.concatenate([[before_first], numbers[:-1]])
        previous[starts[1:]] = 0  # a new sequence starts from chunk 0
        run_ends = np.append(starts[1:], len(numbers)) - 1
        beyond = numbers[run_ends] > np.asarray(chunk_counts)
        bad = np.flatnonzero(numbers <= previous)
        if bad.size or beyond.any():
            owner = owners[int(bad[0])] if bad.size else owners[int(starts[np.argmax(beyond)])]
            raise RunStateError(f"{self._where}: chunks of '{owner}' out of order or beyond its chunk count; "
                                "the prepared files and the scores disagree")


def _split_ids(chunk_ids: list[str], where: str) -> tuple[list[str], np.ndarray]:
    parts = [chunk_id.rpartition(CHUNK_INFIX) for chunk_id in chunk_ids]
    try:
        numbers = np.array([number for _, _, number in parts], dtype=np.int64)
    except ValueError:
        raise RunStateError(f"{where}: a scored chunk id does not end in _chunk_<number>") from None
    return [owner for owner, _, _ in parts], numbers


def _run_totals(chunks: ChunkBlock, is_virus: np.ndarray, starts: np.ndarray) -> list[list]:
    """Per run of chunks of one sequence: scored, viral, sum and max of best score2 (None: none scored), nonfinite."""
    scored = chunks.scored
    best = chunks.best_virus.astype(np.float64)
    scored_count = np.add.reduceat(scored.astype(np.int64), starts)
    viral = np.add.reduceat((is_virus & scored).astype(np.int64), starts)
    score_sum = np.add.reduceat(np.where(scored, best, 0.0), starts)
    top = np.fmax.reduceat(best, starts)
    tops = [None if np.isnan(value) else value for value in top.tolist()]
    return [scored_count.tolist(), viral.tolist(), score_sum.tolist(), tops, np.add.reduceat(chunks.nonfinite, starts).tolist()]
