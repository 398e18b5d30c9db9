"""viral_sequences.fasta: the input records called viral, with their original headers, rebuilt from chunked.fasta.

The input is never read again (it may be gone, or on slow storage): chunk starts follow the published rule, so a
sequence is its chunks stitched without their overlaps, in its original letter case. Each sequence is found by
its byte offset in chunked.fasta (prep/sequences.tsv) and streamed out chunk by chunk, wrapped at FASTA_WIDTH, so
memory holds one chunk whatever the sequence length.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Callable

from virnucpro.errors import RunStateError
from virnucpro.io.prep_files import FASTA_WIDTH, SequenceInfo
from virnucpro.outputs.sequence_walk import CHUNK_INFIX

ChunkStarts = Callable[[int, int], list[int]]  # (sequence length, chunk length) -> chunk starts (prep.chunking)


class ViralFastaWriter:
    def __init__(self, handle: BinaryIO, chunked_path: Path, chunk_length: int, chunk_starts: ChunkStarts):
        self.handle = handle
        self.chunked_path = Path(chunked_path)
        self.chunk_length = chunk_length
        self.chunk_starts = chunk_starts
        self.records = 0
        self._chunked: BinaryIO | None = None

    def add(self, info: SequenceInfo) -> None:
        """Append one sequence (it must have chunks)."""
        if self._chunked is None:
            self._chunked = open(self.chunked_path, "rb")
        self._chunked.seek(info.chunked_offset)
        self.handle.write(b">" + info.header.encode("utf-8") + b"\n")
        line = _LineWrapper(self.handle)
        covered = 0
        for number, start in enumerate(self.chunk_starts(info.length, self.chunk_length), start=1):
            bases = self._read_chunk(info, number, min(self.chunk_length, info.length - start))
            line.write(bases[covered - start:])
            covered = start + len(bases)
        line.close()
        if covered != info.length:
            raise self._mismatch(info, f"chunks cover {covered} of {info.length} bases")
        self.records += 1

    def _read_chunk(self, info: SequenceInfo, number: int, length: int) -> bytes:
        header = self._chunked.readline()
        if header.rstrip(b"\n").decode("utf-8", "replace") != f">{info.id}{CHUNK_INFIX}{number}":
            raise self._mismatch(info, f"expected chunk {number} at this offset")
        lines = [self._chunked.readline() for _ in range(-(-length // FASTA_WIDTH))]
        bases = b"".join(line.rstrip(b"\n") for line in lines)
        if len(bases) != length:
            raise self._mismatch(info, f"chunk {number} has {len(bases)} bases, expected {length}")
        return bases

    def _mismatch(self, info: SequenceInfo, problem: str) -> RunStateError:
        return RunStateError(f"{self.chunked_path}: record '{info.id}': {problem}; prep/sequences.tsv and "
                             "chunked.fasta disagree (rerun with --force-restart)")

    def close(self) -> None:
        if self._chunked is not None:
            self._chunked.close()
            self._chunked = None


class _LineWrapper:
    """Writes a sequence in pieces as FASTA lines of FASTA_WIDTH bases."""

    def __init__(self, handle: BinaryIO):
        self.handle = handle
        self.carry = b""

    def write(self, bases: bytes) -> None:
        text = self.carry + bases
        full = len(text) - len(text) % FASTA_WIDTH
        if full:
            self.handle.write(b"".join(text[i:i + FASTA_WIDTH] + b"\n" for i in range(0, full, FASTA_WIDTH)))
        self.carry = text[full:]

    def close(self) -> None:
        if self.carry:
            self.handle.write(self.carry + b"\n")
        self.carry = b""
