"""Exact de-duplication of prepared frames: identical frames are scored once, their scores fanned out later.

Two frames are the same when both their nucleotide slice AND their protein are byte-identical (with ambiguous
codons, equal nucleotides can translate differently, so the protein is part of the key). The first occurrence in
prep order stands for all; the GPU scores only these distinct frames, in prep order.

Bounded memory at any input size, by hash partitioning on disk:
1. every frame's 128-bit BLAKE2b hash of its text is appended, with the text itself, to one of B bucket files
   chosen by the hash (streaming over the prepared files in chunks);
2. each bucket (~BUCKET_BYTES) is read alone, sorted by (hash, frame), and every frame whose hash equals an
   earlier frame's is checked against that frame's actual text: a hash collision never merges two frames;
3. one chunked pass in prep order numbers the distinct frames.

Written into the prep folder (io.mapped array folders, each published atomically; the map last):
    prep/dedup.unique/   frames (prepared index of each distinct frame, increasing), aa_lengths: a FrameSource
                         selection, i.e. what the shards score
    prep/dedup.map/      unique (ordinal of the distinct frame of every prepared frame): the fan-out
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import resource
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from virnucpro.io.mapped import ArrayFolderWriter, MappedArrays, iter_chunks, remove_stale_temporaries, scratch_array
from virnucpro.io.prep_files import DEDUP_MAP, DEDUP_UNIQUE, IDENTIFIED_NUCLEOTIDE, IDENTIFIED_PROTEIN, FrameSource
from virnucpro.run.manifest import Manifest
from virnucpro.run.rundir import RunDir

log = logging.getLogger(__name__)

WORK_DIR = ".dedup-work"
HASH_FRAMES = 1 << 17  # frames hashed per step
BUCKET_BYTES = 1 << 26  # frame text per bucket: what one resolve step holds in memory (~3x this at its peak)
MAX_BUCKETS = 2048
NUMBER_FRAMES = 1 << 20  # frames per step of the numbering pass
_KEY_FIELDS = 4  # per frame in a bucket: hash (2 x uint64), prepared index, text length

FrameHash = Callable[[bytes], bytes]  # frame text -> 16 bytes


def blake2b_128(text: bytes) -> bytes:
    return hashlib.blake2b(text, digest_size=16).digest()


@dataclass(frozen=True)
class DedupResult:
    frames: int
    unique_frames: int
    collisions: int  # equal hashes with different text (kept apart by the text check)


def frame_text(nucleotide: bytes, protein: bytes) -> bytes:
    """The de-duplication key: both texts (a newline never occurs in either)."""
    return nucleotide + b"\n" + protein


# ---------------------------------------------------------------- 1. hash into buckets


def bucket_count(source: FrameSource) -> int:
    """Enough buckets for ~BUCKET_BYTES of text each, as many as this process may keep open at once."""
    text_bytes = sum(Path(source.prep_dir, name).stat().st_size for name in (IDENTIFIED_NUCLEOTIDE, IDENTIFIED_PROTEIN))
    return int(min(open_file_budget(), max(1, math.ceil(text_bytes / BUCKET_BYTES))))


def open_file_budget() -> int:
    """Files the bucket pass may hold open: raises the soft limit to the hard one, keeps room for the rest."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = MAX_BUCKETS + 256 if hard == resource.RLIM_INFINITY else min(MAX_BUCKETS + 256, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
    return MAX_BUCKETS if soft == resource.RLIM_INFINITY else max(1, min(MAX_BUCKETS, soft - 128))


def _bucket_path(work: Path, bucket: int) -> Path:
    return work / f"bucket-{bucket:05d}.bin"


def _hash_chunk(source: FrameSource, start: int, stop: int, hash_text: FrameHash):
    nucleotides, proteins = source.texts(start, stop)
    texts = [frame_text(nt, aa) for nt, aa in zip(nucleotides, proteins)]
    keys = np.empty((len(texts), _KEY_FIELDS), dtype=np.int64)
    keys[:, 0:2] = np.frombuffer(b"".join(hash_text(text) for text in texts), dtype="<i8").reshape(-1, 2)
    keys[:, 2] = np.arange(start, stop)
    keys[:, 3] = [len(text) for text in texts]
    return keys, texts


def hash_into_buckets(source: FrameSource, work: Path, buckets: int, hash_text: FrameHash, on_event) -> None:
    """Append (keys, texts) segments of every frame to its bucket file, chunk by chunk (all buckets stay open)."""
    with contextlib.ExitStack() as stack:
        files = [stack.enter_context(open(_bucket_path(work, bucket), "wb")) for bucket in range(buckets)]
        for start, stop in iter_chunks(source.prepared_frames, HASH_FRAMES):
            keys, texts = _hash_chunk(source, start, stop, hash_text)
            bucket_of = keys[:, 0].view(np.uint64) % np.uint64(buckets)
            order = np.argsort(bucket_of, kind="stable")
            for members in np.split(order, np.flatnonzero(np.diff(bucket_of[order])) + 1):
                handle = files[int(bucket_of[members[0]])]
                handle.write(np.int64(len(members)).tobytes())
                handle.write(keys[members].tobytes())
                handle.write(b"".join(texts[i] for i in members))
            on_event("dedup")


# ---------------------------------------------------------------- 2. resolve each bucket


