"""Checkpoint parts: `part-<start>-<stop>.h5` (global frame indices) holding ids, scores and optional embeddings.

A part is written under a temporary name, fsynced and renamed, so a part file either is complete or does not
exist; its name records its range, so no separate journal is needed. Each part carries the sha256 of its content
(range, ids, scores, embeddings: attribute `content_sha256`), computed from the arrays before they are written.
Before a part is trusted (at resume and at aggregation) it is read back whole and must be readable, have the
row count of its range, ids equal to the prepared ids of that range and the recorded content sha256; a part that
fails is deleted and redone (run.shard.verified_parts decides and says why).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from virnucpro.io.atomic import atomic_write, write_text_atomic
from virnucpro.run.rundir import DONE

log = logging.getLogger(__name__)

_PART_NAME = re.compile(r"^part-(\d+)-(\d+)\.h5$")


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


CHECKSUM_ATTR = "content_sha256"
_ARRAYS = ("scores", "dna", "protein")


def content_sha256(start: int, stop: int, ids: list[str], arrays: dict[str, np.ndarray | None]) -> str:
    """sha256 of a part's content: its range, its ids and its float32 arrays (little-endian, row-major)."""
    digest = hashlib.sha256(f"part {start} {stop}\n".encode())
    digest.update("\n".join(ids).encode("utf-8"))
    for name in _ARRAYS:
        if arrays.get(name) is not None:
            values = np.ascontiguousarray(arrays[name], dtype="<f4")
            digest.update(f"\n{name} {values.shape}\n".encode())
            digest.update(values.tobytes())
    return digest.hexdigest()


def write_part(shard_dir: Path, part: PartData, before_commit=lambda: None) -> Path:
    """HDF5 is built in memory, then written with plain file I/O: a full disk surfaces as one clean OSError."""
    arrays = {name: getattr(part, name) for name in _ARRAYS}
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        handle.create_dataset("ids", data=np.asarray(part.ids, dtype=object), dtype=h5py.string_dtype())
        handle.create_dataset("scores", data=np.asarray(part.scores, dtype=np.float32))
        for name in ("dna", "protein"):
            if getattr(part, name) is not None:
                handle.create_dataset(name, data=np.asarray(getattr(part, name), dtype=np.float32))
        handle.attrs["start"], handle.attrs["stop"] = part.start, part.stop
        handle.attrs[CHECKSUM_ATTR] = content_sha256(part.start, part.stop, list(part.ids), arrays)
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
    """Why this part cannot be trusted, or None when it holds exactly the expected frames, unaltered."""
    try:
        with h5py.File(ref.path, "r") as handle:
            rows = ref.stop - ref.start
            if int(handle.attrs["start"]) != ref.start or int(handle.attrs["stop"]) != ref.stop:
                return "range attributes disagree with the file name"
            if handle["scores"].shape != (rows, 2) or handle["ids"].shape != (rows,):
                return f"expected {rows} rows"
            embeddings = ("dna", "protein")
            if with_embeddings and any(name not in handle or handle[name].shape[0] != rows for name in embeddings):
                return "embeddings missing or short"
            ids = list(handle["ids"].asstr()[:])
            if ids != expected_ids:
                return "ids differ from the prepared frames"
            if CHECKSUM_ATTR not in handle.attrs:
                return "no content checksum (written by an older virnucpro)"
            arrays = {name: handle[name][:] for name in _ARRAYS if name in handle}
            recorded = str(handle.attrs[CHECKSUM_ATTR])
    except (OSError, KeyError, ValueError, RuntimeError) as error:
        return f"unreadable ({error})"
    actual = content_sha256(ref.start, ref.stop, ids, arrays)
    if actual != recorded:
        return f"content checksum mismatch (recorded sha256 {recorded[:12]}, content {actual[:12]}): altered on disk"
    return None


def done_path(shard_dir: Path) -> Path:
    return shard_dir / DONE


def write_done(shard_dir: Path, info: dict) -> None:
    write_text_atomic(done_path(shard_dir), json.dumps(info))


def is_done(shard_dir: Path) -> bool:
    return done_path(shard_dir).exists()
