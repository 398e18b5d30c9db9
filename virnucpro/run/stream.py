"""One streaming pass from scored parts (frame order) to every text output of a run, in bounded memory.

Per part: frames -> prediction_results.txt (finite scores; the rows usually formatted ahead, in the part reader
process: with_prediction_rows) or nonfinite_frames.tsv; frames -> chunk maxima
(outputs.chunks) -> chunk calls -> the consensus (published: sorted on disk; broad: as they come) and the walk
over prep/sequences.tsv -> sequence_summary.tsv rows -> viral_sequences.fasta, while the report's histograms
fill. Memory holds one part, one chunk block and the sorter's bounded buffer, whatever the run's size.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from virnucpro.io.prep_files import CHUNKED, read_sequences
from virnucpro.outputs.broad import BroadTable
from virnucpro.outputs.chunks import ChunkBlock, ChunkGrouper
from virnucpro.outputs.consensus import HighestScoreTable, chunk_is_virus
from virnucpro.outputs.external_sort import RUN_ROWS
from virnucpro.outputs.nonfinite import NonfiniteWriter, finite_rows
from virnucpro.outputs.report_data import ReportFigures
from virnucpro.outputs.results import PredictionWriter, finite_prediction_rows
from virnucpro.outputs.sequence_walk import SequenceWalk
from virnucpro.outputs.summary import SequenceSummary, SummaryWriter
from virnucpro.outputs.viral_fasta import ViralFastaWriter
from virnucpro.prep.chunking import chunk_starts
from virnucpro.prep.short_inputs import LengthStats
from virnucpro.run.calls import CallSettings
from virnucpro.run.commit import OutputBatch
from virnucpro.run.parts import PartData
from virnucpro.run.rundir import HIGHEST_SCORE, NONFINITE, PREDICTIONS, SUMMARY, VIRAL_FASTA


@dataclass
class StreamCounts:
    frames: int = 0
    nonfinite_frames: int = 0
    chunks: int = 0  # scored chunks (rows of the consensus)
    viral_chunks: int = 0
    sequences: int = 0
    viral_sequences: int = 0
    dropped_sequences: int = 0
    calls: dict = field(default_factory=dict)


def with_prediction_rows(parts: Iterable[PartData], min_score: float | None) -> Iterator[tuple[PartData, tuple]]:
    """Each part with its prediction_results.txt rows (finite_prediction_rows): run in the part reader process
    (run.prefetch), this text, a good part of the writing work, is made there, beside the writer."""
    for part in parts:
        yield part, finite_prediction_rows(part.ids, part.scores, min_score)


class ResultsStream:
    def __init__(self, outputs: OutputBatch, prep_dir: Path, chunk_length: int, settings: CallSettings,
                 sort_dir: Path, sort_rows: int = RUN_ROWS):
        self.settings = settings
        self.thresholds = settings.thresholds
        self.predictions = PredictionWriter(outputs.open(PREDICTIONS), settings.min_score)
        self.nonfinite = NonfiniteWriter(outputs.open(NONFINITE))
        self.highest_handle = outputs.open(HIGHEST_SCORE)
        self.consensus = (BroadTable(self.highest_handle) if settings.consensus_format == "broad"
                          else HighestScoreTable(sort_dir, sort_rows))
        self.summary = SummaryWriter(outputs.open(SUMMARY), self.thresholds)
        self.viral = ViralFastaWriter(outputs.open(VIRAL_FASTA, "wb"), prep_dir / CHUNKED, chunk_length, chunk_starts)
        self.grouper = ChunkGrouper()
        self.walk = SequenceWalk(read_sequences(prep_dir))
        self.figures = ReportFigures()
        self.lengths = LengthStats(chunk_length)
        self.counts = StreamCounts()

    def add(self, part: PartData, rows: tuple[str, int] | None = None) -> None:
        """One part; `rows`: its prediction_results.txt rows when already formatted (with_prediction_rows)."""
        finite = finite_rows(part.scores)
        self.counts.frames += len(part.ids)
        text, kept = rows or finite_prediction_rows(part.ids, part.scores, self.settings.min_score)
        self.predictions.add_text(text, kept)
        if kept < len(part.ids):
            self.nonfinite.add(list(itertools.compress(part.ids, (~finite).tolist())), part.scores[~finite])
            self.counts.nonfinite_frames += len(part.ids) - kept
        self.figures.add_scores(part.scores[finite, 1])
        self._add_chunks(self.grouper.add(part.ids, part.scores))

    def _add_chunks(self, chunks: ChunkBlock) -> None:
        if not len(chunks):
            return
        is_virus = chunk_is_virus(chunks.best_others, chunks.best_virus, self.settings.min_score)
        scored = chunks.scored
        self.consensus.add(chunks if scored.all() else chunks.select(scored), is_virus[scored])
        self.counts.chunks += int(scored.sum())
        self.counts.viral_chunks += int((is_virus & scored).sum())
        self._add_sequences(self.walk.add(chunks, is_virus))

    def _add_sequences(self, summaries: list[SequenceSummary]) -> None:
        if not summaries:
            return
        calls = [summary.call(self.thresholds) for summary in summaries]
        self.summary.add(summaries, calls)
        self.figures.add_summaries(summaries, calls)
        kept = np.array([s.info.kept for s in summaries])
        self.lengths.add(np.array([s.info.length for s in summaries], dtype=np.int64)[kept])
        self.counts.sequences += len(summaries)
        self.counts.dropped_sequences += int((~kept).sum())
        for call, number in Counter(calls).items():
            self.counts.calls[call] = self.counts.calls.get(call, 0) + number
        for summary, call in zip(summaries, calls):
            if call == "virus":
                self.viral.add(summary.info)
        self.counts.viral_sequences = self.counts.calls.get("virus", 0)

    def finish(self) -> None:
        """The last chunk and the sequences after it; then the consensus file (a merge when sorted on disk)."""
        self._add_chunks(self.grouper.finish())
        self._add_sequences(self.walk.finish())
        self.viral.close()

    def write_consensus(self) -> None:
        if isinstance(self.consensus, BroadTable):
            self.consensus.finish()
        else:
            self.consensus.write(self.highest_handle)

    def discard(self) -> None:
        self.viral.close()
        if isinstance(self.consensus, HighestScoreTable):
            self.consensus.discard()
