"""Folders of one-dimensional arrays on disk, written in chunks and read back memory-mapped.

    FOLDER/<name>.bin     raw little-endian values, one file per array
    FOLDER/arrays.json    {"length": n, "dtypes": {name: dtype}, "meta": {...}}: written last

A folder is written under a temporary sibling name and renamed into place once every array is fsynced, so a
reader sees either no folder or a complete one. Readers get `np.memmap`s: host memory does not grow with the
number of entries (the pages are the kernel's page cache, dropped under pressure), and the arrays pickle as
their folder path only (`MappedArrays`), so worker processes reopen them instead of copying them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from virnucpro.io.atomic import fsync_dir, write_text_atomic

META = "arrays.json"


class ArrayFolderWriter:
    """Appends chunks to named arrays; `commit()` publishes the folder, `discard()` (or an exception) drops it."""

    def __init__(self, folder: str | os.PathLike, dtypes: dict[str, str]):
        self.folder = Path(folder)
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        self.dtypes = {name: np.dtype(dtype).newbyteorder("<") for name, dtype in dtypes.items()}
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.folder.name}.", suffix=".tmp", dir=self.folder.parent))
        self.handles = {name: open(self.tmp / f"{name}.bin", "wb") for name in self.dtypes}
        self.lengths = dict.fromkeys(self.dtypes, 0)

    def append(self, **chunks: np.ndarray) -> None:
        for name, values in chunks.items():
            values = np.ascontiguousarray(values, dtype=self.dtypes[name])
            self.handles[name].write(values.tobytes())
            self.lengths[name] += len(values)

    def commit(self, meta: dict | None = None) -> Path:
        lengths = set(self.lengths.values())
        if len(lengths) > 1:
            raise ValueError(f"arrays of {self.folder} have different lengths: {self.lengths}")
        for handle in self.handles.values():
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        description = {"length": lengths.pop() if lengths else 0,
                       "dtypes": {name: dtype.str for name, dtype in self.dtypes.items()}, "meta": meta or {}}
        write_text_atomic(self.tmp / META, json.dumps(description, indent=1))
        shutil.rmtree(self.folder, ignore_errors=True)  # an older, complete copy: replaced as a whole
        os.rename(self.tmp, self.folder)
        fsync_dir(self.folder.parent)
        return self.folder

    def discard(self) -> None:
        for handle in self.handles.values():
            handle.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> "ArrayFolderWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.discard()


def is_complete(folder: str | os.PathLike) -> bool:
    return (Path(folder) / META).exists()


def remove_stale_temporaries(folder: str | os.PathLike) -> None:
    """Temporary folders of writers that were killed before `commit()`."""
    folder = Path(folder)
    for stale in folder.parent.glob(f".{folder.name}.*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)


class MappedArrays:
    """The arrays of a committed folder as read-only memmaps (`arrays[name]`); pickles as its path."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        try:
            description = json.loads((self.folder / META).read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.folder}: incomplete array folder (no {META})") from None
        self.length = int(description["length"])
        self.meta = description["meta"]
        self._dtypes = {name: np.dtype(dtype) for name, dtype in description["dtypes"].items()}
        self._arrays = {name: self._map(name, dtype) for name, dtype in self._dtypes.items()}

    def _map(self, name: str, dtype: np.dtype) -> np.ndarray:
        if self.length == 0:  # mmap cannot map an empty file
            return np.zeros(0, dtype=dtype)
        return np.memmap(self.folder / f"{name}.bin", dtype=dtype, mode="r", shape=(self.length,))

    def __getitem__(self, name: str) -> np.ndarray:
        return self._arrays[name]

    def __len__(self) -> int:
        return self.length

    def __getstate__(self) -> dict:
        return {"folder": self.folder}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["folder"])


def iter_chunks(length: int, size: int):
    """[start, stop) ranges of at most `size` covering [0, length)."""
    for start in range(0, length, size):
        yield start, min(start + size, length)


@contextlib.contextmanager
def scratch_array(folder: str | os.PathLike, prefix: str, dtype, shape: tuple[int, ...]):
    """A writable memmap in a temporary file under `folder`, removed afterwards (for tables too large for RAM)."""
    fd, path = tempfile.mkstemp(prefix=f".{prefix}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        size = int(np.prod(shape)) if shape else 1
        if size == 0:
            yield np.zeros(shape, dtype=dtype)
        else:
            yield np.memmap(path, dtype=dtype, mode="w+", shape=shape)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
