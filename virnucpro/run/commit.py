"""Output files written under temporary names and renamed together at the end (`OutputBatch`).

Aggregation and `call` write every final file in one streaming pass; none replaces the previous version until all
of them are complete, so an error (bad classifier, disk full) changes nothing and a kill leaves at most a mix
of complete files that the next run rewrites. Temporaries left by a killed process are removed first.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import IO, Callable

from virnucpro.io.atomic import AtomicPath, atomic_path


def remove_stale_temporaries(folder: Path, names: tuple[str, ...]) -> int:
    """`.<name>.<random>.tmp` files of these outputs (what atomic writes leave when killed)."""
    stale = [path for name in names for path in Path(folder).glob(f".{name}.*.tmp")]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


class OutputBatch:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._targets: dict[str, AtomicPath] = {}
        self._handles: dict[str, IO] = {}

    def open(self, name: str, mode: str = "w") -> IO:
        """A new file that will become folder/name on commit."""
        target = atomic_path(self.folder / name)
        self._targets[name] = target
        encoding = None if "b" in mode else "utf-8"
        handle = open(target.tmp, mode, encoding=encoding, newline=None if encoding is None else "\n")
        self._handles[name] = _Named(handle, self.folder / name)
        return self._handles[name]

    def commit(self, before_each: Callable[[str], None] = lambda name: None) -> list[str]:
        """Close, fsync and rename every file (in the order opened); returns their names."""
        for handle in self._handles.values():
            handle.close()
        for name, target in self._targets.items():
            before_each(name)
            target.commit()
        names = list(self._targets)
        self._targets, self._handles = {}, {}
        return names

    def discard(self) -> None:
        for handle in self._handles.values():
            with contextlib.suppress(OSError):
                handle.close()
        for target in self._targets.values():
            target.discard()
        self._targets, self._handles = {}, {}

    def __enter__(self) -> "OutputBatch":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.discard()


class _Named:
    """A file whose write errors name the output (a failed write() names no file: disk full must say which)."""

    def __init__(self, handle: IO, path: Path):
        self._handle, self._path = handle, path

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def _named(self, call, *args):
        try:
            return call(*args)
        except OSError as error:
            error.filename = error.filename or str(self._path)
            raise

    def write(self, data):
        return self._named(self._handle.write, data)

    def writelines(self, lines):
        return self._named(self._handle.writelines, lines)

    def flush(self):
        return self._named(self._handle.flush)

    def close(self):
        return self._named(self._handle.close)
