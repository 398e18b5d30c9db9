"""Inputs the published models were not made for: sequences shorter than the chunk length, and short-read runs.

The models were trained on 300/500 bp chunks; the Broad Institute's evaluation of its port found the 300 bp model
near chance on 150 bp reads. Such inputs are still scored (as published), with a warning in the log and the
report; `--min-length` drops short sequences explicitly at prep.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SHORT_READ_MEDIAN = 300  # bp: below this median read length the calls are close to chance
LENGTH_CAP = 1 << 16  # lengths are counted exactly up to here; the median of longer inputs is shown as ">= cap"


@dataclass
class LengthStats:
    """Counts of the lengths of the sequences that are scored, in bounded memory (a capped histogram)."""

    chunk_length: int
    sequences: int = 0
    shorter_than_chunk: int = 0
    histogram: np.ndarray = field(default_factory=lambda: np.zeros(LENGTH_CAP + 1, dtype=np.int64))

    def add(self, lengths: np.ndarray) -> None:
        lengths = np.asarray(lengths, dtype=np.int64)
        self.sequences += lengths.size
        self.shorter_than_chunk += int(np.count_nonzero(lengths < self.chunk_length))
        self.histogram += np.bincount(np.minimum(lengths, LENGTH_CAP), minlength=LENGTH_CAP + 1)

    @property
    def median(self) -> int | None:
        """The (lower) median length; LENGTH_CAP stands for 'at least LENGTH_CAP'."""
        if not self.sequences:
            return None
        return int(np.searchsorted(np.cumsum(self.histogram), (self.sequences + 1) // 2))


def short_input_warnings(stats: LengthStats, dropped: int = 0, min_length: int = 0) -> list[str]:
    """One sentence per problem (empty when the input suits the models)."""
    warnings = []
    if dropped:
        warnings.append(f"{dropped} of {stats.sequences + dropped} sequences are shorter than --min-length {min_length} bp "
                        "and were dropped at prep (listed as too_short in sequence_summary.tsv)")
    short = stats.shorter_than_chunk
    if short:
        warnings.append(f"{short} of {stats.sequences} sequences are shorter than the chunk length "
                        f"({stats.chunk_length} bp); the models were trained on full {stats.chunk_length} bp chunks "
                        "(--min-length drops short sequences)")
    median = stats.median
    if median is not None and median < SHORT_READ_MEDIAN:
        warnings.append(f"the median sequence length is {median} bp (< {SHORT_READ_MEDIAN} bp): the Broad "
                        "Institute study found the 300 bp model near chance on 150 bp reads; treat calls with care")
    return warnings
