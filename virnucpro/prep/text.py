"""The three published prep files' text for a batch, assembled by numpy.

Each record of a file is one row of a byte table built side by side from column blocks (">" + id + "\n" +
sequence + ...), FILL wherever a row is shorter than its block; dropping every FILL byte of the flattened table
leaves the file text. Formats (see virnucpro.io.prep_files):
- chunked.fasta: `>id` then the sequence in original case, wrapped at 60 columns (Biopython's FASTA writer);
- identified_nucleotide.fasta / identified_protein.faa: `>id` and the whole sequence on one line.
"""

from __future__ import annotations

import numpy as np

from virnucpro.io.prep_files import FASTA_WIDTH
from virnucpro.prep.batch import ChunkBatch
from virnucpro.prep.frames import FRAME_SUFFIXES, KeptFrames
from virnucpro.prep.translate import FILL

_FRAME_SUFFIXES = np.frombuffer("".join(FRAME_SUFFIXES).encode("ascii"), dtype=np.uint8).reshape(6, -1)


def assemble(rows: int, blocks: list[np.ndarray | bytes]) -> np.ndarray:
    """Text of `rows` records (uint8): the blocks side by side (bytes: a constant column block), FILL dropped."""
    columns = [
        np.broadcast_to(np.frombuffer(block, dtype=np.uint8), (rows, len(block))) if isinstance(block, bytes) else block
        for block in blocks
    ]
    table = np.concatenate(columns, axis=1).reshape(-1)
    return table[table != FILL]


def chunked_text(batch: ChunkBatch) -> np.ndarray:
    n = len(batch)
    if n == 0:
        return np.empty(0, dtype=np.uint8)
    lines = -(-int(batch.length.max()) // FASTA_WIDTH)
    body = np.empty((n, lines, FASTA_WIDTH + 1), dtype=np.uint8)
    body[:, :, :FASTA_WIDTH] = batch.rows[:, : lines * FASTA_WIDTH].reshape(n, lines, FASTA_WIDTH)
    # A line of a shorter chunk that holds no base is all FILL, newline included.
    line_starts = FASTA_WIDTH * np.arange(lines)
    body[:, :, FASTA_WIDTH] = np.where(line_starts < batch.length[:, None], ord("\n"), FILL)
    return assemble(n, [b">", batch.ids, b"\n", body.reshape(n, -1)])


def identified_texts(batch: ChunkBatch, kept: KeptFrames) -> tuple[np.ndarray, np.ndarray]:
    """(identified_nucleotide.fasta text, identified_protein.faa text) of the batch."""
    m = len(kept)
    if m == 0:
        return np.empty(0, dtype=np.uint8), np.empty(0, dtype=np.uint8)
    header = [b">", batch.ids[kept.chunk], _FRAME_SUFFIXES[kept.frame], b"\n"]
    return assemble(m, header + [kept.nucleotides, b"\n"]), assemble(m, header + [kept.residues, b"\n"])
