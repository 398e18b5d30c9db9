"""Merge every shard's parts into the final outputs in one streaming pass, in bounded memory.

Refuses (RunStateError, nothing written) while a shard is incomplete. A part found corrupt here is deleted and
its shard's `.done` removed, so the next `predict`/`shard` run redoes just that part. Every output is written
under a temporary name and all are renamed together at the end (run.commit), then calls.json (the settings
used) and complete.json. `virnucpro call` is this with other settings and without embeddings.h5.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass, field

from virnucpro.errors import RunStateError
from virnucpro.io.atomic import write_text_atomic
from virnucpro.io.prep_files import FrameSource
from virnucpro.run.calls import CallSettings, load_settings, save_settings
from virnucpro.run.checksums import ChecksumCache, check_prepared
from virnucpro.run.commit import OutputBatch, remove_stale_temporaries
from virnucpro.run.manifest import Manifest
from virnucpro.run.options import RunOptions
from virnucpro.run.parts import is_done
from virnucpro.run.prefetch import prefetched
from virnucpro.run.report import report_warnings, write_report
from virnucpro.run.rundir import EMBEDDINGS, OUTPUT_NAMES, REPORT, RunDir, disk_errors
from virnucpro.run.scored import iter_scored
from virnucpro.run.session import run_session
from virnucpro.run.stream import ResultsStream, with_prediction_rows
from virnucpro.run.telemetry import Telemetry

log = logging.getLogger(__name__)

SORT_DIR = ".aggregate-sort"  # sorted runs of the consensus while it is merged (removed at the end)


@dataclass
class AggregateReport:
    frames: int
    chunks: int
    viral_chunks: int
    sequences: int
    outputs: list[str]
    nonfinite_frames: int = 0
    viral_sequences: int = 0
    dropped_sequences: int = 0
    calls: dict = field(default_factory=dict)


def incomplete_shards(run: RunDir, manifest: Manifest) -> list[int]:
    return [index for index in range(len(manifest.shards)) if not is_done(run.shard_dir(index))]


def refuse_incomplete(run: RunDir, manifest: Manifest) -> None:
    missing = incomplete_shards(run, manifest)
    if missing:
        shown = ", ".join(str(i) for i in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise RunStateError(f"{run.root}: cannot aggregate: {len(missing)} of {len(manifest.shards)} shards "
                            f"are not done ({shown}); rerun predict (or `virnucpro shard`) to finish them")


def _check_plan(manifest: Manifest, source: FrameSource) -> None:
    bounds = [(start, stop) for start, stop, _ in manifest.shards]
    contiguous = all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    if len(source) != manifest.frames or not contiguous or (bounds and (bounds[0][0], bounds[-1][1]) != (0, manifest.scored_frames)):
        raise RunStateError(f"manifest shard plan does not cover the {len(source)} prepared frames exactly once")


def _write_embeddings(run: RunDir, manifest: Manifest, source: FrameSource) -> None:
    from virnucpro.outputs.embeddings import EmbeddingsWriter

    models = {role: f"{entry['path']} sha256:{entry['sha256']}" for role, entry in manifest.identity.models.items()}
    writer = None
    for part in iter_scored(run, manifest, with_embeddings=True):
        if writer is None:
            writer = EmbeddingsWriter(run.output(EMBEDDINGS), part.dna.shape[1], part.protein.shape[1], models)
        try:
            writer.append(part.ids, part.dna, part.protein)
        except BaseException:
            writer.abort()
            raise
    if writer is not None:
        writer.close()


def _scored_parts(run: RunDir, manifest: Manifest, source: FrameSource, settings: CallSettings):
    """(part, its prediction rows): the stored scores, or the stored embeddings scored again by the settings'
    classifier; read, verified and (without rescoring) formatted in a second process."""
    embeddings = settings.classifier is not None
    if not embeddings:
        return prefetched(lambda: with_prediction_rows(iter_scored(run, manifest), settings.min_score))
    from virnucpro.run.rescore import check_rescorable, load_rescoring_classifier, rescored

    check_rescorable(manifest, run.root)
    path = settings.classifier["path"]
    parts = prefetched(lambda: iter_scored(run, manifest, with_embeddings=True))
    return with_prediction_rows(rescored(parts, load_rescoring_classifier(path), path), settings.min_score)


def _stream(run: RunDir, manifest: Manifest, source: FrameSource, settings: CallSettings, outputs: OutputBatch,
            options: RunOptions) -> ResultsStream:
    parts = _scored_parts(run, manifest, source, settings)
    stream = ResultsStream(outputs, run.prep, manifest.identity.chunk_length, settings, run.root / SORT_DIR,
                           options.sort_rows)
    try:
        for part, rows in parts:
            stream.add(part, rows)
            options.on_event("aggregate-part")
        stream.finish()
        options.on_event("aggregate-merge")
        stream.write_consensus()
    except BaseException:
        stream.discard()
        raise
    return stream


def _write_outputs(run: RunDir, manifest: Manifest, source: FrameSource, settings: CallSettings,
                   options: RunOptions, embeddings: bool) -> AggregateReport:
    remove_stale_temporaries(run.root, OUTPUT_NAMES)
    shutil.rmtree(run.root / SORT_DIR, ignore_errors=True)
    with OutputBatch(run.root) as outputs:
        options.on_event("aggregate")
        stream = _stream(run, manifest, source, settings, outputs, options)
        counts = stream.counts
        options.on_event("aggregate")
        warnings = report_warnings(stream.lengths, counts.dropped_sequences, manifest.identity.min_length,
                                   counts.nonfinite_frames)
        for warning in warnings:
            log.warning("%s: %s", run.root, warning)
        write_report(run, manifest, settings, stream.figures, asdict(counts), warnings, outputs.open(REPORT))
        if embeddings and manifest.identity.save_embeddings:
            options.on_event("aggregate")
            _write_embeddings(run, manifest, source)
        options.on_event("aggregate")
        run.complete.unlink(missing_ok=True)  # from here until complete.json the outputs may be a mix
        names = outputs.commit(lambda name: options.on_event("aggregate-commit"))
    shutil.rmtree(run.root / SORT_DIR, ignore_errors=True)
    written = names + ([EMBEDDINGS] if embeddings and manifest.identity.save_embeddings else [])
    return AggregateReport(counts.frames, counts.chunks, counts.viral_chunks, counts.sequences, written,
                           counts.nonfinite_frames, counts.viral_sequences, counts.dropped_sequences, counts.calls)


def aggregate(rundir, options: RunOptions | None = None, *, settings: CallSettings | None = None,
              embeddings: bool = True) -> AggregateReport:
    """Check every shard, write the final outputs with `settings` (default: those recorded in calls.json), then
    calls.json and `complete.json`; holds the run lock. `embeddings=False` leaves embeddings.h5 as it is
    (`virnucpro call`)."""
    with run_session(rundir, "aggregate", create=False):
        return _aggregate(RunDir(rundir), options or RunOptions(), settings, embeddings)


def _aggregate(run: RunDir, options: RunOptions, settings: CallSettings | None, embeddings: bool) -> AggregateReport:
    manifest = Manifest.load(run.manifest)
    refuse_incomplete(run, manifest)
    check_prepared(run.prep, manifest.prep_files, ChecksumCache(run.checksum_cache))
    source = FrameSource(run.prep)
    _check_plan(manifest, source)
    settings = settings or load_settings(run, manifest)
    with disk_errors(run.root), Telemetry(run.telemetry).stage("aggregate"):
        report = _write_outputs(run, manifest, source, settings, options, embeddings)
        save_settings(run, settings, manifest)
        write_text_atomic(run.complete, json.dumps(asdict(report)))
    log.info("%d frames, %d chunks (%d viral), %d sequences (%d viral) -> %s", report.frames, report.chunks,
             report.viral_chunks, report.sequences, report.viral_sequences, run.root)
    return report
