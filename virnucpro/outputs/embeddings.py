"""Per-frame embeddings in HDF5: `ids` (UTF-8 strings), `dnabert` float32 [n, 768], `esm` float32 [n, D].

The file-level attributes record which models made the embeddings. Written under a temporary name, fsynced and
renamed, so a reader never opens a half-written file. `EmbeddingsWriter` appends block by block, so a run with
millions of frames never holds all embeddings in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import h5py
import numpy as np

from virnucpro.errors import InputError
from virnucpro.io.atomic import atomic_path
from virnucpro.io.guarded import GuardedFile

FORMAT_VERSION = 1
ROWS_PER_H5_CHUNK = 1024
MODEL_ATTR_PREFIX = "model."


@dataclass
class Embeddings:
    ids: list[str]
    dna: np.ndarray  # float32 [n, dnabert dim]
    protein: np.ndarray  # float32 [n, esm dim]
    models: dict[str, str] = field(default_factory=dict)


class EmbeddingsWriter:
    """Append blocks of (ids, dna, protein) to a new HDF5 file; it appears at `path` only on a clean close."""

    def __init__(self, path: str | Path, dna_dim: int, protein_dim: int, models: Mapping[str, str]):
        self._target = atomic_path(path)
        try:
            # through GuardedFile a full disk fails at close(), never inside HDF5 (tracebacks, exit 139)
            self._handle = GuardedFile(self._target.tmp, self._target.final)
            self._file = h5py.File(self._handle, "w")
            self._create_datasets(dna_dim, protein_dim)
            self._write_attrs(models)
        except BaseException:
            self._target.discard()
            raise
        self.rows = 0

    def _create_datasets(self, dna_dim: int, protein_dim: int) -> None:
        text = h5py.string_dtype("utf-8")
        self._ids = self._file.create_dataset("ids", (0,), dtype=text, maxshape=(None,), chunks=(ROWS_PER_H5_CHUNK,))
        self._dna = self._matrix("dnabert", dna_dim)
        self._protein = self._matrix("esm", protein_dim)

    def _matrix(self, name: str, dim: int) -> h5py.Dataset:
        return self._file.create_dataset(
            name, (0, dim), dtype=np.float32, maxshape=(None, dim), chunks=(ROWS_PER_H5_CHUNK, dim)
        )

    def _write_attrs(self, models: Mapping[str, str]) -> None:
        self._file.attrs["format_version"] = FORMAT_VERSION
        for name, identity in models.items():
            self._file.attrs[MODEL_ATTR_PREFIX + name] = str(identity)

    def append(self, ids: Sequence[str], dna: np.ndarray, protein: np.ndarray) -> None:
        dna, protein = np.asarray(dna, dtype=np.float32), np.asarray(protein, dtype=np.float32)
        if not len(ids) == len(dna) == len(protein):
            raise ValueError(f"{len(ids)} ids but {len(dna)} dnabert rows and {len(protein)} esm rows")
        if not len(ids):
            return
        start, stop = self.rows, self.rows + len(ids)
        for dataset, values in ((self._ids, list(ids)), (self._dna, dna), (self._protein, protein)):
            dataset.resize(stop, axis=0)
            dataset[start:stop] = values
        self.rows = stop

    def close(self) -> None:
        self._file.close()
        self._handle.close()
        if self._handle.error is not None:
            self._target.discard()
            self._handle.raise_error()
        self._target.commit()

    def abort(self) -> None:
        self._file.close()
        self._handle.close()
        self._target.discard()

    def __enter__(self) -> "EmbeddingsWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def read_embeddings_h5(path: str | Path) -> Embeddings:
    path = Path(path)
    try:
        with h5py.File(path, "r") as handle:
            return Embeddings(
                ids=[value.decode("utf-8") for value in handle["ids"][:]],
                dna=handle["dnabert"][:],
                protein=handle["esm"][:],
                models={
                    key[len(MODEL_ATTR_PREFIX):]: str(value)
                    for key, value in handle.attrs.items()
                    if key.startswith(MODEL_ATTR_PREFIX)
                },
            )
    except (OSError, KeyError) as error:
        raise InputError(path, f"not a virnucpro embeddings file ({error})") from None
