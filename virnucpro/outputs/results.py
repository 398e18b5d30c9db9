"""prediction_results.txt in the published format: one row per kept frame, tab-separated.

The published tool wrote elements of a float32 numpy array, so each score is `str(numpy.float32(x))`
(shortest string that round-trips in float32, e.g. `0.12100612`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from virnucpro.errors import InputError
from virnucpro.io.atomic import atomic_write

HEADER = "Sequence_ID\tPrediction\tscore1\tscore2"
LABELS = ("others", "virus")  # softmax column 0, column 1
ROWS_PER_WRITE = 65536


def format_score(value) -> str:
    """A score as the published tool printed it."""
    return str(np.float32(value))


def predictions(scores: np.ndarray) -> np.ndarray:
    """'virus' where score2 > score1; ties go to 'others' because torch.max returns the first maximum."""
    return np.where(scores[:, 1] > scores[:, 0], LABELS[1], LABELS[0])


def write_prediction_results(path: str | Path, ids: Sequence[str], scores: np.ndarray) -> None:
    """Write the header and one row per frame id, atomically. `scores` is [n, 2] (score1 = others, score2 = virus)."""
    scores = _as_float32_pairs(scores, len(ids))
    with atomic_write(path) as handle:
        handle.write(HEADER + "\n")
        for start in range(0, len(ids), ROWS_PER_WRITE):
            stop = start + ROWS_PER_WRITE
            handle.write(_format_rows(ids[start:stop], scores[start:stop]))


def _as_float32_pairs(scores, n: int) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float32)
    if scores.shape != (n, 2):
        raise ValueError(f"scores must have shape ({n}, 2), got {scores.shape}")
    return scores


def _format_rows(ids: Sequence[str], scores: np.ndarray) -> str:
    # Iterating a float32 array yields numpy float32 scalars whose str() (not format(), which goes through
    # float64) is the published text.
    labels = predictions(scores)
    lines = [
        f"{seq_id}\t{label}\t{score1!s}\t{score2!s}\n"
        for seq_id, label, score1, score2 in zip(ids, labels, scores[:, 0], scores[:, 1])
    ]
    return "".join(lines)


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