def _read_bucket(path: Path) -> tuple[np.ndarray, bytes]:
    keys, blobs = [], []
    with open(path, "rb") as handle:
        while header := handle.read(8):
            count = int(np.frombuffer(header, dtype=np.int64)[0])
            segment = np.frombuffer(handle.read(count * _KEY_FIELDS * 8), dtype=np.int64).reshape(count, _KEY_FIELDS)
            keys.append(segment)
            blobs.append(handle.read(int(segment[:, 3].sum())))
    if not keys:
        return np.zeros((0, _KEY_FIELDS), dtype=np.int64), b""
    return np.concatenate(keys), b"".join(blobs)


def _representatives(keys: np.ndarray, blob: bytes) -> tuple[np.ndarray, np.ndarray, int]:
    """(frames, their first identical frame, collisions) of one bucket."""
    ends = np.cumsum(keys[:, 3])
    starts = ends - keys[:, 3]
    order = np.lexsort((keys[:, 2], keys[:, 1], keys[:, 0]))  # by hash, then prep order
    hashes = keys[order, :2]
    new_hash = np.ones(len(order), dtype=bool)
    new_hash[1:] = np.any(hashes[1:] != hashes[:-1], axis=1)
    group_first = np.maximum.accumulate(np.where(new_hash, np.arange(len(order)), 0))
    frames, reps = keys[order, 2], keys[order[group_first], 2]
    collisions = 0
    text = lambda row: blob[starts[row]:ends[row]]  # noqa: E731
    for position in np.flatnonzero(~new_hash):
        first = group_first[position]
        if text(order[position]) == text(order[first]):
            continue
        # a hash collision: the frame goes with the earliest frame of the group with its text, or stands alone
        collisions += 1
        reps[position] = frames[position]
        for earlier in range(first, position):
            if reps[earlier] == frames[earlier] and text(order[earlier]) == text(order[position]):
                reps[position] = frames[earlier]
                break
    return frames, reps, collisions


def resolve_buckets(work: Path, buckets: int, reps: np.ndarray, on_event) -> int:
    """reps[frame] = the first frame (prep order) with the same text; returns the hash collisions seen."""
    collisions = 0
    for bucket in range(buckets):
        path = _bucket_path(work, bucket)
        frames, firsts, seen = _representatives(*_read_bucket(path))
        reps[frames] = firsts
        collisions += seen
        path.unlink()
        on_event("dedup")
    return collisions


# ---------------------------------------------------------------- 3. number the distinct frames


def number_unique(source: FrameSource, reps: np.ndarray, unique_dir: Path, map_dir: Path) -> int:
    """Write the selection of distinct frames and every frame's distinct ordinal; reps is overwritten."""
    count = 0
    with ArrayFolderWriter(unique_dir, {"frames": "int64", "aa_lengths": "int32"}) as unique, \
            ArrayFolderWriter(map_dir, {"unique": "int64"}) as mapping:
        for start, stop in iter_chunks(len(reps), NUMBER_FRAMES):
            first_of = np.array(reps[start:stop])
            is_first = first_of == np.arange(start, stop)
            ordinals = np.empty(stop - start, dtype=np.int64)
            ordinals[is_first] = count + np.arange(int(is_first.sum()))
            count += int(is_first.sum())
            reps[start:stop][is_first] = ordinals[is_first]  # a first frame's slot now holds its ordinal
            ordinals[~is_first] = reps[first_of[~is_first]]  # ... which later duplicates look up
            reps[start:stop] = ordinals
            unique.append(frames=np.arange(start, stop)[is_first], aa_lengths=source.aa_lengths[start:stop][is_first])
            mapping.append(unique=ordinals)
        unique.commit({"frames": len(reps)})
        mapping.commit({"frames": len(reps), "unique_frames": count})
    return count


# ---------------------------------------------------------------- the step


def plan_dedup(prep_dir: Path, *, on_event=lambda name: None, hash_text: FrameHash = blake2b_128,
               buckets: int | None = None) -> DedupResult:
    """De-duplicate the indexed prepared frames of prep_dir; idempotent (a killed run starts this step over)."""
    prep_dir = Path(prep_dir)
    source = FrameSource(prep_dir)
    work = prep_dir / WORK_DIR
    for folder in (DEDUP_UNIQUE, DEDUP_MAP):
        remove_stale_temporaries(prep_dir / folder)
        shutil.rmtree(prep_dir / folder, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    buckets = buckets or bucket_count(source)
    try:
        hash_into_buckets(source, work, buckets, hash_text, on_event)
        with scratch_array(work, "reps", np.int64, (source.prepared_frames,)) as reps:
            collisions = resolve_buckets(work, buckets, reps, on_event)
            unique = number_unique(source, reps, prep_dir / DEDUP_UNIQUE, prep_dir / DEDUP_MAP)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if collisions:
        log.warning("%d frames share a 128-bit hash with a different frame (kept apart by their text)", collisions)
    log.info("de-duplication: %d frames, %d distinct (%.1f%% duplicates)", source.prepared_frames, unique,
             100 * (1 - unique / max(source.prepared_frames, 1)))
    return DedupResult(source.prepared_frames, unique, collisions)


def unique_of_frames(prep_dir: Path) -> np.ndarray:
    """Memory-mapped ordinal of the distinct frame of every prepared frame."""
    return MappedArrays(Path(prep_dir) / DEDUP_MAP)["unique"]


def unique_source(prep_dir: Path) -> FrameSource:
    """The distinct frames, in prep order, as a FrameSource (what a de-duplicated run scores)."""
    return FrameSource(prep_dir, selection=Path(prep_dir) / DEDUP_UNIQUE)


def scoring_source(run: RunDir, manifest: Manifest) -> FrameSource:
    """The frames a run's shards score: the distinct ones when de-duplicated, else every prepared frame."""
    return unique_source(run.prep) if manifest.dedup else FrameSource(run.prep)
