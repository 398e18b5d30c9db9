"""Chunks of a run of records as one byte matrix: the unit every vectorised prep step works on.

Chunk i is row i of a [n, width] uint8 matrix in its original letter case, followed by FILL bytes up to the
row width. The width is a multiple of 3 with at least two FILL bytes after the longest chunk, so a codon that
starts in a row's last two bases touches padding (invalid) and every reading frame stays inside its row. One
all-FILL row before and after the matrix lets strided reads run a row's length past either end.

Chunk ids are a second matrix (UTF-8 bytes, FILL-padded), so headers are assembled by numpy as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from virnucpro.io.prep_files import FASTA_WIDTH
from virnucpro.io.sequences import Record
from virnucpro.prep.chunking import ChunkLayout, chunk_count, chunk_layout, chunk_range_layout
from virnucpro.prep.translate import FILL

_CHUNK_INFIX = np.frombuffer(b"_chunk_", dtype=np.uint8)


def row_width(size: int) -> int:
    """Row width for chunks of up to `size` bases: 2 FILL bytes after a chunk, room to wrap it at 60 columns,
    a multiple of 3."""
    wrapped = FASTA_WIDTH * -(-size // FASTA_WIDTH)
    return 3 * -(-max(size + 2, wrapped) // 3)


@dataclass(frozen=True)
class ChunkBatch:
    ids: np.ndarray  # [n, id width] uint8: chunk ids (UTF-8), FILL-padded
    length: np.ndarray  # [n] int64: bases in each chunk
    padded: np.ndarray  # [(n + 2) * width] uint8: an all-FILL row, the chunk rows, an all-FILL row
    width: int

    def __len__(self) -> int:
        return self.length.size

    @property
    def rows(self) -> np.ndarray:
        """[n, width] chunk matrix (a view)."""
        return self.padded[self.width : self.padded.size - self.width].reshape(-1, self.width)

    def row_offset(self, chunk: np.ndarray) -> np.ndarray:
        """Flat offset in `padded` of the first base of each given chunk."""
        return (chunk + 1) * self.width


def iter_batches(records: Iterable[Record], size: int, batch_bases: int) -> Iterator[ChunkBatch]:
    """The chunks of `records` in input order, in batches of about `batch_bases` bases (a record longer than
    that is cut into several batches, so memory stays bounded)."""
    ids: list[str] = []
    sequences: list[str] = []
    bases = 0
    for record in records:
        if len(record.seq) > batch_bases:
            if ids:
                yield batch_of_records(ids, sequences, size)
                ids, sequences, bases = [], [], 0
            yield from _long_record_batches(record, size, batch_bases)
            continue
        ids.append(record.id)
        sequences.append(record.seq)
        bases += len(record.seq)
        if bases >= batch_bases:
            yield batch_of_records(ids, sequences, size)
            ids, sequences, bases = [], [], 0
    if ids:
        yield batch_of_records(ids, sequences, size)


def batch_of_records(ids: list[str], sequences: list[str], size: int) -> ChunkBatch:
    """Every chunk of the given records (one string join and a few numpy passes, no Python loop per chunk)."""
    lengths = _lengths(sequences)
    layout = chunk_layout(lengths, size)
    record_offsets = np.cumsum(lengths) - lengths
    offsets = record_offsets[layout.sequence] + layout.start
    return _batch("".join(sequences), offsets, layout.length, chunk_id_rows(ids, layout), size)


def _long_record_batches(record: Record, size: int, batch_bases: int) -> Iterator[ChunkBatch]:
    per_batch = max(1, batch_bases // size)
    for first in range(0, chunk_count(len(record.seq), size), per_batch):
        layout = chunk_range_layout(len(record.seq), size, first, first + per_batch)
        begin = int(layout.start[0])
        end = int(layout.start[-1] + layout.length[-1])
        ids = chunk_id_rows([record.id], layout)
        yield _batch(record.seq[begin:end], layout.start - begin, layout.length, ids, size)


def _lengths(items: Sequence) -> np.ndarray:
    return np.fromiter(map(len, items), dtype=np.int64, count=len(items))


def _batch(text: str, offsets: np.ndarray, lengths: np.ndarray, ids: np.ndarray, size: int) -> ChunkBatch:
    """Batch of the chunks of `lengths` bases at `offsets` in `text` (at most `size` bases each)."""
    width = row_width(size)
    padded = np.full((lengths.size + 2) * width, FILL, dtype=np.uint8)
    rows = padded[width : padded.size - width].reshape(-1, width)
    source = np.frombuffer(text.encode("ascii") + bytes([FILL]) * width, dtype=np.uint8)
    rows[:] = sliding_window_view(source, width)[offsets]
    _fill_after(rows, lengths)
    return ChunkBatch(ids, lengths, padded, width)


def chunk_id_rows(record_ids: list[str], layout: ChunkLayout) -> np.ndarray:
    """[n, id width] uint8: `<record id>_chunk_<number>` of each chunk, FILL-padded."""
    n = layout.length.size
    return np.concatenate(
        [
            padded_text_rows(record_ids)[layout.sequence],
            np.broadcast_to(_CHUNK_INFIX, (n, _CHUNK_INFIX.size)),
            decimal_rows(layout.number),
        ],
        axis=1,
    )


def _fill_after(rows: np.ndarray, lengths: np.ndarray) -> None:
    """Set every byte of row i from column lengths[i] on to FILL (most rows share the longest length)."""
    if rows.size == 0:
        return
    longest = int(lengths.max())
    rows[:, longest:] = FILL
    short = np.flatnonzero(lengths < longest)
    if short.size:
        part = rows[short, :longest]
        part[np.arange(longest) >= lengths[short, None]] = FILL
        rows[short, :longest] = part


def padded_text_rows(texts: list[str]) -> np.ndarray:
    """[len(texts), longest] uint8: the UTF-8 bytes of each text, FILL-padded."""
    encoded = "".join(texts).encode("utf-8")
    lengths = _lengths(texts)
    if len(encoded) != lengths.sum():  # non-ASCII: lengths in bytes, not characters
        lengths = _lengths([text.encode("utf-8") for text in texts])
    width = max(int(lengths.max(initial=0)), 1)
    source = np.frombuffer(encoded + bytes([FILL]) * width, dtype=np.uint8)
    rows = sliding_window_view(source, width)[np.cumsum(lengths) - lengths]
    _fill_after(rows, lengths)
    return rows


def decimal_rows(numbers: np.ndarray) -> np.ndarray:
    """[n, digits] uint8: each positive number in decimal, FILL-padded on the left."""
    digits = len(str(int(numbers.max(initial=1))))
    powers = 10 ** np.arange(digits - 1, -1, -1, dtype=np.int64)
    rows = (numbers[:, None] // powers % 10 + ord("0")).astype(np.uint8)
    rows[numbers[:, None] < powers] = FILL  # leading zeros
    return rows
