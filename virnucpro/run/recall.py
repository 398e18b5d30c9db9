"""`virnucpro call RUN`: every output derived again from the stored per-frame scores with other settings.

No GPU and no embedding model: the stored scores (or, with `--classifier`, the stored embeddings scored again on
the CPU) stream through the same aggregation as at the end of a run. Settings not given keep their recorded
values. Bad settings, a missing or unreadable classifier, or a run whose shards are not all done end with one
line and change nothing.
"""

from __future__ import annotations

from pathlib import Path

from virnucpro.run.aggregate import AggregateReport, refuse_incomplete, aggregate
from virnucpro.run.calls import OWN_CLASSIFIER, CallSettings, load_settings
from virnucpro.run.checksums import ChecksumCache
from virnucpro.run.manifest import Manifest
from virnucpro.run.options import RunOptions
from virnucpro.run.rundir import RunDir


def settings_with(rundir, **changes) -> CallSettings:
    """The recorded settings of a run directory (defaults if none yet) with `changes` applied and checked."""
    run = RunDir(rundir)
    manifest = Manifest.load(run.manifest) if run.manifest.exists() else None
    return load_settings(run, manifest).changed(**changes)


def _classifier_identity(run: RunDir, manifest: Manifest, path: str) -> dict | None:
    if path == OWN_CLASSIFIER:
        return None
    from virnucpro.run.rescore import check_rescorable, load_rescoring_classifier

    check_rescorable(manifest, run.root)
    load_rescoring_classifier(path)  # a bad file is refused here, before anything is written
    cache = ChecksumCache(run.checksum_cache)
    identity = cache.file_identity(Path(path))
    cache.save()
    return identity


def call_run(rundir, changes: dict, classifier: str | None = None,
             options: RunOptions | None = None) -> tuple[AggregateReport, CallSettings]:
    run = RunDir(rundir)
    manifest = Manifest.load(run.manifest)
    settings = load_settings(run, manifest).changed(**changes)
    refuse_incomplete(run, manifest)
    if classifier is not None:
        settings = settings.changed(classifier=_classifier_identity(run, manifest, classifier))
    return aggregate(rundir, options, settings=settings, embeddings=False), settings
