"""nonfinite_frames.tsv: frames whose scores are not finite (NaN/inf even after the engine's fp32 retry).

They are left out of prediction_results.txt and the consensus (a NaN must never reach an output a person reads as
a score) and listed here instead, one row per frame in frame order; the summary and the report count them.
"""

from __future__ import annotations

from typing import IO, Sequence

import numpy as np

HEADER = "Sequence_ID\tscore1\tscore2"


def finite_rows(scores: np.ndarray) -> np.ndarray:
    """Which frames have two finite scores."""
    return np.isfinite(scores).all(axis=1)


class NonfiniteWriter:
    def __init__(self, handle: IO[str]):
        self.handle = handle
        self.rows = 0
        handle.write(HEADER + "\n")

    def add(self, ids: Sequence[str], scores: np.ndarray) -> None:
        self.handle.write("".join(f"{frame_id}\t{score1!s}\t{score2!s}\n"
                                  for frame_id, score1, score2 in zip(ids, scores[:, 0], scores[:, 1])))
        self.rows += len(ids)
