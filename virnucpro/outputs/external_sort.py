"""Sort (key, value) text pairs by key in bounded memory: sorted runs on disk, then one k-way merge.

Keys sort in Python string order (code points), as pandas' groupby sorted the published consensus. Up to
`run_rows` pairs stay in memory; past that each full buffer is sorted and written to a run file in `workdir`,
and `sorted_pairs` merges the runs (plus what is still in memory) lazily. Keys and values must not contain a tab
or a newline (chunk ids never do: they are the first word of a header).
"""

from __future__ import annotations

import heapq
from pathlib import Path
from typing import Iterable, Iterator

RUN_ROWS = 1 << 18  # ~50 MB of Python strings per run


class ExternalSorter:
    def __init__(self, workdir: Path, run_rows: int = RUN_ROWS):
        self.workdir = Path(workdir)
        self.run_rows = run_rows
        self.rows = 0
        self._keys: list[str] = []
        self._values: list[str] = []
        self._runs: list[Path] = []

    def add(self, keys: Iterable[str], values: Iterable[str]) -> None:
        self._keys.extend(keys)
        self._values.extend(values)
        while len(self._keys) >= self.run_rows:
            self._spill(self.run_rows)

    def _spill(self, rows: int) -> None:
        pairs = sorted(zip(self._keys[:rows], self._values[:rows]))
        del self._keys[:rows], self._values[:rows]
        self.workdir.mkdir(parents=True, exist_ok=True)
        path = self.workdir / f"run-{len(self._runs):06d}.tsv"
        with open(path, "w", encoding="utf-8", newline="\n") as handle:
            handle.writelines(f"{key}\t{value}\n" for key, value in pairs)
        self._runs.append(path)
        self.rows += len(pairs)

    @property
    def spilled_runs(self) -> int:
        return len(self._runs)

    def sorted_pairs(self) -> Iterator[tuple[str, str]]:
        """Every pair added, by key; the run files are removed once read."""
        in_memory = sorted(zip(self._keys, self._values))
        self._keys, self._values = [], []
        if not self._runs:
            yield from in_memory
            return
        try:
            yield from heapq.merge(in_memory, *(_read_run(path) for path in self._runs))
        finally:
            self.remove_runs()

    def remove_runs(self) -> None:
        for path in self._runs:
            path.unlink(missing_ok=True)
        self._runs = []


def _read_run(path: Path) -> Iterator[tuple[str, str]]:
    with open(path, encoding="utf-8", newline="\n") as handle:
        for line in handle:
            key, _, value = line[:-1].partition("\t")
            yield key, value
