"""Vectorised six-frame translation of many chunks at once, with the published rules.

Published rules (VirNucPro `translate_dna` on the upper-cased chunk): standard genetic code, stops `*`; a codon
with any letter other than A/C/G/T is skipped (adds no residue); frame f reads codons at f, f+3, ... while
i < len - 2; reverse frames read the reverse complement, where only A/C/G/T are complemented.

How it is fast: the upper-cased chunks are concatenated into one buffer followed by its reverse complement
(so chunk c's reverse strand is a contiguous slice of the second half). A few whole-buffer numpy passes give
the codon index (base 5: 25*b0 + 5*b1 + b2, any non-ACGT base -> digit 4) at every position; the stop
positions, grouped by class mod 3, tell with two binary searches whether any frame of any chunk has a stop.
Only frames without stop are translated, each with one strided slice and one `bytes.translate` (which maps
codon indices to residues and deletes the skipped codons). No Python work per codon.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

BASES = "TCAG"
# Standard genetic code, codons in TCAG order (TTT, TTC, TTA, TTG, TCT, ...).
AMINO_ACIDS = "FFLLSSSSYY**CC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG"
CODON_TABLE = {
    a + b + c: AMINO_ACIDS[16 * i + 4 * j + k]
    for i, a in enumerate(BASES)
    for j, b in enumerate(BASES)
    for k, c in enumerate(BASES)
}
STOP = "*"

_INVALID = 4  # base code of anything but A/C/G/T
_COMPLEMENT = bytes.maketrans(b"ACGT", b"TGCA")  # input is upper-cased first, like the published code


def _codon_index(codon: str) -> int:
    b0, b1, b2 = ("ACGT".index(base) for base in codon)
    return 25 * b0 + 5 * b1 + b2


def _base_codes() -> bytes:
    """bytes.translate table: A, C, G, T -> 0..3, any other byte -> 4."""
    codes = bytearray([_INVALID] * 256)
    for code, base in enumerate(b"ACGT"):
        codes[base] = code
    return bytes(codes)


def _residue_of_codon() -> bytes:
    """bytes.translate table: codon index -> residue letter (entries of skipped codons are never used)."""
    table = bytearray(256)
    for codon, amino_acid in CODON_TABLE.items():
        table[_codon_index(codon)] = ord(amino_acid)
    return bytes(table)


# Lookups via bytes.translate: several times faster than numpy fancy indexing on uint8 data.
BASE_CODES = _base_codes()
RESIDUE_OF_CODON = _residue_of_codon()
SKIPPED_CODONS = bytes(set(range(256)) - {_codon_index(codon) for codon in CODON_TABLE})
STOP_CODONS = tuple(_codon_index(codon) for codon, amino_acid in CODON_TABLE.items() if amino_acid == STOP)


@dataclass
class SixFrames:
    """Six-frame translation of n chunks; frame columns F1, F2, F3, R1, R2, R3.

    `nucleotides` is the upper-cased chunks then their reverse complement; `codons` holds, at each position
    of it, the index of the codon starting there. Frame (c, j) reads codons at start[c, j], +3, ...
    (`codon_count[c, j]` of them).
    """

    nucleotides: bytes
    codons: bytes
    start: np.ndarray  # [n, 6] first codon position of each frame
    codon_count: np.ndarray  # [n, 6] codon positions in the frame (published range(f, len - 2, 3))
    stops: np.ndarray  # [n, 6] stop codons in the frame
    room: np.ndarray  # [n, 6] bases from the frame start to the chunk end (strand-local)

    def protein(self, start: int, count: int) -> str:
        """Protein of the frame with `count` codons from `start`: skipped codons give no residue."""
        return self.codons[start : start + 3 * count : 3].translate(RESIDUE_OF_CODON, SKIPPED_CODONS).decode("ascii")

    def nucleotide(self, start: int, length: int) -> str:
        return self.nucleotides[start : start + length].decode("ascii")


def six_frames(upper_chunks: bytes, lengths: np.ndarray) -> SixFrames:
    """Translate the concatenation of upper-cased chunks `upper_chunks` (chunk lengths `lengths`)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = len(upper_chunks)
    both = upper_chunks + upper_chunks.translate(_COMPLEMENT)[::-1]
    codons = _codon_indices(both)
    start, codon_count, room = _frame_layout(lengths, total)
    stops = _StopIndex(codons).between(start, start + 3 * codon_count)
    return SixFrames(both, codons.tobytes(), start, codon_count, stops, room)


class _Scratch(threading.local):
    """Work arrays kept between calls: fresh multi-megabyte arrays cost more in page faults than the arithmetic."""

    def get(self, name: str, size: int, dtype) -> np.ndarray:
        key = f"{name}_{np.dtype(dtype).name}"
        array = self.__dict__.get(key)
        if array is None or array.size < size:
            array = self.__dict__[key] = np.empty(size, dtype=dtype)
        return array[:size]


_SCRATCH = _Scratch()


def _codon_indices(sequence: bytes) -> np.ndarray:
    """Codon index at every position (the last two positions hold invalid codons). A scratch array."""
    codes = np.frombuffer(sequence.translate(BASE_CODES) + bytes([_INVALID, _INVALID]), dtype=np.uint8)
    index = _SCRATCH.get("index", len(sequence), np.uint8)
    term = _SCRATCH.get("term", len(sequence), np.uint8)
    np.multiply(codes[:-2], np.uint8(25), out=index)
    np.multiply(codes[1:-1], np.uint8(5), out=term)
    index += term
    index += codes[2:]
    return index


class _StopIndex:
    """Stop-codon positions grouped by class mod 3 (key = class * rows + position // 3, sorted): the stops of a
    frame (positions a, a+3, ... < b, all of one class) form one contiguous run of keys, found with two binary
    searches. Stops are a small fraction of codons, so this costs far less than prefix sums over every position.
    """

    def __init__(self, codons: np.ndarray):
        is_stop = _SCRATCH.get("is_stop", codons.size, np.bool_)
        other = _SCRATCH.get("other", codons.size, np.bool_)
        np.equal(codons, STOP_CODONS[0], out=is_stop)
        for stop_codon in STOP_CODONS[1:]:
            is_stop |= np.equal(codons, stop_codon, out=other)
        self.rows = codons.size // 3 + 2  # > any frame end // 3, so the classes' keys never overlap
        self.keys = np.concatenate([np.flatnonzero(is_stop[c::3]) + c * self.rows for c in range(3)])

    def _key(self, positions: np.ndarray, frame_class: np.ndarray) -> np.ndarray:
        return frame_class * self.rows + positions // 3

    def between(self, first: np.ndarray, stop: np.ndarray) -> np.ndarray:
        """Stops at positions first, first+3, ... < stop (stop = first + 3k)."""
        frame_class = first % 3
        return np.searchsorted(self.keys, self._key(stop, frame_class)) - np.searchsorted(
            self.keys, self._key(first, frame_class)
        )


def _frame_layout(lengths: np.ndarray, total: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First codon position, codon count and bases left to the chunk end, per chunk and frame."""
    offsets = np.cumsum(lengths) - lengths
    shift = np.arange(3, dtype=np.int64)
    forward = offsets[:, None] + shift
    # Chunk c's reverse complement sits at total + (total - offsets[c] - lengths[c]) in the doubled buffer.
    reverse = (2 * total - offsets - lengths)[:, None] + shift
    room = np.maximum(lengths[:, None] - shift, 0)
    start = np.concatenate([forward, reverse], axis=1)
    room = np.concatenate([room, room], axis=1)
    return start, room // 3, room
