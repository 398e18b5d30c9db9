"""Scored frames of a finished run in frame order: every shard's verified parts, read one at a time."""

from __future__ import annotations

from virnucpro.errors import RunStateError
from virnucpro.io.prep_files import FrameSource
from virnucpro.run.manifest import Manifest
from virnucpro.run.parts import done_path, read_part
from virnucpro.run.rundir import RunDir
from virnucpro.run.shard import missing_ranges, verified_parts


def _shard_parts(run: RunDir, index: int, manifest: Manifest, source: FrameSource) -> list:
    start, stop, _ = manifest.shards[index]
    shard_dir = run.shard_dir(index)
    parts = verified_parts(shard_dir, source, start, stop, manifest.identity.save_embeddings)
    if missing_ranges(start, stop, parts):
        done_path(shard_dir).unlink(missing_ok=True)
        raise RunStateError(f"{shard_dir}: checkpoint parts are missing or corrupt (removed); "
                            "rerun predict (or `virnucpro shard`) to redo them, then aggregate")
    return parts


def iter_scored(run: RunDir, manifest: Manifest, source: FrameSource, with_embeddings: bool):
    """PartData of every shard in frame order, each verified against the prepared ids."""
    for index in range(len(manifest.shards)):
        for ref in _shard_parts(run, index, manifest, source):
            yield read_part(ref.path, with_embeddings)
