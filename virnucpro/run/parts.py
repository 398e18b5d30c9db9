"""Checkpoint parts: `part-<start>-<stop>.h5` (global frame indices) holding ids, scores and optional embeddings.

A part is written under a temporary name, fsynced and renamed, so a part file either is complete or does not
exist; its name records its range, so no separate journal is needed. A restarted shard still verifies every
part (readable, row count, ids equal the prepared ids of that range) and redoes what fails.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from virnucpro.io.atomic import atomic_write, write_text_atomic

log = logging.getLogger(__name__)

_PART_NAME = re.compile(r"^part-(\d+)-(\d+)\.h5$")
DONE = ".done"


@dataclass
class PartData:
    start: int
    ids: list[str]
    scores: np.ndarray
    dna: np.ndarray | None = None
    protein: np.ndarray | None = None

    @property
    def stop(self) -> int:
        return self.start + len(self.ids)


@dataclass(frozen=True)
class PartRef:
    start: int
    stop: int
    path: Path


def part_path(shard_dir: Path, start: int, stop: int) -> Path:
    return shard_dir / f"part-{start:012d}-{stop:012d}.h5"


def list_parts(shard_dir: Path) -> list[PartRef]:
    """Part files by name only (cheap; used by status); sorted by start."""
    refs = []
    with contextlib.suppress(FileNotFoundError):
        for path in shard_dir.iterdir():
            match = _PART_NAME.match(path.name)
            if match:
                refs.append(PartRef(int(match[1]), int(match[2]), path))
    return sorted(refs, key=lambda ref: (ref.start, -ref.stop))


def write_part(shard_dir: Path, part: PartData, before_commit=lambda: None) -> Path:
    """HDF5 is built in memory, then written with plain file I/O: a full disk surfaces as one clean OSError."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        handle.create_dataset("ids", data=np.asarray(part.ids, dtype=object), dtype=h5py.string_dtype())
        handle.create_dataset("scores", data=np.asarray(part.scores, dtype=np.float32))
        for name in ("dna", "protein"):
            if getattr(part, name) is not None:
                handle.create_dataset(name, data=np.asarray(getattr(part, name), dtype=np.float32))
        handle.attrs["start"], handle.attrs["stop"] = part.start, part.stop
    path = part_path(shard_dir, part.start, part.stop)
    with atomic_write(path, "wb") as out:
        out.write(buffer.getbuffer())
        before_commit()
    return path


def read_part(path: Path, with_embeddings: bool = False) -> PartData:
    with h5py.File(path, "r") as handle:
        ids = list(handle["ids"].asstr()[:])
        part = PartData(int(handle.attrs["start"]), ids, handle["scores"][:])
        if with_embeddings:
            part.dna, part.protein = handle["dna"][:], handle["protein"][:]
    return part


def part_problem(ref: PartRef, expected_ids: list[str], with_embeddings: bool) -> str | None:
    """Why this part cannot be trusted, or None when it holds exactly the expected frames."""
    try:
        with h5py.File(ref.path, "r") as handle:
            rows = ref.stop - ref.start
            if int(handle.attrs["start"]) != ref.start or int(handle.attrs["stop"]) != ref.stop:
                return "range attributes disagree with the file name"
            if handle["scores"].shape != (rows, 2) or handle["ids"].shape != (rows,):
                return f"expected {rows} rows"
            if with_embeddings and any(handle[name].shape[0] != rows for name in ("dna", "protein")):
                return "embeddings missing or short"
            if list(handle["ids"].asstr()[:]) != expected_ids:
                return "ids differ from the prepared frames"
    except (OSError, KeyError, ValueError) as error:
        return f"unreadable ({error})"
    return None


def remove_temp_files(shard_dir: Path) -> int:
    """Temporaries left by a killed writer (.<name>.<random>.tmp)."""
    stale = list(shard_dir.glob(".*.tmp"))
    for path in stale:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return len(stale)


def done_path(shard_dir: Path) -> Path:
    return shard_dir / DONE


def write_done(shard_dir: Path, info: dict) -> None:
    write_text_atomic(done_path(shard_dir), json.dumps(info))


def is_done(shard_dir: Path) -> bool:
    return done_path(shard_dir).exists()
