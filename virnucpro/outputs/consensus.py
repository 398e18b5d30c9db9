"""The published per-chunk consensus (prediction_results_highestscore.csv).

Frames are grouped by chunk id (the frame id without its two-character frame suffix F1..R3); a chunk is viral
when its best virus score is at least its best non-virus score. Rows come out sorted by chunk id in Python
string order, as pandas' groupby produced them.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from virnucpro.io.atomic import atomic_write

HEADER = ("Modified_ID", "Is_Virus")
FRAME_SUFFIX_LENGTH = 2


@dataclass
class ChunkMaxima:
    best_others: float  # max score1 over the chunk's frames
    best_virus: float  # max score2 over the chunk's frames

    @property
    def is_virus(self) -> bool:
        return self.best_virus >= self.best_others


def chunk_id_of_frame(frame_id: str) -> str:
    return frame_id[:-FRAME_SUFFIX_LENGTH]


def chunk_maxima(ids: Sequence[str], score1, score2) -> dict[str, ChunkMaxima]:
    """Per chunk id, the best score of each class over its frames (in order of first appearance)."""
    maxima: dict[str, ChunkMaxima] = {}
    for frame_id, others, virus in zip(ids, np.asarray(score1).tolist(), np.asarray(score2).tolist()):
        chunk = chunk_id_of_frame(frame_id)
        best = maxima.get(chunk)
        if best is None:
            maxima[chunk] = ChunkMaxima(others, virus)
        else:
            best.best_others = max(best.best_others, others)
            best.best_virus = max(best.best_virus, virus)
    return maxima


def highest_score(ids: Sequence[str], score1, score2=None) -> list[tuple[str, bool]]:
    """[(chunk id, is virus)] sorted by chunk id. Pass the two score columns, or one [n, 2] array as `score1`."""
    if score2 is None:
        scores = np.asarray(score1)
        score1, score2 = scores[:, 0], scores[:, 1]
    if not len(ids) == len(score1) == len(score2):
        raise ValueError(f"{len(ids)} ids but {len(score1)} score1 and {len(score2)} score2 values")
    maxima = chunk_maxima(ids, score1, score2)
    return [(chunk, maxima[chunk].is_virus) for chunk in sorted(maxima)]


def write_highest_score(path: str | Path, rows: Iterable[tuple[str, bool]]) -> None:
    """Tab-separated, header `Modified_ID\\tIs_Virus`, values True/False; quoting as pandas' to_csv does."""
    with atomic_write(path, encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(HEADER)
        writer.writerows((chunk, "True" if is_virus else "False") for chunk, is_virus in rows)
