"""`--consensus-format broad`: prediction_results_highestscore.csv as the Broad Institute's VirNucPro port writes it.

The port (broadinstitute/virnucpro-broad, virnucpro/pipeline/prediction.py, stage "Consensus Scoring", with
`compute_consensus` in virnucpro/pipeline/predictor.py) groups the frames of prediction_results.txt by chunk in a
dict and writes a pandas DataFrame with `to_csv(sep="\\t", index=False)`:
- four tab-separated columns `Modified_ID`, `Is_Virus`, `max_score_0`, `max_score_1` (the chunk's best score1
  and best score2), header first;
- rows in order of the chunks' first appearance (frame order), not sorted;
- `Is_Virus` is `True`/`False` (best score2 >= best score1);
- scores are Python floats printed by repr: the port's scores are float32 softmax values turned into Python
  floats (`.item()`), e.g. `0.12100611627101898`;
- with no chunk at all, pandas writes an empty DataFrame as a single empty line.
"""

from __future__ import annotations

from typing import IO

import numpy as np

from virnucpro.outputs.chunks import ChunkBlock
from virnucpro.outputs.consensus import table_writer

HEADER = ("Modified_ID", "Is_Virus", "max_score_0", "max_score_1")
EMPTY_FILE = "\n"


class BroadTable:
    """Writes scored chunks as they come (frame order); `finish` handles the no-chunk case."""

    def __init__(self, handle: IO[str]):
        self.handle = handle
        self.writer = table_writer(handle)
        self.rows = 0

    def add(self, chunks: ChunkBlock, is_virus: np.ndarray) -> None:
        if not len(chunks):
            return
        if self.rows == 0:
            self.writer.writerow(HEADER)
        # float32 -> float64 is exact; csv writes a float with repr(), as pandas' to_csv does
        self.writer.writerows(zip(chunks.ids, np.where(is_virus, "True", "False").tolist(),
                                  chunks.best_others.astype(np.float64).tolist(),
                                  chunks.best_virus.astype(np.float64).tolist()))
        self.rows += len(chunks)

    def finish(self) -> None:
        if self.rows == 0:
            self.handle.write(EMPTY_FILE)
