"""Frames kept by the published rule (VirNucPro `identify_seq`): no stop codon and a non-empty protein.

For a kept frame num (1..6) with protein p: seq_len = 3 * len(p); its nucleotides are
upper_seq[num-1 : num+seq_len] for F1..F3 and revcomp(upper_seq)[num-4 : num-3+seq_len] for R1..R3, i.e.
seq_len + 1 bases from the frame start (a published quirk, kept), clipped at the chunk end; ids are the chunk
id + F1..F3 / R1..R3.

`kept_frames` selects them for a whole ChunkBatch and gathers their residues and nucleotides as two matrices
(one row per kept frame, FILL where a row has no letter): strided reads of the chunk and codon matrices, no
Python work per frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided

from virnucpro.prep.batch import ChunkBatch
from virnucpro.prep.translate import (
    FILL,
    FORWARD_STOP,
    RESIDUE,
    REVERSE_RESIDUE,
    REVERSE_STOP,
    UPPER,
    UPPER_COMPLEMENT,
    codon_indices,
    stops_by_class,
    translate_rows,
)

FRAME_SUFFIXES = ("F1", "F2", "F3", "R1", "R2", "R3")


@dataclass(frozen=True)
class KeptFrames:
    """Kept frames of a batch in output order (chunk, then F1..F3, R1..R3)."""

    chunk: np.ndarray  # [m] chunk row in the batch
    frame: np.ndarray  # [m] 0..5: F1, F2, F3, R1, R2, R3
    residues: np.ndarray  # [m, longest protein] uint8 protein letters, FILL where there is none
    nucleotides: np.ndarray  # [m, longest] uint8 upper-cased nucleotides, FILL after the frame's end

    def __len__(self) -> int:
        return self.chunk.size


def kept_frames(batch: ChunkBatch) -> KeptFrames:
    codons = codon_indices(batch.padded)
    chunk, frame = _stop_free_frames(batch, codons)
    residues = _residues(batch, codons, chunk, frame)
    protein_length = np.count_nonzero(residues != FILL, axis=1)
    if not protein_length.all():  # a frame of only ambiguous codons translates to nothing: dropped, as published
        keep = protein_length > 0
        chunk, frame, residues, protein_length = chunk[keep], frame[keep], residues[keep], protein_length[keep]
    return KeptFrames(chunk, frame, residues, _nucleotides(batch, chunk, frame, protein_length))


def _stop_free_frames(batch: ChunkBatch, codons: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(chunk, frame) of every frame with codons and no stop, in output order."""
    stops = stops_by_class(codons[batch.width : codons.size - batch.width].reshape(-1, batch.width))
    shift = np.arange(3)
    # Forward frame f reads the codons of position class f. Reverse frame f reads, backwards, the reverse
    # complements of the codons at forward positions l-3-f, l-6-f, ... down to 0: class (l - f) % 3.
    forward_stop = (stops & FORWARD_STOP) != 0
    reverse_stop = (np.take_along_axis(stops, (batch.length[:, None] - shift) % 3, axis=1) & REVERSE_STOP) != 0
    has_codons = batch.length[:, None] - shift >= 3
    keep = np.concatenate([has_codons & ~forward_stop, has_codons & ~reverse_stop], axis=1)
    return np.nonzero(keep)  # row-major: chunk order, then F1..R3, as published


def _room(batch: ChunkBatch, chunk: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """Bases from the frame's first base to the end of its chunk (the same on both strands)."""
    return batch.length[chunk] - frame % 3


def _residues(batch: ChunkBatch, codons: np.ndarray, chunk: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """[m, most codons] protein letters of each frame; FILL for skipped (ambiguous) codons and past the end."""
    room = _room(batch, chunk, frame)
    row = batch.row_offset(chunk)
    reverse = frame >= 3
    # Forward: the codons at f, f+3, ... Reverse: the codons at l-3-f, l-6-f, ... read backwards, each looked
    # up as its reverse complement.
    first = np.where(reverse, row + room - 3, row + frame % 3)
    count = room // 3
    residues = _read_rows(codons, first, reverse, int(count.max(initial=0)), 3, RESIDUE, REVERSE_RESIDUE)
    residues[np.arange(residues.shape[1]) >= count[:, None]] = FILL
    return residues


def _nucleotides(batch: ChunkBatch, chunk: np.ndarray, frame: np.ndarray, protein_length: np.ndarray) -> np.ndarray:
    """[m, longest] upper-cased frame nucleotides: the published quirk, one base more than the protein codes
    for, clipped at the chunk end; FILL after."""
    room = _room(batch, chunk, frame)
    length = np.minimum(3 * protein_length + 1, room)
    row = batch.row_offset(chunk)
    reverse = frame >= 3
    first = np.where(reverse, row + room - 1, row + frame % 3)  # reverse: complement of the bases read backwards
    nucleotides = _read_rows(batch.padded, first, reverse, int(length.max(initial=0)), 1, UPPER, UPPER_COMPLEMENT)
    nucleotides[np.arange(nucleotides.shape[1]) >= length[:, None]] = FILL
    return nucleotides


def _read_rows(
    flat: np.ndarray,
    first: np.ndarray,
    reverse: np.ndarray,
    width: int,
    step: int,
    forward_table: bytes,
    reverse_table: bytes,
) -> np.ndarray:
    """[m, width]: flat[s], flat[s + step], ... from each first position s (backwards where `reverse`), mapped
    through forward_table or reverse_table."""
    rows = np.empty((first.size, width), dtype=np.uint8)
    for backwards, table in ((False, forward_table), (True, reverse_table)):
        chosen = reverse == backwards
        if chosen.any():
            read = _strided_rows(flat, first[chosen], width, -step if backwards else step)
            rows[chosen] = translate_rows(read, table)
    return rows


def _strided_rows(flat: np.ndarray, starts: np.ndarray, width: int, step: int) -> np.ndarray:
    """[len(starts), width] copy of flat[s], flat[s + step], ... for each start s.

    Callers keep every read inside `flat`: a read spans less than a row width (it covers at most the longest
    frame), and the all-FILL rows before the first chunk and after the last take the reads that run past a
    chunk's row.
    """
    if starts.size and width:  # as_strided checks nothing: a wrong start must fail, not read stray memory
        reach = step * (width - 1)
        lowest = int(starts.min()) + min(reach, 0)
        highest = int(starts.max()) + max(reach, 0)
        if lowest < 0 or highest >= flat.size:
            raise IndexError("strided read outside the batch buffer")
    itemsize = flat.strides[0]
    return as_strided(flat, shape=(flat.size, width), strides=(itemsize, step * itemsize), writeable=False)[starts]
