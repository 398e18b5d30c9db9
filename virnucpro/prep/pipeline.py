"""Input file -> chunks -> kept frames -> the three published prep files, streamed in bounded batches.

`iter_prepared(records, chunk_length)` yields each batch's text of the three files (input order); `run_prep`
writes them.
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
from virnucpro.io.prep_files import CHUNKED, IDENTIFIED_NUCLEOTIDE, IDENTIFIED_PROTEIN
from virnucpro.io.sequences import Record, read_records
from virnucpro.prep.batch import iter_batches
from virnucpro.prep.chunking import PUBLISHED_CHUNK_LENGTHS
from virnucpro.prep.frames import kept_frames
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
        chunked = stack.enter_context(atomic_write(outdir / CHUNKED, "wb"))
        nucleotides = stack.enter_context(atomic_write(outdir / IDENTIFIED_NUCLEOTIDE, "wb"))
        proteins = stack.enter_context(atomic_write(outdir / IDENTIFIED_PROTEIN, "wb"))
        for prepared in iter_prepared(counter, chunk_length):
            chunked.write(prepared.chunked)
            nucleotides.write(prepared.nucleotides)
            proteins.write(prepared.proteins)
            chunks += prepared.chunks
            frames += prepared.frames
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
