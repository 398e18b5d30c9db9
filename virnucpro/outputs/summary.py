"""Per-input-sequence summary (new; the published tool stopped at per-chunk calls).

One row per input sequence, in input order: how many chunks it was cut into, how many had at least one kept
frame (scored), how many the consensus called viral, and a call for the whole sequence.
Chunks are mapped to their input sequence through the prep data, never by parsing ids: an input id may itself
contain `_chunk_`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from virnucpro.io.atomic import atomic_write
from virnucpro.outputs.results import format_score

HEADER = "Sequence_ID\tchunks\tscored_chunks\tviral_chunks\tviral_fraction\tbest_virus_score\tcall"
VIRAL_FRACTION_THRESHOLD = 0.5


@dataclass
class SequenceSummary:
    sequence_id: str
    chunks: int
    scored_chunks: int = 0
    viral_chunks: int = 0
    best_virus_score: float | None = None  # max score2 over all the sequence's frames

    @property
    def viral_fraction(self) -> float:
        return self.viral_chunks / self.scored_chunks if self.scored_chunks else 0.0

    @property
    def call(self) -> str:
        if self.scored_chunks == 0:
            return "unscored"
        return "virus" if self.viral_fraction >= VIRAL_FRACTION_THRESHOLD else "others"

    def add_scored_chunk(self, is_virus: bool, best_virus: float | None) -> None:
        self.scored_chunks += 1
        self.viral_chunks += int(is_virus)
        if best_virus is not None and (self.best_virus_score is None or best_virus > self.best_virus_score):
            self.best_virus_score = best_virus


def summarize(
    sequence_chunks: Iterable[tuple[str, int]],
    chunk_calls: Mapping[str, bool],
    chunk_best_virus: Mapping[str, float],
    chunk_to_sequence: Mapping[str, str],
) -> list[SequenceSummary]:
    """One summary per input sequence, in input order.

    sequence_chunks: (input id, number of chunks cut from it), from the prep data; a repeated id is merged.
    chunk_calls: chunk id -> consensus call, for every scored chunk (`consensus.highest_score`).
    chunk_best_virus: chunk id -> max score2 over its frames (`consensus.chunk_maxima(...)[c].best_virus`).
    chunk_to_sequence: chunk id -> input id, from the prep data.
    """
    summaries: dict[str, SequenceSummary] = {}
    for sequence_id, chunks in sequence_chunks:
        if sequence_id in summaries:
            summaries[sequence_id].chunks += chunks
        else:
            summaries[sequence_id] = SequenceSummary(sequence_id, chunks)
    for chunk_id, is_virus in chunk_calls.items():
        summary = summaries.get(_sequence_of(chunk_id, chunk_to_sequence))
        if summary is None:
            raise ValueError(f"chunk '{chunk_id}' belongs to '{chunk_to_sequence[chunk_id]}', not an input sequence")
        summary.add_scored_chunk(is_virus, chunk_best_virus.get(chunk_id))
    _check_counts(summaries.values())
    return list(summaries.values())


def _sequence_of(chunk_id: str, chunk_to_sequence: Mapping[str, str]) -> str:
    try:
        return chunk_to_sequence[chunk_id]
    except KeyError:
        raise ValueError(f"scored chunk '{chunk_id}' is not in the prep data") from None


def _check_counts(summaries: Iterable[SequenceSummary]) -> None:
    for summary in summaries:
        if summary.scored_chunks > summary.chunks:
            raise ValueError(
                f"sequence '{summary.sequence_id}' has {summary.scored_chunks} scored chunks but only {summary.chunks}"
            )


def format_row(summary: SequenceSummary) -> str:
    best = "" if summary.best_virus_score is None else format_score(summary.best_virus_score)
    fields = (
        summary.sequence_id,
        str(summary.chunks),
        str(summary.scored_chunks),
        str(summary.viral_chunks),
        f"{summary.viral_fraction:.6g}",
        best,
        summary.call,
    )
    return "\t".join(fields) + "\n"


def write_summary(path: str | Path, rows: Iterable[SequenceSummary]) -> None:
    with atomic_write(path) as handle:
        handle.write(HEADER + "\n")
        handle.writelines(format_row(row) for row in rows)
