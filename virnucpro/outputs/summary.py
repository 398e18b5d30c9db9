"""sequence_summary.tsv: one row per input sequence, in input order (new; the published tool stopped at chunks).

Columns: the chunks a sequence was cut into, how many were scored (had a frame without stop and finite scores),
how many the chunk rule called viral, their fraction, the best and mean chunk score2 over the scored chunks,
the sequence's call, its length, frames whose scores were not finite, and the thresholds used.

Calls: `too_short` (dropped at prep by --min-length), `unscored` (no scored chunk), `few_chunks` (fewer scored
chunks than --min-chunks), else `virus` when viral_fraction >= --min-viral-fraction, else `others`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO

from virnucpro.io.prep_files import SequenceInfo
from virnucpro.outputs.results import format_score

COLUMNS = ("Sequence_ID", "chunks", "scored_chunks", "viral_chunks", "viral_fraction", "best_virus_score", "call",
           "mean_virus_score", "length", "nonfinite_frames", "min_score", "min_viral_fraction", "min_chunks")
HEADER = "\t".join(COLUMNS)
CALLS = ("virus", "others", "unscored", "few_chunks", "too_short")
PUBLISHED_RULE = "published"  # min_score column when the published chunk rule (score2 >= score1) was used


@dataclass(frozen=True)
class Thresholds:
    min_score: float | None = None  # chunk viral when best score2 >= this; None: best score2 >= best score1
    min_viral_fraction: float = 0.5  # sequence viral when this fraction of its scored chunks is viral
    min_chunks: int = 1  # fewer scored chunks than this: no call (`few_chunks`)

    def columns(self) -> str:
        min_score = PUBLISHED_RULE if self.min_score is None else repr(float(self.min_score))
        return f"{min_score}\t{self.min_viral_fraction!r}\t{self.min_chunks}"


@dataclass
class SequenceSummary:
    info: SequenceInfo
    scored_chunks: int = 0
    viral_chunks: int = 0
    best_virus_score: float | None = None
    virus_score_sum: float = 0.0  # of the scored chunks' best score2
    nonfinite_frames: int = 0

    @property
    def viral_fraction(self) -> float:
        return self.viral_chunks / self.scored_chunks if self.scored_chunks else 0.0

    @property
    def mean_virus_score(self) -> float | None:
        return self.virus_score_sum / self.scored_chunks if self.scored_chunks else None

    def call(self, thresholds: Thresholds) -> str:
        if not self.info.kept:
            return "too_short"
        if self.scored_chunks == 0:
            return "unscored"
        if self.scored_chunks < thresholds.min_chunks:
            return "few_chunks"
        return "virus" if self.viral_fraction >= thresholds.min_viral_fraction else "others"

    def add(self, scored: int, viral: int, score_sum: float, best: float | None, nonfinite: int) -> None:
        """Totals over some of this sequence's chunks (`best` None when none of them was scored)."""
        self.scored_chunks += scored
        self.viral_chunks += viral
        self.virus_score_sum += score_sum
        self.nonfinite_frames += nonfinite
        if best is not None and (self.best_virus_score is None or best > self.best_virus_score):
            self.best_virus_score = best


def _optional_score(value: float | None) -> str:
    return "" if value is None else format_score(value)


def _optional_six_digits(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def format_row(summary: SequenceSummary, call: str, threshold_columns: str) -> str:
    info = summary.info
    return (f"{info.id}\t{info.chunks}\t{summary.scored_chunks}\t{summary.viral_chunks}\t"
            f"{summary.viral_fraction:.6g}\t{_optional_score(summary.best_virus_score)}\t{call}\t"
            f"{_optional_six_digits(summary.mean_virus_score)}\t{info.length}\t{summary.nonfinite_frames}\t"
            f"{threshold_columns}\n")


class SummaryWriter:
    def __init__(self, handle: IO[str], thresholds: Thresholds):
        self.handle = handle
        self.columns = thresholds.columns()
        handle.write(HEADER + "\n")

    def add(self, summaries: list[SequenceSummary], calls: list[str]) -> None:
        """Rows of these sequences, with their calls (`SequenceSummary.call`)."""
        self.handle.write("".join(format_row(summary, call, self.columns) for summary, call in zip(summaries, calls)))
