"""Merge every shard's parts into the final outputs, after checking every prepared frame is there exactly once.

Refuses (RunStateError, nothing written) while a shard is incomplete. A part found corrupt here is deleted and
its shard's `.done` removed, so the next `predict`/`shard` run redoes just that part.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from virnucpro.errors import RunStateError
from virnucpro.io.atomic import write_text_atomic
from virnucpro.io.prep_files import FrameSource
from virnucpro.run.checksums import ChecksumCache, check_prepared
from virnucpro.run.manifest import Manifest
from virnucpro.run.options import RunOptions
from virnucpro.run.parts import done_path, is_done, read_part
from virnucpro.run.rundir import EMBEDDINGS, HIGHEST_SCORE, PREDICTIONS, SUMMARY, RunDir, disk_errors
from virnucpro.run.session import run_session
from virnucpro.run.shard import missing_ranges, verified_parts
from virnucpro.run.telemetry import Telemetry

log = logging.getLogger(__name__)


@dataclass
class AggregateReport:
    frames: int
    chunks: int
    viral_chunks: int
    sequences: int
    outputs: list[str]


def incomplete_shards(run: RunDir, manifest: Manifest) -> list[int]:
    return [index for index in range(len(manifest.shards)) if not is_done(run.shard_dir(index))]


def _refuse_incomplete(run: RunDir, manifest: Manifest) -> None:
    missing = incomplete_shards(run, manifest)
    if missing:
        shown = ", ".join(str(i) for i in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise RunStateError(f"{run.root}: cannot aggregate: {len(missing)} of {len(manifest.shards)} shards "
                            f"are not done ({shown}); rerun predict (or `virnucpro shard`) to finish them")


def _check_plan(manifest: Manifest, source: FrameSource) -> None:
    bounds = [(start, stop) for start, stop, _ in manifest.shards]
    contiguous = all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    if len(source) != manifest.frames or not contiguous or (bounds and (bounds[0][0], bounds[-1][1]) != (0, len(source))):
        raise RunStateError(f"manifest shard plan does not cover the {len(source)} prepared frames exactly once")


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


def sequence_chunks(input_path: Path, chunk_length: int) -> tuple[list[tuple[str, int]], dict[str, str]]:
    """(input id, chunk count) in input order and chunk id -> input id, from the input (never parsing ids)."""
    from virnucpro.io.sequences import read_records
    from virnucpro.prep.chunking import chunk_id, chunk_starts

    counts, owner = [], {}
    for record in read_records(input_path):
        count = len(chunk_starts(len(record.seq), chunk_length))
        counts.append((record.id, count))
        owner.update({chunk_id(record.id, number): record.id for number in range(1, count + 1)})
    return counts, owner


def _write_embeddings(run: RunDir, manifest: Manifest, source: FrameSource) -> None:
    from virnucpro.outputs.embeddings import EmbeddingsWriter

    models = {role: f"{entry['path']} sha256:{entry['sha256']}" for role, entry in manifest.identity.models.items()}
    writer = None
    for part in iter_scored(run, manifest, source, with_embeddings=True):
        if writer is None:
            writer = EmbeddingsWriter(run.output(EMBEDDINGS), part.dna.shape[1], part.protein.shape[1], models)
        try:
            writer.append(part.ids, part.dna, part.protein)
        except BaseException:
            writer.abort()
            raise
    if writer is not None:
        writer.close()


def _write_outputs(run: RunDir, manifest: Manifest, source: FrameSource, options: RunOptions) -> AggregateReport:
    from virnucpro.outputs.consensus import chunk_maxima, highest_score, write_highest_score
    from virnucpro.outputs.results import write_prediction_results
    from virnucpro.outputs.summary import summarize, write_summary

    parts = list(iter_scored(run, manifest, source, with_embeddings=False))
    ids = [frame_id for part in parts for frame_id in part.ids]
    scores = np.concatenate([part.scores for part in parts]) if parts else np.zeros((0, 2), np.float32)
    options.on_event("aggregate")
    write_prediction_results(run.output(PREDICTIONS), ids, scores)
    rows = highest_score(ids, scores)
    options.on_event("aggregate")
    write_highest_score(run.output(HIGHEST_SCORE), rows)
    counts, owner = sequence_chunks(Path(manifest.identity.input["path"]), manifest.identity.chunk_length)
    maxima = chunk_maxima(ids, scores[:, 0], scores[:, 1])
    summaries = summarize(counts, dict(rows), {c: m.best_virus for c, m in maxima.items()}, owner)
    options.on_event("aggregate")
    write_summary(run.output(SUMMARY), summaries)
    outputs = [PREDICTIONS, HIGHEST_SCORE, SUMMARY]
    if manifest.identity.save_embeddings:
        options.on_event("aggregate")
        _write_embeddings(run, manifest, source)
        outputs.append(EMBEDDINGS)
    return AggregateReport(len(ids), len(rows), sum(is_virus for _, is_virus in rows), len(counts), outputs)


def aggregate(rundir, options: RunOptions | None = None) -> AggregateReport:
    """Check every shard, write the final outputs (each atomically), then `complete.json`; holds the run lock."""
    with run_session(rundir, "aggregate", create=False):
        return _aggregate(RunDir(rundir), options or RunOptions())


def _aggregate(run: RunDir, options: RunOptions) -> AggregateReport:
    manifest = Manifest.load(run.manifest)
    _refuse_incomplete(run, manifest)
    check_prepared(run.prep, manifest.prep_files, ChecksumCache(run.checksum_cache))
    source = FrameSource(run.prep)
    _check_plan(manifest, source)
    with disk_errors(run.root), Telemetry(run.telemetry).stage("aggregate"):
        report = _write_outputs(run, manifest, source, options)
        write_text_atomic(run.complete, json.dumps(asdict(report)))
    log.info("%d frames, %d chunks (%d viral), %d sequences -> %s", report.frames, report.chunks,
             report.viral_chunks, report.sequences, run.root)
    return report
