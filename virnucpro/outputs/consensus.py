"""The published per-chunk consensus (prediction_results_highestscore.csv).

A chunk (the frame id without its two-character frame suffix F1..R3) is viral when its best virus score is at
least its best non-virus score (or, with a `min_score`, when its best virus score is at least that). Rows come
out sorted by chunk id in Python string order, as pandas' groupby produced them: chunks arrive in frame order, so
`HighestScoreTable` sorts them in bounded memory (outputs.external_sort) before writing.
"""

from __future__ import annotations

import csv
import itertools
from pathlib import Path
from typing import IO, Iterator

import numpy as np

from virnucpro.outputs.chunks import ChunkBlock
from virnucpro.outputs.external_sort import RUN_ROWS, ExternalSorter

HEADER = ("Modified_ID", "Is_Virus")


def chunk_is_virus(best_others: np.ndarray, best_virus: np.ndarray, min_score: float | None = None) -> np.ndarray:
    """The chunk call: best score2 >= best score1 (published; a tie is viral), or best score2 >= min_score."""
    if min_score is None:
        return best_virus >= best_others
    return best_virus >= np.float32(min_score)


def table_writer(handle: IO[str]):
    """Tab-separated with pandas' to_csv quoting (csv.QUOTE_MINIMAL) and "\\n" line ends."""
    return csv.writer(handle, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)


class HighestScoreTable:
    """Collects scored chunks in frame order; `write` emits them sorted by chunk id."""

    def __init__(self, workdir: Path, run_rows: int = RUN_ROWS):
        self.sorter = ExternalSorter(workdir, run_rows)

    def add(self, chunks: ChunkBlock, is_virus: np.ndarray) -> None:
        self.sorter.add(chunks.ids, np.where(is_virus, "True", "False").tolist())

    def write(self, handle: IO[str]) -> None:
        table_writer(handle).writerow(HEADER)
        for rows in _batches(self.sorter.sorted_pairs()):
            if any('"' in chunk for chunk, _ in rows):
                table_writer(handle).writerows(rows)  # pandas' quoting; chunk ids never hold a tab or newline
            else:
                handle.write("".join(f"{chunk}\t{flag}\n" for chunk, flag in rows))

    def discard(self) -> None:
        self.sorter.remove_runs()


def _batches(pairs: Iterator, size: int = 65536) -> Iterator[list]:
    while rows := list(itertools.islice(pairs, size)):
        yield rows
