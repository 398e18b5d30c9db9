"""report.html of a run: its figures' numbers, counts, warnings, thresholds and provenance, rendered by
outputs.report. Written at the end of every aggregation (from the numbers gathered while streaming) and by
`virnucpro report RUN` (from the written TSVs, streamed)."""

from __future__ import annotations

import importlib.metadata
import itertools
import json
import platform
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from virnucpro import __version__
from virnucpro.errors import RunStateError
from virnucpro.io.atomic import write_text_atomic
from virnucpro.io.prep_files import read_sequences
from virnucpro.outputs.report import ReportData, render_report
from virnucpro.outputs.report_data import ReportFigures, throughput
from virnucpro.outputs.results import iter_virus_scores
from virnucpro.outputs.summary import COLUMNS
from virnucpro.prep.short_inputs import LengthStats, short_input_warnings
from virnucpro.run.calls import CallSettings, load_settings
from virnucpro.run.manifest import Manifest
from virnucpro.run.rundir import PREDICTIONS, REPORT, SUMMARY, RunDir
from virnucpro.run.telemetry import read_events

VERSIONED_PACKAGES = ("torch", "numpy", "h5py", "fair-esm", "tokenizers")
ROWS_PER_BLOCK = 65536


def _versions(manifest: Manifest) -> dict:
    versions = {"virnucpro (this report)": __version__, "virnucpro (run)": manifest.code_version,
                "python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def provenance(manifest: Manifest) -> dict:
    identity = manifest.identity
    models = {role: f"{entry['path']} (sha256 {entry['sha256']})" for role, entry in identity.models.items()}
    return {"input": f"{identity.input['path']} ({identity.input['size']} bytes, sha256 {identity.input['sha256']})",
            "chunk length": identity.chunk_length, "precision": identity.precision,
            "min length": identity.min_length, "models": models, "versions": _versions(manifest),
            "planned": manifest.created, "frames": manifest.frames, "shards": len(manifest.shards)}


def report_warnings(lengths: LengthStats, dropped: int, min_length: int, nonfinite_frames: int) -> list[str]:
    warnings = short_input_warnings(lengths, dropped, min_length)
    if nonfinite_frames:
        warnings.append(f"{nonfinite_frames} frames have scores that are not finite even in fp32; they are left out "
                        "of prediction_results.txt and the consensus and listed in nonfinite_frames.tsv")
    return warnings


def write_report(run: RunDir, manifest: Manifest, settings: CallSettings, figures: ReportFigures, counts: dict,
                 warnings: list[str], handle=None) -> None:
    data = ReportData(figures, throughput(read_events(run.telemetry)), counts, settings.as_dict(),
                      provenance(manifest), warnings)
    html = render_report(data, f"virnucpro run {run.root.name}")
    if handle is None:
        write_text_atomic(run.output(REPORT), html)
    else:
        handle.write(html)


def rebuild_report(rundir) -> Path:
    """report.html again from a complete run's written outputs (`virnucpro report RUN`)."""
    run = RunDir(rundir)
    manifest = Manifest.load(run.manifest)
    if not run.complete.exists():
        raise RunStateError(f"{run.root}: the run is not complete (no complete.json); finish it with predict or "
                            "aggregate first")
    counts = {key: value for key, value in json.loads(run.complete.read_text()).items() if key != "outputs"}
    figures = ReportFigures()
    for scores in iter_virus_scores(run.output(PREDICTIONS)):
        figures.add_scores(scores)
    for fractions, lengths, calls in _summary_blocks(run.output(SUMMARY)):
        figures.add_sequences(fractions, lengths, calls)
    lengths = LengthStats(manifest.identity.chunk_length)
    for rows in _blocks(read_sequences(run.prep)):
        lengths.add(np.array([info.length for info in rows if info.kept], dtype=np.int64))
    warnings = report_warnings(lengths, counts.get("dropped_sequences", 0), manifest.identity.min_length,
                               counts.get("nonfinite_frames", 0))
    write_report(run, manifest, load_settings(run, manifest), figures, counts, warnings)
    return run.output(REPORT)


def _blocks(items: Iterable, size: int = ROWS_PER_BLOCK) -> Iterator[list]:
    iterator = iter(items)
    while block := list(itertools.islice(iterator, size)):
        yield block


def _summary_blocks(path: Path) -> Iterator[tuple[np.ndarray, np.ndarray, list[str]]]:
    """(viral fractions of the scored sequences, lengths, calls) of sequence_summary.tsv, block by block."""
    with open(path, encoding="utf-8") as handle:
        if tuple(handle.readline().rstrip("\n").split("\t")) != COLUMNS:
            raise RunStateError(f"{path}: not a sequence summary of this virnucpro version; rerun `virnucpro call`")
        column = {name: i for i, name in enumerate(COLUMNS)}
        for lines in _blocks(handle):
            rows = [line.rstrip("\n").split("\t") for line in lines]
            scored = np.array([int(row[column["scored_chunks"]]) for row in rows], dtype=np.int64)
            viral = np.array([int(row[column["viral_chunks"]]) for row in rows], dtype=np.int64)
            lengths = np.array([int(row[column["length"]]) for row in rows], dtype=np.int64)
            yield viral[scored > 0] / scored[scored > 0], lengths, [row[column["call"]] for row in rows]
