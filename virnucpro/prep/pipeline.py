"""Input file -> chunks -> kept frames -> the three published prep files, streamed in bounded batches.

`iter_prepared(records, chunk_length)` yields each batch's text of the three files (input order); `run_prep`
writes them, and the per-sequence table (prep/sequences.tsv) that aggregation reads instead of the input.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from virnucpro.io.atomic import atomic_write
from virnucpro.io.prep_files import CHUNKED, IDENTIFIED_NUCLEOTIDE, IDENTIFIED_PROTEIN, SEQUENCES
from virnucpro.io.sequences import Record, read_records
from virnucpro.prep.batch import iter_batches
from virnucpro.prep.chunking import PUBLISHED_CHUNK_LENGTHS
from virnucpro.prep.frames import kept_frames
from virnucpro.prep.sequence_table import SequenceTableWriter
from virnucpro.prep.short_inputs import short_input_warnings
from virnucpro.prep.text import chunked_text, identified_texts

log = logging.getLogger(__name__)

# Bases per vectorised batch: large enough to amortise the ~100 numpy calls of a batch, small enough to keep
# memory modest (a batch allocates ~20 bytes per base).
BATCH_BASES = 1 << 20


@dataclass(frozen=True)
class PrepStats:
    records: int
    chunks: int
    frames: int
    bases: int
    seconds: float
    dropped: int = 0  # records shorter than --min-length


@dataclass(frozen=True)
class PreparedText:
    """One batch's share of the three files (UTF-8 bytes as uint8 arrays)."""

    chunked: np.ndarray
    nucleotides: np.ndarray
    proteins: np.ndarray
    chunks: int
    frames: int


def check_chunk_length(chunk_length: int, allow_any_length: bool = False) -> None:
    if allow_any_length and isinstance(chunk_length, int) and chunk_length > 0:
        return
    if chunk_length not in PUBLISHED_CHUNK_LENGTHS:
        raise ValueError(f"chunk length must be 300 or 500 (the published models), got {chunk_length!r}")


def iter_prepared(
    records: Iterable[Record], chunk_length: int, batch_bases: int = BATCH_BASES
) -> Iterator[PreparedText]:
    for batch in iter_batches(records, chunk_length, batch_bases):
        kept = kept_frames(batch)
        nucleotides, proteins = identified_texts(batch, kept)
        yield PreparedText(chunked_text(batch), nucleotides, proteins, len(batch), len(kept))


def run_prep(input: str | Path, outdir: str | Path, chunk_length: int, *, allow_any_length: bool = False,
             min_length: int = 0) -> PrepStats:
    """Write chunked.fasta, identified_nucleotide.fasta, identified_protein.faa and sequences.tsv of `input` into
    `outdir`; records shorter than `min_length` are dropped (listed in sequences.tsv as not kept).

    All four appear together at the end (atomic renames); on an error none of them is written.
    """
    check_chunk_length(chunk_length, allow_any_length)
    began = time.perf_counter()
    outdir = Path(outdir)
    chunks = frames = chunked_bytes = 0
    with contextlib.ExitStack() as stack:
        chunked = stack.enter_context(atomic_write(outdir / CHUNKED, "wb"))
        nucleotides = stack.enter_context(atomic_write(outdir / IDENTIFIED_NUCLEOTIDE, "wb"))
        proteins = stack.enter_context(atomic_write(outdir / IDENTIFIED_PROTEIN, "wb"))
        table = SequenceTableWriter(stack.enter_context(atomic_write(outdir / SEQUENCES)), chunk_length)
        tap = _RecordTap(read_records(input), table, min_length)
        for prepared in iter_prepared(tap, chunk_length):
            chunked.write(prepared.chunked)
            nucleotides.write(prepared.nucleotides)
            proteins.write(prepared.proteins)
            chunks += prepared.chunks
            frames += prepared.frames
            chunked_bytes += prepared.chunked.size
        table.flush()
        if table.offset != chunked_bytes:  # the table's offsets into chunked.fasta would be wrong
            raise AssertionError(f"sequences.tsv: chunked.fasta offsets add up to {table.offset}, wrote {chunked_bytes}")
    _log_warnings(input, tap, table, min_length)
    return PrepStats(tap.records, chunks, frames, tap.bases, time.perf_counter() - began, table.dropped)


def _log_warnings(input, tap: "_RecordTap", table: SequenceTableWriter, min_length: int) -> None:
    if tap.records == 0:
        log.warning("%s: no non-empty records; the prep files are empty", input)
    for warning in short_input_warnings(table.lengths, table.dropped, min_length):
        log.warning("%s: %s", input, warning)


class _RecordTap:
    """Passes records on to prep, counting them and their bases, writing each to the sequence table and dropping
    those shorter than `min_length`."""

    def __init__(self, records: Iterable[Record], table: SequenceTableWriter, min_length: int):
        self._records = records
        self._table = table
        self._min_length = min_length
        self.records = 0
        self.bases = 0

    def __iter__(self) -> Iterator[Record]:
        add, min_length = self._table.add, self._min_length
        for record in self._records:
            length = len(record.seq)
            self.records += 1
            self.bases += length
            add(record, length, length >= min_length)
            if length >= min_length:
                yield record
