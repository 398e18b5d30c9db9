"""The published overlap rule (VirNucPro `split_fasta_chunk`): cut a sequence into ceil(L / size) chunks of
`size` bases, spreading the overlap needed to cover L over the chunk boundaries, ids `<id>_chunk_<n>`.

The arithmetic is reproduced exactly as published, quirks included: the list of per-boundary overlaps can be
longer than the number of boundaries (then every boundary uses the larger overlap and the last chunk can be
shorter than `size`).

Published: steps = [upper] * extra + [lower] * (count - 1 - extra) + [0] (list * negative == []); chunk k
(from 0) starts at k * size minus the sum of the first k steps, i.e. k * (size - upper) while k <= extra, then
k * (size - lower) - extra. `chunk_starts` does this for one sequence in Python, `ChunkRule` for many at once
in numpy. (Tests compare both with the literal published loop.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PUBLISHED_CHUNK_LENGTHS = (300, 500)


def chunk_starts(length: int, size: int) -> list[int]:
    """Start offset of each chunk of a sequence of `length` bases (empty for length 0)."""
    if length <= 0:
        return []
    count = -(-length // size)
    repeat = count * size - length
    lower = int(repeat / count)
    upper = lower + 1
    extra = repeat - lower * (count - 1)
    first = min(extra, count - 1)
    return [k * (size - upper) for k in range(first + 1)] + [k * (size - lower) - extra for k in range(first + 1, count)]


@dataclass(frozen=True)
class ChunkRule:
    """The published rule's parameters for many sequences (arrays, one entry per sequence)."""

    size: int
    lengths: np.ndarray
    count: np.ndarray
    lower: np.ndarray
    extra: np.ndarray

    @classmethod
    def of(cls, lengths, size: int) -> "ChunkRule":
        lengths = np.asarray(lengths, dtype=np.int64)
        count = -(-lengths // size)
        repeat = count * size - lengths
        # Floor division equals the published int(repeat / count): the quotient is below `size`, far too small
        # for float rounding to reach the next integer.
        lower = repeat // np.maximum(count, 1)
        return cls(size, lengths, count, lower, repeat - lower * (count - 1))

    def starts(self, sequence: np.ndarray, k: np.ndarray) -> np.ndarray:
        """Start of chunk k (from 0) of each given sequence."""
        lower, extra = self.lower[sequence], self.extra[sequence]
        first = np.minimum(extra, self.count[sequence] - 1)
        return np.where(k <= first, k * (self.size - lower - 1), k * (self.size - lower) - extra)

    def chunk_lengths(self, sequence: np.ndarray, starts: np.ndarray) -> np.ndarray:
        return np.minimum(self.size, self.lengths[sequence] - starts)


@dataclass(frozen=True)
class ChunkLayout:
    """Chunks of many sequences in order: sequence index, chunk number (from 1), start and length of each."""

    sequence: np.ndarray
    number: np.ndarray
    start: np.ndarray
    length: np.ndarray


def chunk_layout(lengths, size: int) -> ChunkLayout:
    """Every chunk of sequences of the given lengths (none for length 0), vectorised."""
    rule = ChunkRule.of(lengths, size)
    sequence = np.repeat(np.arange(rule.lengths.size), rule.count)
    k = np.arange(sequence.size) - np.repeat(np.cumsum(rule.count) - rule.count, rule.count)
    start = rule.starts(sequence, k)
    return ChunkLayout(sequence, k + 1, start, rule.chunk_lengths(sequence, start))


def chunk_range_layout(length: int, size: int, first: int, stop: int) -> ChunkLayout:
    """Chunks first..stop-1 (from 0) of one sequence: a long contig is laid out a piece at a time."""
    rule = ChunkRule.of([length], size)
    k = np.arange(first, min(stop, int(rule.count[0])), dtype=np.int64)
    sequence = np.zeros(k.size, dtype=np.int64)
    start = rule.starts(sequence, k)
    return ChunkLayout(sequence, k + 1, start, rule.chunk_lengths(sequence, start))


def chunk_count(length: int, size: int) -> int:
    return -(-length // size)


def chunk_id(record_id: str, number: int) -> str:
    return f"{record_id}_chunk_{number}"
