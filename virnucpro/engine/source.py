"""Random access to the prepared frames (identified_nucleotide.fasta + identified_protein.faa).

The two files hold one `>id` line and one sequence line per frame, in the same order. A small index (byte
offsets and lengths, numpy) lets shards and DataLoader workers read any range [start, stop) without scanning,
so host memory does not grow with the input.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from virnucpro.errors import InputError

INDEX_NAME = "frames.index.npz"


@dataclass(frozen=True)
class FrameRecord:
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
    """Index both prepared files once; returns the index path (written atomically)."""
    from virnucpro.io.atomic import atomic_write

    nt_offsets, nt_lengths = _scan(prep_dir / "identified_nucleotide.fasta")
    aa_offsets, aa_lengths = _scan(prep_dir / "identified_protein.faa")
    if len(nt_offsets) != len(aa_offsets):
        raise InputError(prep_dir, f"prepared files disagree: {len(nt_offsets)} nucleotide vs {len(aa_offsets)} protein frames")
    index = prep_dir / INDEX_NAME
    with atomic_write(index, "wb") as handle:
        np.savez(handle, nt_offsets=nt_offsets, nt_lengths=nt_lengths, aa_offsets=aa_offsets, aa_lengths=aa_lengths)
    return index


class FrameSource:
    """Reads frames [start, stop) of a prepared directory. Picklable: workers reopen the files lazily."""

    def __init__(self, prep_dir: str | Path):
        self.prep_dir = Path(prep_dir)
        with np.load(self.prep_dir / INDEX_NAME) as index:
            self.nt_offsets = index["nt_offsets"]
            self.nt_lengths = index["nt_lengths"]
            self.aa_offsets = index["aa_offsets"]
            self.aa_lengths = index["aa_lengths"]

    def __len__(self) -> int:
        return len(self.nt_offsets)

    @property
    def protein_lengths(self) -> np.ndarray:
        return self.aa_lengths

    def _read_lines(self, name: str, offsets: np.ndarray, start: int, stop: int) -> list[bytes]:
        if start >= stop:
            return []
        end = offsets[stop] if stop < len(offsets) else None
        with open(self.prep_dir / name, "rb") as handle:
            handle.seek(int(offsets[start]))
            blob = handle.read(-1 if end is None else int(end - offsets[start]))
        return blob.splitlines()

    def read(self, start: int, stop: int) -> list[FrameRecord]:
        nt = self._read_lines("identified_nucleotide.fasta", self.nt_offsets, start, stop)
        aa = self._read_lines("identified_protein.faa", self.aa_offsets, start, stop)
        frames = []
        for i in range(0, len(nt), 2):
            frame_id = nt[i][1:].decode()
            if aa[i][1:].decode() != frame_id:
                raise InputError(self.prep_dir, "prepared files out of step", record=frame_id)
            frames.append(FrameRecord(frame_id, nt[i + 1].decode(), aa[i + 1].decode()))
        return frames
