"""prep/sequences.tsv (io.prep_files.SequenceInfo rows), written while prep streams the input.

A row's `chunked_offset` comes from the chunked.fasta format itself (">" id "_chunk_" n "\\n", the bases wrapped at
FASTA_WIDTH columns), so nothing is scanned; `run_prep` checks the total against the bytes it wrote.
"""

from __future__ import annotations

from typing import IO

import numpy as np

from virnucpro.io.prep_files import FASTA_WIDTH, SEQUENCES_HEADER, format_sequence_rows
from virnucpro.io.sequences import Record
from virnucpro.prep.chunking import chunk_layout
from virnucpro.prep.short_inputs import LengthStats

ROWS_PER_WRITE = 65536
_HEADER_BYTES = len(">") + len("_chunk_") + len("\n")  # around the id and the chunk number


def decimal_digits_total(counts: np.ndarray) -> np.ndarray:
    """Digits written for the chunk numbers 1..count, for each count."""
    counts = np.asarray(counts, dtype=np.int64)
    total, low, digits = np.zeros_like(counts), 1, 1
    while counts.size and low <= counts.max():
        total += np.clip(counts - low + 1, 0, 9 * low) * digits
        low, digits = low * 10, digits + 1
    return total


def chunked_bytes(id_bytes: np.ndarray, lengths: np.ndarray, size: int) -> np.ndarray:
    """Bytes of every chunk record of each sequence in chunked.fasta (vectorised over sequences)."""
    id_bytes, lengths = np.asarray(id_bytes, dtype=np.int64), np.asarray(lengths, dtype=np.int64)
    layout = chunk_layout(lengths, size)
    per_chunk = layout.length + -(-layout.length // FASTA_WIDTH)  # bases and their newlines
    bases = np.bincount(layout.sequence, weights=per_chunk, minlength=lengths.size).astype(np.int64)
    counts = -(-lengths // size)
    return counts * (_HEADER_BYTES + id_bytes) + decimal_digits_total(counts) + bases


def _utf8_lengths(ids: list[str]) -> np.ndarray:
    if "".join(ids).isascii():
        return np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    return np.fromiter((len(i.encode("utf-8")) for i in ids), dtype=np.int64, count=len(ids))


class SequenceTableWriter:
    """Rows in input order, in batches; `offset` is where the next sequence's chunks start in chunked.fasta."""

    def __init__(self, handle: IO[str], chunk_length: int):
        self.handle = handle
        self.chunk_length = chunk_length
        self.offset = 0
        self.lengths = LengthStats(chunk_length)
        self.dropped = 0
        self._ids: list[str] = []
        self._descriptions: list[str] = []
        self._lengths: list[int] = []
        self._kept: list[bool] = []
        handle.write(SEQUENCES_HEADER + "\n")

    def add(self, record: Record, length: int, kept: bool) -> None:
        self._ids.append(record.id)
        self._descriptions.append(record.description)
        self._lengths.append(length)
        self._kept.append(kept)
        if len(self._ids) >= ROWS_PER_WRITE:
            self.flush()

    def flush(self) -> None:
        if not self._ids:
            return
        ids, sizes, keep = self._ids, self._lengths, self._kept
        kept, lengths = np.array(keep, dtype=bool), np.array(sizes, dtype=np.int64)
        self.lengths.add(lengths[kept])  # what is scored
        self.dropped += int((~kept).sum())
        chunked = np.where(kept, chunked_bytes(_utf8_lengths(ids), lengths, self.chunk_length), 0)
        counts = np.where(kept, -(-lengths // self.chunk_length), 0)
        self.handle.write(format_sequence_rows(ids, sizes, counts.tolist(),
                                               (self.offset + np.cumsum(chunked) - chunked).tolist(), keep,
                                               self._descriptions))
        self.offset += int(chunked.sum())
        self._ids, self._descriptions, self._lengths, self._kept = [], [], [], []
