"""The three published prep files.

- chunked.fasta: `>id` then the sequence wrapped at 60 columns (Biopython's FASTA writer).
- identified_nucleotide.fasta / identified_protein.faa: `>id` and the whole sequence on one line, same ids in
  the same order in both files.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import IO, Iterable, Iterator

from virnucpro.errors import InputError
from virnucpro.io.sequences import Record
from virnucpro.prep.frames import Frame

CHUNKED = "chunked.fasta"
IDENTIFIED_NUCLEOTIDE = "identified_nucleotide.fasta"
IDENTIFIED_PROTEIN = "identified_protein.faa"
FASTA_WIDTH = 60


def wrap(seq: str) -> str:
    """`seq` as lines of 60 characters, each ending in a newline."""
    if len(seq) <= FASTA_WIDTH:
        return seq + "\n"
    return "\n".join(map(seq.__getitem__, _line_slices(len(seq)))) + "\n"


@functools.lru_cache(maxsize=4096)
def _line_slices(length: int) -> tuple[slice, ...]:
    # Chunks share a handful of lengths, so the slice objects are built once per length.
    return tuple(slice(start, start + FASTA_WIDTH) for start in range(0, length, FASTA_WIDTH))


def write_chunked(handle: IO[str], records: Iterable[Record]) -> None:
    handle.write("".join([f">{record.id}\n{wrap(record.seq)}" for record in records]))


def write_identified(nucleotide_handle: IO[str], protein_handle: IO[str], frames: Iterable[Frame]) -> None:
    frames = list(frames)
    nucleotide_handle.write("".join([f">{frame.id}\n{frame.nucleotide}\n" for frame in frames]))
    protein_handle.write("".join([f">{frame.id}\n{frame.protein}\n" for frame in frames]))


def read_identified(nucleotide_path: str | Path, protein_path: str | Path) -> Iterator[Frame]:
    """Stream both identified files in lockstep; ids must agree record by record."""
    with open(nucleotide_path, encoding="utf-8") as nucleotides, open(protein_path, encoding="utf-8") as proteins:
        nucleotide_records = _one_line_records(nucleotide_path, nucleotides)
        protein_records = _one_line_records(protein_path, proteins)
        for nucleotide, protein in _lockstep(nucleotide_path, protein_path, nucleotide_records, protein_records):
            if nucleotide[1] != protein[1]:
                raise InputError(
                    protein_path, f"id differs from '{nucleotide[1]}' in {nucleotide_path}", record=protein[1], line=protein[0]
                )
            yield Frame(nucleotide[1], nucleotide[2], protein[2])


def _lockstep(nucleotide_path, protein_path, nucleotide_records, protein_records):
    end = object()
    while True:
        nucleotide = next(nucleotide_records, end)
        protein = next(protein_records, end)
        if nucleotide is end and protein is end:
            return
        if nucleotide is end or protein is end:
            longer, record = (protein_path, protein) if nucleotide is end else (nucleotide_path, nucleotide)
            raise InputError(longer, "has more records than its partner file", record=record[1], line=record[0])
        yield nucleotide, protein


def _one_line_records(path, handle) -> Iterator[tuple[int, str, str]]:
    """(header line number, id, sequence) of a file written as `>id` / sequence line pairs."""
    for number, header in enumerate(handle, start=1):
        sequence = next(handle, None)
        if not header.startswith(">") or sequence is None or sequence.startswith(">"):
            raise InputError(path, "malformed identified file (expected '>id' then one sequence line)", line=2 * number - 1)
        yield 2 * number - 1, header[1:].strip(), sequence.rstrip("\r\n")
