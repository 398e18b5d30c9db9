"""The numbers report.html shows, gathered in bounded memory: fixed-bin histograms filled block by block.

Filled either while aggregation streams the scores (the end of every run) or from the written TSVs
(`virnucpro report`); both give the same counts because both see the same float32 scores and summary rows.
Bins follow numpy.histogram: [a, b) except the last, which is [a, b].
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from virnucpro.outputs.summary import CALLS, SequenceSummary

SCORE_EDGES = np.linspace(0.0, 1.0, 21)  # score2 per frame, 20 bins of 0.05
FRACTION_EDGES = np.linspace(0.0, 1.0, 11)  # viral fraction per scored sequence, 10 bins of 0.1
LENGTH_EDGES = np.array([0, 150, 300, 500, 1_000, 2_000, 5_000, 10_000, 100_000, 1_000_000, np.iinfo(np.int64).max])
THROUGHPUT_BINS = 40


@dataclass
class Histogram:
    edges: np.ndarray
    counts: np.ndarray = None

    def __post_init__(self):
        if self.counts is None:
            self.counts = np.zeros(len(self.edges) - 1, dtype=np.int64)

    def add(self, values: np.ndarray) -> None:
        self.counts += np.histogram(np.asarray(values, dtype=np.float64), self.edges)[0]

    def as_dict(self) -> dict:
        return {"edges": self.edges.tolist(), "counts": self.counts.tolist()}


@dataclass
class LengthCalls:
    """Sequences per (call, length bin)."""

    counts: np.ndarray = field(default_factory=lambda: np.zeros((len(CALLS), len(LENGTH_EDGES) - 1), dtype=np.int64))

    def add(self, lengths: np.ndarray, calls: list[str]) -> None:
        bins = np.searchsorted(LENGTH_EDGES, lengths, side="right") - 1
        rows = np.array([CALLS.index(call) for call in calls], dtype=np.int64)
        np.add.at(self.counts, (rows, bins), 1)

    def as_dict(self) -> dict:
        return {"edges": LENGTH_EDGES.tolist(), "calls": list(CALLS),
                "counts": {call: row.tolist() for call, row in zip(CALLS, self.counts)}}


@dataclass
class ReportFigures:
    scores: Histogram = field(default_factory=lambda: Histogram(SCORE_EDGES))
    fractions: Histogram = field(default_factory=lambda: Histogram(FRACTION_EDGES))
    lengths: LengthCalls = field(default_factory=LengthCalls)

    def add_scores(self, virus_scores: np.ndarray) -> None:
        """score2 of finite frames."""
        self.scores.add(virus_scores)

    def add_sequences(self, fractions: np.ndarray, lengths: np.ndarray, calls: list[str]) -> None:
        """Fractions of the sequences with a scored chunk; lengths and calls of every sequence."""
        self.fractions.add(fractions)
        self.lengths.add(lengths, calls)

    def add_summaries(self, summaries: list[SequenceSummary], calls: list[str]) -> None:
        if not summaries:
            return
        scored = [s.viral_fraction for s in summaries if s.scored_chunks]
        self.add_sequences(np.array(scored, dtype=np.float64), np.array([s.info.length for s in summaries]), calls)

    def as_dict(self) -> dict:
        return {"score2": self.scores.as_dict(), "viral_fraction": self.fractions.as_dict(),
                "length_by_call": self.lengths.as_dict()}


def throughput(events: list[dict], bins: int = THROUGHPUT_BINS) -> dict:
    """Frames scored per second over the run's wall time, from telemetry 'part' events (all devices summed).

    Each part's frames are spread over the seconds it took; the run is cut into `bins` equal time bins."""
    parts = [e for e in events if e.get("event") == "part" and e.get("seconds") is not None]
    if not parts:
        return {"start": None, "bin_seconds": 0.0, "frames_per_s": [], "frames": 0}
    ends = np.array([e["time"] for e in parts], dtype=np.float64)
    begins = ends - np.array([e["seconds"] for e in parts], dtype=np.float64)
    frames = np.array([e["frames"] for e in parts], dtype=np.float64)
    start, width = begins.min(), max((ends.max() - begins.min()) / bins, 1e-9)
    edges = start + width * np.arange(bins + 1)
    per_bin = np.zeros(bins)
    for begin, end, count in zip(begins, ends, frames):
        if end > begin:
            overlap = np.clip(np.minimum(edges[1:], end) - np.maximum(edges[:-1], begin), 0, None)
            per_bin += count * overlap / (end - begin)
        else:
            per_bin[min(int((end - start) / width), bins - 1)] += count
    return {"start": float(start), "bin_seconds": float(width), "frames_per_s": (per_bin / width).round(3).tolist(),
            "frames": int(frames.sum())}
