"""prep/sequences.tsv (io.prep_files.SequenceInfo rows), written while prep streams the input.

A row's `chunked_offset` comes from the chunked.fasta format itself (">" id "_chunk_" n "\\n", the bases wrapped at
FASTA_WIDTH columns), so nothing is scanned; `run_prep` checks the total against the bytes it wrote.
"""

from __future__ import annotations

from typing import IO

import numpy as np

from virnucpro.io.prep_files import FASTA_WIDTH, SEQUENCES_HEADER, SequenceInfo, format_sequence_row
from virnucpro.io.sequences import Record
from virnucpro.prep.chunking import chunk_count, chunk_range_layout
from virnucpro.prep.short_inputs import LengthStats

ROWS_PER_WRITE = 65536
_HEADER_BYTES = len(">") + len("_chunk_") + len("\n")  # around the id and the chunk number


def decimal_digits_total(count: int) -> int:
    """Digits written for the chunk numbers 1..count."""
    total, low = 0, 1
    while low <= count:
        high = min(count, 10 * low - 1)
        total += (high - low + 1) * len(str(low))
        low *= 10
    return total


def chunked_bytes(id_bytes: int, length: int, size: int) -> int:
    """Bytes of every chunk record of one sequence in chunked.fasta."""
    count = chunk_count(length, size)
    if count <= 1:
        lengths = np.array([length] * count, dtype=np.int64)
    else:
        lengths = chunk_range_layout(length, size, 0, count).length
    bases = int(lengths.sum() + (-(-lengths // FASTA_WIDTH)).sum())
    return count * (_HEADER_BYTES + id_bytes) + decimal_digits_total(count) + bases


def _utf8_lengths(ids: list[str]) -> np.ndarray:
    return np.fromiter((len(i) if i.isascii() else len(i.encode("utf-8")) for i in ids), dtype=np.int64, count=len(ids))


class SequenceTableWriter:
    """Rows in input order, in batches; `offset` is where the next sequence's chunks start in chunked.fasta."""

    def __init__(self, handle: IO[str], chunk_length: int):
        self.handle = handle
        self.chunk_length = chunk_length
        self.offset = 0
        self.lengths = LengthStats(chunk_length)
        self.dropped = 0
        self._pending: list[tuple[Record, bool]] = []
        handle.write(SEQUENCES_HEADER + "\n")

    def add(self, record: Record, kept: bool) -> None:
        self._pending.append((record, kept))
        self.dropped += not kept
        if len(self._pending) >= ROWS_PER_WRITE:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        records = [record for record, _ in self._pending]
        kept = np.fromiter((k for _, k in self._pending), dtype=bool, count=len(records))
        lengths = np.fromiter((len(r.seq) for r in records), dtype=np.int64, count=len(records))
        self.lengths.add(lengths[kept])  # what is scored
        sizes = self._chunked_sizes(_utf8_lengths([r.id for r in records]), lengths, kept)
        starts = self.offset + np.cumsum(sizes) - sizes
        counts = np.where(kept, -(-lengths // self.chunk_length), 0)
        self.handle.write("".join(
            format_sequence_row(SequenceInfo(r.id, length, count, start, keep, r.description))
            for r, length, count, start, keep in zip(records, lengths.tolist(), counts.tolist(), starts.tolist(),
                                                      kept.tolist())))
        self.offset += int(sizes.sum())
        self._pending = []

    def _chunked_sizes(self, id_bytes: np.ndarray, lengths: np.ndarray, kept: np.ndarray) -> np.ndarray:
        # One chunk (the usual read): the whole sequence under `<id>_chunk_1`.
        sizes = _HEADER_BYTES + id_bytes + 1 + lengths + -(-lengths // FASTA_WIDTH)
        for i in np.flatnonzero(lengths > self.chunk_length):
            sizes[i] = chunked_bytes(int(id_bytes[i]), int(lengths[i]), self.chunk_length)
        return np.where(kept, sizes, 0)
