"""The published overlap rule (VirNucPro `split_fasta_chunk`): cut a sequence into ceil(L / size) chunks of
`size` bases, spreading the overlap needed to cover L over the chunk boundaries, ids `<id>_chunk_<n>`.

The arithmetic is reproduced exactly as published, quirks included: the list of per-boundary overlaps can be
longer than the number of boundaries (then every boundary uses the larger overlap and the last chunk can be
shorter than `size`).
"""

from __future__ import annotations

from typing import Iterator

from virnucpro.io.sequences import Record

PUBLISHED_CHUNK_LENGTHS = (300, 500)


def chunk_starts(length: int, size: int) -> list[int]:
    """Start offset of each chunk of a sequence of `length` bases (empty for length 0).

    Published: steps = [upper] * extra + [lower] * (count - 1 - extra) + [0] (list * negative == []);
    chunk k starts at k * size minus the sum of the first k steps, i.e. k * (size - upper) while k <= extra,
    then k * (size - lower) - extra. (Tests compare with the literal published loop.)
    """
    if length <= 0:
        return []
    count = -(-length // size)
    repeat = count * size - length
    lower = int(repeat / count)
    upper = lower + 1
    extra = repeat - lower * (count - 1)
    first = min(extra, count - 1)
    return [k * (size - upper) for k in range(first + 1)] + [k * (size - lower) - extra for k in range(first + 1, count)]


def chunk_id(record_id: str, number: int) -> str:
    return f"{record_id}_chunk_{number}"


def iter_chunks(record: Record, size: int) -> Iterator[Record]:
    """Chunks of one record, lazily (for long contigs): original letter case kept, description empty."""
    seq = record.seq
    for number, start in enumerate(chunk_starts(len(seq), size), start=1):
        yield Record(chunk_id(record.id, number), seq[start : start + size], "")


def chunk_record(record: Record, chunk_length: int) -> list[Record]:
    """Chunks of one record (as the published writer: original letter case, description empty)."""
    seq, record_id = record.seq, record.id
    if len(seq) <= chunk_length:  # the common read: one chunk, the whole sequence
        return [Record(f"{record_id}_chunk_1", seq, "")] if seq else []
    return [
        Record(f"{record_id}_chunk_{number}", seq[start : start + chunk_length], "")
        for number, start in enumerate(chunk_starts(len(seq), chunk_length), start=1)
    ]
