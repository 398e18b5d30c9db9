"""The three published prep files, and random access to the prepared frames.

- chunked.fasta: `>id` then the sequence wrapped at FASTA_WIDTH columns (Biopython's FASTA writer).
- identified_nucleotide.fasta / identified_protein.faa: `>id` and the whole sequence on one line, same ids in
  the same order in both files (one record per kept frame).

`prep` writes them; everything downstream reads frames through `FrameSource`: a small index (byte offsets and
lengths, numpy) lets shards and DataLoader workers read any range [start, stop) without scanning, so host memory
does not grow with the input.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from virnucpro.errors import InputError, RunStateError
from virnucpro.io.atomic import atomic_write

CHUNKED = "chunked.fasta"
IDENTIFIED_NUCLEOTIDE = "identified_nucleotide.fasta"
IDENTIFIED_PROTEIN = "identified_protein.faa"
INDEX_NAME = "frames.index.npz"
FASTA_WIDTH = 60  # chunked.fasta line length (Biopython's FASTA writer)


@dataclass(frozen=True, slots=True)
class Frame:
    """One kept frame: `<chunk id>F1..F3/R1..R3`, its nucleotides and its protein."""

    id: str
    nucleotide: str
    protein: str


def _scan(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Byte offset of each record's header and length of each sequence line."""
    offsets, lengths = [], []
    position = 0
    with open(path, "rb") as handle:
        for number, header in enumerate(handle):
            sequence = handle.readline()
            if not header.startswith(b">") or not sequence:
                raise InputError(path, "malformed prepared file (expected '>id' then one sequence line)", line=2 * number + 1)
            offsets.append(position)
            lengths.append(len(sequence.rstrip(b"\r\n")))
            position += len(header) + len(sequence)
    return np.asarray(offsets, dtype=np.int64), np.asarray(lengths, dtype=np.int32)


def build_index(prep_dir: Path) -> Path:
    """Index both identified files once; returns the index path (written atomically)."""
    prep_dir = Path(prep_dir)
    nt_offsets, nt_lengths = _scan(prep_dir / IDENTIFIED_NUCLEOTIDE)
    aa_offsets, aa_lengths = _scan(prep_dir / IDENTIFIED_PROTEIN)
    if len(nt_offsets) != len(aa_offsets):
        raise InputError(prep_dir, f"prepared files disagree: {len(nt_offsets)} nucleotide vs {len(aa_offsets)} protein frames")
    index = prep_dir / INDEX_NAME
    with atomic_write(index, "wb") as handle:
        np.savez(handle, nt_offsets=nt_offsets, nt_lengths=nt_lengths, aa_offsets=aa_offsets, aa_lengths=aa_lengths)
    return index


class FrameSource:
    """Reads frames [start, stop) of an indexed prepared directory. Picklable: workers reopen the files lazily."""

    def __init__(self, prep_dir: str | Path):
        self.prep_dir = Path(prep_dir)
        with np.load(self.prep_dir / INDEX_NAME) as index:
            self.nt_offsets = index["nt_offsets"]
            self.nt_lengths = index["nt_lengths"]
            self.aa_offsets = index["aa_offsets"]
            self.aa_lengths = index["aa_lengths"]

    def __len__(self) -> int:
        return len(self.nt_offsets)

    def _read_lines(self, name: str, offsets: np.ndarray, start: int, stop: int) -> list[bytes]:
        if start >= stop:
            return []
        end = offsets[stop] if stop < len(offsets) else None
        with open(self.prep_dir / name, "rb") as handle:
            handle.seek(int(offsets[start]))
            blob = handle.read(-1 if end is None else int(end - offsets[start]))
        return blob.splitlines()

    def read(self, start: int, stop: int) -> list[Frame]:
        nt = self._read_lines(IDENTIFIED_NUCLEOTIDE, self.nt_offsets, start, stop)
        aa = self._read_lines(IDENTIFIED_PROTEIN, self.aa_offsets, start, stop)
        frames = []
        for i in range(0, len(nt), 2):
            frame_id = nt[i][1:].decode()
            if aa[i][1:].decode() != frame_id:
                raise InputError(self.prep_dir, "prepared files out of step", record=frame_id)
            frames.append(Frame(frame_id, nt[i + 1].decode(), aa[i + 1].decode()))
        return frames


# ------------------------------------------------------------------ the per-sequence table (prep/sequences.tsv)
# One row per input record, in input order, written by prep beside the three published files: what aggregation
# and viral_sequences.fasta need without reading the input again. `chunked_offset` is the byte offset of the
# record's first chunk in chunked.fasta; `kept` is 0 for a record dropped by --min-length (it has no chunks);
# `description` is the whole header line (tabs, CR, LF and backslashes escaped).

SEQUENCES = "sequences.tsv"
SEQUENCES_HEADER = "id\tlength\tchunks\tchunked_offset\tkept\tdescription"
_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\r": "\\r", "\n": "\\n"}
_UNESCAPES = {value[1]: key for key, value in _ESCAPES.items()}


@dataclass(slots=True)
class SequenceInfo:
    id: str
    length: int
    chunks: int
    chunked_offset: int
    kept: bool = True
    description: str = ""

    @property
    def header(self) -> str:
        """The original header line without its '>' (or '@')."""
        return self.description or self.id


def format_sequence_rows(ids: list[str], lengths: list[int], chunks: list[int], offsets: list[int],
                         kept: list[bool], descriptions: list[str]) -> str:
    """Rows of sequences.tsv."""
    if any(char in "".join(descriptions) for char in _ESCAPES):
        descriptions = ["".join(_ESCAPES.get(char, char) for char in text) for text in descriptions]
    return "".join(map("{}\t{}\t{}\t{}\t{:d}\t{}\n".format, ids, lengths, chunks, offsets, kept, descriptions))


def format_sequence_row(info: SequenceInfo) -> str:
    return format_sequence_rows([info.id], [info.length], [info.chunks], [info.chunked_offset], [info.kept],
                                [info.description])


def _unescape(text: str) -> str:
    out, chars = [], iter(text)
    for char in chars:
        out.append(_UNESCAPES.get(next(chars, ""), "\\") if char == "\\" else char)
    return "".join(out)


def read_sequences(prep_dir: str | Path) -> Iterator[SequenceInfo]:
    """The rows of prep/sequences.tsv in input order, streamed."""
    path = Path(prep_dir) / SEQUENCES
    try:
        handle = open(path, encoding="utf-8", newline="\n")
    except FileNotFoundError:
        raise RunStateError(f"{path}: missing (prepared by an older virnucpro); rerun with --force-restart") from None
    with handle:
        if handle.readline().rstrip("\n") != SEQUENCES_HEADER:
            raise InputError(path, f"header is not {SEQUENCES_HEADER!r}", line=1)
        for number, line in enumerate(handle, start=2):
            yield _sequence_row(path, number, line)


def _sequence_row(path: Path, number: int, line: str) -> SequenceInfo:
    fields = line.rstrip("\n").split("\t")
    if len(fields) != 6:
        raise InputError(path, f"expected 6 tab-separated fields, got {len(fields)}", line=number)
    try:
        description = _unescape(fields[5]) if "\\" in fields[5] else fields[5]
        return SequenceInfo(fields[0], int(fields[1]), int(fields[2]), int(fields[3]), fields[4] == "1", description)
    except ValueError:
        raise InputError(path, "malformed row", record=fields[0], line=number) from None
