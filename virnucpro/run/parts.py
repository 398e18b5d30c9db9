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
    return _content_sha256(start, stop, "\n".join(ids).encode("utf-8"), arrays)


def _content_sha256(start: int, stop: int, joined_ids: bytes, arrays: dict[str, np.ndarray | None]) -> str:
    """content_sha256 with the ids already joined by newlines and encoded (UTF-8)."""
    digest = hashlib.sha256(f"part {start} {stop}\n".encode())
    digest.update(joined_ids)
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


def read_checked_part(ref: PartRef, expected_headers: list[bytes], with_embeddings: bool
                      ) -> tuple[PartData | None, str | None]:
    """(the part, None) when it holds exactly the frames whose header lines (`>id`, bytes) are `expected_headers`,
    unaltered; else (None, why it cannot be trusted). The part is read once: checked and returned from the same
    arrays (embeddings only `with_embeddings`; the checksum covers them either way)."""
    try:
        with h5py.File(ref.path, "r") as handle:
            problem = _shape_problem(handle, ref, with_embeddings)
            if problem:
                return None, problem
            raw_ids = handle["ids"][:].tolist()  # bytes (UTF-8): compared and hashed without decoding each
            if b"\n".join(expected_headers) != (b">" + b"\n>".join(raw_ids) if raw_ids else b""):
                return None, "ids differ from the prepared frames"
            if CHECKSUM_ATTR not in handle.attrs:
                return None, "no content checksum (written by an older virnucpro)"
            arrays = {name: handle[name][:] for name in _ARRAYS if name in handle}
            recorded = str(handle.attrs[CHECKSUM_ATTR])
    except (OSError, KeyError, ValueError, RuntimeError) as error:
        return None, f"unreadable ({error})"
    joined = b"\n".join(raw_ids)
    actual = _content_sha256(ref.start, ref.stop, joined, arrays)
    if actual != recorded:
        return None, (f"content checksum mismatch (recorded sha256 {recorded[:12]}, content {actual[:12]}): "
                      "altered on disk")
    ids = joined.decode("utf-8").split("\n") if raw_ids else []
    part = PartData(ref.start, ids, arrays["scores"])
    if with_embeddings:
        part.dna, part.protein = arrays["dna"], arrays["protein"]
    return part, None


def _shape_problem(handle, ref: PartRef, with_embeddings: bool) -> str | None:
    rows = ref.stop - ref.start
    if int(handle.attrs["start"]) != ref.start or int(handle.attrs["stop"]) != ref.stop:
        return "range attributes disagree with the file name"
    if handle["scores"].shape != (rows, 2) or handle["ids"].shape != (rows,):
        return f"expected {rows} rows"
    if with_embeddings and any(name not in handle or handle[name].shape[0] != rows for name in ("dna", "protein")):
        return "embeddings missing or short"
    return None


def done_path(shard_dir: Path) -> Path:
    return shard_dir / DONE


def write_done(shard_dir: Path, info: dict) -> None:
    write_text_atomic(done_path(shard_dir), json.dumps(info))


def is_done(shard_dir: Path) -> bool:
    return done_path(shard_dir).exists()
