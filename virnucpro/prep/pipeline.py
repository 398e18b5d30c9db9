"""Input file -> chunks -> kept frames -> the three published prep files, streamed in bounded batches.

Batch API: `iter_prepared_batches(records, chunk_length)` yields lists of (chunk, frames) pairs covering about
`batch_bases` bases each (a long contig is split across batches, so memory stays bounded);
`prepare_batch(records, chunk_length)` returns all pairs of a few records at once.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from virnucpro.io.atomic import atomic_write
from virnucpro.io.prep_files import CHUNKED, IDENTIFIED_NUCLEOTIDE, IDENTIFIED_PROTEIN, write_chunked, write_identified
from virnucpro.io.sequences import Record, read_records
from virnucpro.prep.chunking import PUBLISHED_CHUNK_LENGTHS, chunk_record, iter_chunks
from virnucpro.prep.frames import Frame, identify_frames_batch

log = logging.getLogger(__name__)

# Bases translated per vectorised pass: large enough to amortise numpy calls, small enough to stay in cache-ish
# memory (the pass allocates ~20 bytes per base).
BATCH_BASES = 1 << 19

Prepared = tuple[Record, list[Frame]]


@dataclass(frozen=True)
class PrepStats:
    records: int
    chunks: int
    frames: int
    bases: int
    seconds: float


def check_chunk_length(chunk_length: int, allow_any_length: bool = False) -> None:
    if allow_any_length and isinstance(chunk_length, int) and chunk_length > 0:
        return
    if chunk_length not in PUBLISHED_CHUNK_LENGTHS:
        raise ValueError(f"chunk length must be 300 or 500 (the published models), got {chunk_length!r}")


def iter_prepared_batches(
    records: Iterable[Record], chunk_length: int, batch_bases: int = BATCH_BASES
) -> Iterator[list[Prepared]]:
    """Chunks of `records` in input order, each with its kept frames, in batches of ~batch_bases bases."""
    batch: list[Record] = []
    bases = 0
    for record in records:
        # Lists for ordinary records (fast), a lazy generator for contigs longer than a batch (bounded memory).
        long = len(record.seq) > batch_bases
        for chunk in iter_chunks(record, chunk_length) if long else chunk_record(record, chunk_length):
            batch.append(chunk)
            bases += len(chunk.seq)
            if bases >= batch_bases:
                yield list(zip(batch, identify_frames_batch(batch)))
                batch, bases = [], 0
    if batch:
        yield list(zip(batch, identify_frames_batch(batch)))


def prepare_batch(records: Iterable[Record], chunk_length: int) -> list[Prepared]:
    """Every chunk of `records` with its kept frames (translated in vectorised batches of BATCH_BASES)."""
    return [pair for batch in iter_prepared_batches(records, chunk_length) for pair in batch]


def run_prep(input: str | Path, outdir: str | Path, chunk_length: int, *, allow_any_length: bool = False) -> PrepStats:
    """Write chunked.fasta, identified_nucleotide.fasta and identified_protein.faa of `input` into `outdir`.

    All three appear together at the end (atomic renames); on an error none of them is written.
    """
    check_chunk_length(chunk_length, allow_any_length)
    began = time.perf_counter()
    outdir = Path(outdir)
    counter = _RecordCounter(read_records(input))
    chunks = frames = 0
    with contextlib.ExitStack() as stack:
        chunked = stack.enter_context(atomic_write(outdir / CHUNKED))
        nucleotides = stack.enter_context(atomic_write(outdir / IDENTIFIED_NUCLEOTIDE))
        proteins = stack.enter_context(atomic_write(outdir / IDENTIFIED_PROTEIN))
        for batch in iter_prepared_batches(counter, chunk_length):
            write_chunked(chunked, [chunk for chunk, _ in batch])
            kept = [frame for _, chunk_frames in batch for frame in chunk_frames]
            write_identified(nucleotides, proteins, kept)
            chunks += len(batch)
            frames += len(kept)
    if counter.records == 0:
        log.warning("%s: no non-empty records; the prep files are empty", input)
    return PrepStats(counter.records, chunks, frames, counter.bases, time.perf_counter() - began)


class _RecordCounter:
    """Passes records through, counting them and their bases."""

    def __init__(self, records: Iterable[Record]):
        self._records = records
        self.records = 0
        self.bases = 0

    def __iter__(self) -> Iterator[Record]:
        for record in self._records:
            self.records += 1
            self.bases += len(record.seq)
            yield record
