"""Frames kept by the published rule (VirNucPro `identify_seq`): no stop codon and a non-empty protein.

For a kept frame num (1..6) with protein p: seq_len = 3 * len(p); its nucleotides are
upper_seq[num-1 : num+seq_len] for F1..F3 and revcomp(upper_seq)[num-4 : num-3+seq_len] for R1..R3, i.e.
seq_len + 1 bases from the frame start (a published quirk, kept), clipped at the chunk end; ids are the chunk
id + F1..F3 / R1..R3.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from virnucpro.io.sequences import Record
from virnucpro.prep.translate import SixFrames, six_frames

FRAME_SUFFIXES = ("F1", "F2", "F3", "R1", "R2", "R3")


@dataclass(frozen=True, slots=True)
class Frame:
    id: str
    nucleotide: str
    protein: str


def identify_frames(chunk: Record) -> list[Frame]:
    return identify_frames_batch([chunk])[0]


def identify_frames_batch(chunks: Sequence[Record]) -> list[list[Frame]]:
    """Kept frames of each chunk (F1..R3 order), translating all chunks in one vectorised pass."""
    if not chunks:
        return []
    sequences = [chunk.seq for chunk in chunks]
    upper = "".join(sequences).encode("ascii").upper()
    lengths = np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences))
    translation = six_frames(upper, lengths)
    frames: list[list[Frame]] = [[] for _ in chunks]
    for chunk_index, frame_index, start, count, room in _without_stop(translation):
        protein = translation.protein(start, count)
        if protein:  # a frame of only ambiguous codons translates to nothing: dropped, as published
            nucleotide = translation.nucleotide(start, min(3 * len(protein) + 1, room))
            frames[chunk_index].append(Frame(chunks[chunk_index].id + FRAME_SUFFIXES[frame_index], nucleotide, protein))
    return frames


def _without_stop(translation: SixFrames):
    """(chunk, frame, start, codon count, room) of every frame with codons and no stop, as Python ints."""
    keep = (translation.stops == 0) & (translation.codon_count > 0)
    chunk_index, frame_index = np.nonzero(keep)
    return zip(
        chunk_index.tolist(),
        frame_index.tolist(),
        translation.start[keep].tolist(),
        translation.codon_count[keep].tolist(),
        translation.room[keep].tolist(),
    )
