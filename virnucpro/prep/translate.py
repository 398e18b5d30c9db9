"""Six-frame translation with the published rules, vectorised over a matrix of chunks.

Published rules (VirNucPro `translate_dna` on the upper-cased chunk): standard genetic code, stops `*`; a codon
with any letter other than A/C/G/T is skipped (adds no residue); frame f reads codons at f, f+3, ... while
i < len - 2; reverse frames read the reverse complement, where only A/C/G/T are complemented.

How it is fast: each chunk is one row of a byte matrix (see batch.ChunkBatch), padded with FILL bytes after its
end; the row width is a multiple of 3. One `bytes.translate` and a few uint8 numpy passes give the codon index
(base 5: 25*b0 + 5*b1 + b2, any non-ACGT base -> digit 4) at every position. A codon that touches the padding
is invalid, so a frame is exactly "the valid codons of one position class (mod 3) of one row", and the reverse
frames need no reverse strand: the reverse complement of the codon at forward position q is a reverse-frame
codon, so reverse stops and residues are lookups on the same forward codon indices (TTA/CTA/TCA read forward
are reverse stops). Which frames hold a stop is one OR-reduction per row and class.
"""

from __future__ import annotations

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

# Marks bytes that are not part of any output text (padding after a chunk, unused columns). 0xFF never occurs in
# UTF-8 text (ids) nor in nucleotide letters, so the assembled texts can simply drop every FILL byte.
FILL = 0xFF

_INVALID = 4  # base code of anything but A/C/G/T (either case: the published code upper-cases first)
INVALID_CODON = 25 * _INVALID + 5 * _INVALID + _INVALID
_COMPLEMENT = {"A": "T", "C": "G", "G": "C", "T": "A"}

# Stop kinds, one bit each: the codon read forward is a stop; its reverse complement is a stop.
FORWARD_STOP = 1
REVERSE_STOP = 2


def codon_index(codon: str) -> int:
    b0, b1, b2 = ("ACGT".index(base) for base in codon.upper())
    return 25 * b0 + 5 * b1 + b2


def reverse_complement(codon: str) -> str:
    return "".join(_COMPLEMENT[base] for base in reversed(codon))


def _stop_kind(codon: str) -> int:
    forward = FORWARD_STOP if CODON_TABLE[codon] == STOP else 0
    return forward | (REVERSE_STOP if CODON_TABLE[reverse_complement(codon)] == STOP else 0)


def _table(pairs, default: int) -> bytes:
    """A 256-entry bytes.translate table: `default` except the given (byte, value) pairs."""
    table = bytearray([default] * 256)
    for key, value in pairs:
        table[key] = value
    return bytes(table)


# bytes.translate tables: several times faster than numpy fancy indexing on uint8 data.
BASE_CODES = _table([(ord(b), code) for code, base in enumerate("ACGT") for b in (base, base.lower())], _INVALID)
RESIDUE = _table([(codon_index(c), ord(aa)) for c, aa in CODON_TABLE.items()], FILL)  # invalid codon: no residue
REVERSE_RESIDUE = _table([(codon_index(c), ord(CODON_TABLE[reverse_complement(c)])) for c in CODON_TABLE], FILL)
STOP_KIND = _table([(codon_index(c), _stop_kind(c)) for c in CODON_TABLE], 0)
# Nucleotide text as published: upper-cased; on the reverse strand then A/C/G/T complemented, all else kept.
UPPER = bytes(range(256)).upper()
UPPER_COMPLEMENT = UPPER.translate(bytes.maketrans(b"ACGT", b"TGCA"))


def translate_rows(data: np.ndarray, table: bytes) -> np.ndarray:
    """`table` applied to every byte of a uint8 array (same shape)."""
    return np.frombuffer(data.tobytes().translate(table), dtype=np.uint8).reshape(data.shape)


def codon_indices(bases: np.ndarray) -> np.ndarray:
    """Codon index at every position of a flat uint8 array (the last two positions: invalid codons)."""
    codes = np.frombuffer(bases.tobytes().translate(BASE_CODES), dtype=np.uint8)
    index = np.full(codes.size, INVALID_CODON, dtype=np.uint8)
    body = index[:-2]
    np.multiply(codes[:-2], np.uint8(25), out=body)
    body += codes[1:-1] * np.uint8(5)
    body += codes[2:]
    return index


def stops_by_class(codons: np.ndarray) -> np.ndarray:
    """[rows, 3] OR of the stop kinds of the codons of each row and position class (row width: a multiple of 3)."""
    rows, width = codons.shape
    kinds = translate_rows(codons, STOP_KIND).reshape(-1)
    row_starts = np.arange(rows, dtype=np.int64) * (width // 3)
    return np.stack([np.bitwise_or.reduceat(kinds[c::3], row_starts) for c in range(3)], axis=1)
