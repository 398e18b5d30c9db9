"""prediction_results.txt in the published format: one row per kept frame, tab-separated.

The published tool wrote elements of a float32 numpy array, so each score is `str(numpy.float32(x))`
(shortest string that round-trips in float32, e.g. `0.12100612`).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import IO, Iterator, Sequence

import numpy as np

from virnucpro.errors import InputError
from virnucpro.outputs.nonfinite import finite_rows

HEADER = "Sequence_ID\tPrediction\tscore1\tscore2"
LABELS = ("others", "virus")  # softmax column 0, column 1
ROWS_PER_WRITE = 65536
_CELL_VIRUS, _CELL_OTHERS = f"\t{LABELS[1]}\t", f"\t{LABELS[0]}\t"  # a label with the tabs around it


def format_score(value) -> str:
    """A score as the published tool printed it."""
    return str(np.float32(value))


def predictions(scores: np.ndarray, min_score: float | None = None) -> np.ndarray:
    """'virus' where score2 > score1; ties go to 'others' because torch.max returns the first maximum.
    With `min_score`: 'virus' where score2 >= min_score."""
    virus = scores[:, 1] > scores[:, 0] if min_score is None else scores[:, 1] >= np.float32(min_score)
    return np.where(virus, LABELS[1], LABELS[0])


class PredictionWriter:
    """prediction_results.txt block by block: the header, then `add(ids, scores)` for each block in frame order."""

    def __init__(self, handle: IO[str], min_score: float | None = None):
        self.handle = handle
        self.min_score = min_score
        self.rows = 0
        handle.write(HEADER + "\n")

    def add(self, ids: Sequence[str], scores: np.ndarray) -> None:
        scores = _as_float32_pairs(scores, len(ids))
        for start in range(0, len(ids), ROWS_PER_WRITE):
            stop = start + ROWS_PER_WRITE
            self.handle.write(format_rows(ids[start:stop], scores[start:stop], self.min_score))
        self.rows += len(ids)


    def add_text(self, text: str, rows: int) -> None:
        """`rows` rows already formatted (finite_prediction_rows), e.g. by the process that reads the parts."""
        self.handle.write(text)
        self.rows += rows


def finite_prediction_rows(ids: Sequence[str], scores: np.ndarray, min_score: float | None = None) -> tuple[str, int]:
    """(the rows, their number) of the frames whose scores are finite: what prediction_results.txt gets of a
    block (the other frames go to nonfinite_frames.tsv)."""
    scores = _as_float32_pairs(scores, len(ids))
    finite = finite_rows(scores)
    if finite.all():
        return format_rows(ids, scores, min_score), len(ids)
    return format_rows(list(itertools.compress(ids, finite.tolist())), scores[finite], min_score), int(finite.sum())


def _as_float32_pairs(scores, n: int) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float32)
    if scores.shape != (n, 2):
        raise ValueError(f"scores must have shape ({n}, 2), got {scores.shape}")
    return scores


def format_rows(ids: Sequence[str], scores: np.ndarray, min_score: float | None = None) -> str:
    """The rows of these frames (float32 scores [n, 2]), without the header."""
    # A float32 array's astype(str) is each value's str(numpy.float32(x)) (the published text), done in C. The
    # row's cells and separators are interleaved in one list and joined once: no string made per row.
    rows = len(ids)
    cells: list = [None] * (6 * rows)
    cells[0::6] = ids
    cells[1::6] = np.where(predictions(scores, min_score) == LABELS[1], _CELL_VIRUS, _CELL_OTHERS).tolist()
    cells[2::6] = scores[:, 0].astype(str).tolist()
    cells[3::6] = ["\t"] * rows
    cells[4::6] = scores[:, 1].astype(str).tolist()
    cells[5::6] = ["\n"] * rows
    return "".join(cells)


def read_prediction_results(path: str | Path) -> tuple[list[str], np.ndarray, list[str]]:
    """(ids, scores [n, 2] float64 exactly as written, predictions); raises InputError on a malformed file."""
    path = Path(path)
    ids: list[str] = []
    values: list[tuple[float, float]] = []
    labels: list[str] = []
    with open(path, encoding="utf-8") as handle:
        header = handle.readline().rstrip("\n")
        if header != HEADER:
            raise InputError(path, f"header is {header!r}, expected {HEADER!r}", line=1)
        for line_number, line in enumerate(handle, start=2):
            seq_id, label, pair = _parse_row(path, line, line_number)
            ids.append(seq_id)
            labels.append(label)
            values.append(pair)
    return ids, np.array(values, dtype=np.float64).reshape(-1, 2), labels


def _parse_row(path: Path, line: str, line_number: int) -> tuple[str, str, tuple[float, float]]:
    fields = line.rstrip("\n").split("\t")
    if len(fields) != 4:
        raise InputError(path, f"expected 4 tab-separated fields, got {len(fields)}", line=line_number)
    try:
        pair = (float(fields[2]), float(fields[3]))
    except ValueError:
        raise InputError(path, "score is not a number", record=fields[0], line=line_number) from None
    return fields[0], fields[1], pair


def iter_virus_scores(path: str | Path, rows: int = ROWS_PER_WRITE) -> Iterator[np.ndarray]:
    """The score2 column of a prediction_results.txt as float32 blocks (each value exactly as written), streamed."""
    path = Path(path)
    with open(path, encoding="utf-8") as handle:
        header = handle.readline().rstrip("\n")
        if header != HEADER:
            raise InputError(path, f"header is {header!r}, expected {HEADER!r}", line=1)
        block: list[str] = []
        for line in handle:
            block.append(line[line.rindex("\t") + 1:])
            if len(block) == rows:
                yield _float32_column(path, block)
                block = []
        if block:
            yield _float32_column(path, block)


def _float32_column(path: Path, texts: list[str]) -> np.ndarray:
    try:
        return np.array(texts, dtype=np.float64).astype(np.float32)
    except ValueError:
        raise InputError(path, "score2 is not a number") from None
