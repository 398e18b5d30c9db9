"""Layout of a run directory and the few helpers every run module shares.

    RUNDIR/.virnucpro-run         written first: this folder is a run directory (only then is anything deleted)
    RUNDIR/.lock                  the process that holds the run (run.lock)
    RUNDIR/manifest.json          what this run is (input, models, chunk length, shard plan); written last by plan
    RUNDIR/prep/                  chunked.fasta, identified_*.fast[a], sequences.tsv, frames.index/ (+ dedup.unique/,
                                  dedup.map/)
    RUNDIR/shards/shard-NNNN/     part-<start>-<stop>.h5 checkpoints, heartbeat.json, numerics.json, .lock, then .done
    RUNDIR/cache/compile/         compiled GPU kernels shared by the run's tasks and resumes
    RUNDIR/logs/                  one log file per process
    RUNDIR/telemetry.jsonl        one JSON event per line (stages, parts, shard starts)
    RUNDIR/<outputs>              prediction_results.txt, ..._highestscore.csv, summary, embeddings.h5,
                                  nonfinite_frames.tsv, viral_sequences.fasta, report.html, calls.json
    RUNDIR/complete.json          written after every output: the run is finished

Only the run's own files are ever deleted (`--force-restart`, a failed first attempt, temporaries of killed
writers): names the run writes, inside a folder marked as a run directory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from virnucpro import __version__
from virnucpro.errors import RunStateError, disk_full_error, is_disk_full
from virnucpro.io.atomic import write_text_atomic
from virnucpro.io.prep_files import (CHUNKED, DEDUP_MAP, DEDUP_UNIQUE, IDENTIFIED_NUCLEOTIDE, IDENTIFIED_PROTEIN,
                                     INDEX_DIR, LEGACY_INDEX, SEQUENCES)

PREDICTIONS = "prediction_results.txt"
HIGHEST_SCORE = "prediction_results_highestscore.csv"
SUMMARY = "sequence_summary.tsv"
EMBEDDINGS = "embeddings.h5"
NONFINITE = "nonfinite_frames.tsv"
VIRAL_FASTA = "viral_sequences.fasta"
REPORT = "report.html"
CALLS = "calls.json"
COMPLETE = "complete.json"
OUTPUT_NAMES = (PREDICTIONS, HIGHEST_SCORE, SUMMARY, EMBEDDINGS, NONFINITE, VIRAL_FASTA, REPORT, CALLS, COMPLETE)
MARKER = ".virnucpro-run"
LOCK = ".lock"
HEARTBEAT = "heartbeat.json"
DONE = ".done"  # a shard's last file: every part is on disk
NUMERICS = "numerics.json"  # what scored a shard's parts (run.numerics)
# Written by the run itself, besides OUTPUT_NAMES and the prep files recorded in the manifest.
RUN_STATE_NAMES = ("manifest.json", "telemetry.jsonl", "checksums.json")
PREP_NAMES = (CHUNKED, IDENTIFIED_NUCLEOTIDE, IDENTIFIED_PROTEIN, SEQUENCES, LEGACY_INDEX)
PREP_FOLDERS = (INDEX_DIR, DEDUP_UNIQUE, DEDUP_MAP)  # memory-mapped arrays, removed whole
# What a run directory holds when it has no MARKER yet: made by an earlier virnucpro (before MARKER existed) that died
# before its manifest, or created by `submit` for a prep job of its own (slurm/).
_UNMARKED_RUN_ENTRIES = {"prep", "shards", "logs", "slurm", "telemetry.jsonl", "checksums.json", "manifest.json"}
_SHARD_FILE = re.compile(r"^(part-\d+-\d+\.h5|" + "|".join(re.escape(name) for name in (DONE, LOCK, HEARTBEAT, NUMERICS)) + ")$")
_TEMP_FILE = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]+\.tmp$")  # io.atomic's temporary names


@dataclass(frozen=True)
class RunDir:
    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def prep(self) -> Path:
        return self.root / "prep"

    @property
    def shards(self) -> Path:
        return self.root / "shards"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def telemetry(self) -> Path:
        return self.root / "telemetry.jsonl"

    @property
    def checksum_cache(self) -> Path:
        return self.root / "checksums.json"

    @property
    def complete(self) -> Path:
        return self.root / COMPLETE

    @property
    def compile_cache(self) -> Path:
        """Compiled GPU kernels, shared by every task and resume of the run (the start-up they save, issue 16)."""
        return self.root / "cache" / "compile"

    @property
    def marker(self) -> Path:
        return self.root / MARKER

    @property
    def lock(self) -> Path:
        return self.root / LOCK

    def shard_dir(self, index: int) -> Path:
        return self.shards / f"shard-{index:04d}"

    def output(self, name: str) -> Path:
        return self.root / name

    def create(self) -> "RunDir":
        for folder in (self.root, self.prep, self.shards, self.logs):
            folder.mkdir(parents=True, exist_ok=True)
        return self

    def shard_dirs(self) -> list[Path]:
        with contextlib.suppress(FileNotFoundError):
            return sorted(p for p in self.shards.iterdir() if p.is_dir() and p.name.startswith("shard-"))
        return []


def claim(run: RunDir) -> bool:
    """Make sure RUNDIR is ours before anything is written or deleted there; True when it was new or empty.

    RunStateError for a file, or for a non-empty folder that is not a run directory (nothing in it is touched)."""
    root = run.root
    if root.exists() and not root.is_dir():
        raise RunStateError(f"{root}: exists and is not a directory; give a new or empty folder for the run")
    entries = sorted(p.name for p in root.iterdir()) if root.exists() else []
    if MARKER in entries:
        return False
    if entries and not _unmarked_run(run, entries):
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise RunStateError(f"{root}: not a virnucpro run directory and not empty (it holds {shown}); "
                            "give a new or empty folder (nothing was changed)")
    root.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_text_atomic(run.marker, f'{{"virnucpro": "{__version__}", "created": "{stamp}"}}\n')
    return not entries


def _unmarked_run(run: RunDir, entries: list[str]) -> bool:
    """A run directory of a virnucpro from before MARKER: a manifest, or only the skeleton a first attempt leaves."""
    if not set(entries) <= _UNMARKED_RUN_ENTRIES:
        return False
    if "manifest.json" in entries:
        return True
    listing = lambda folder: [p.name for p in folder.iterdir()] if folder.is_dir() else []  # noqa: E731
    return (all(name.startswith("shard-") for name in listing(run.shards))
            and all(name in PREP_NAMES + PREP_FOLDERS or _is_temp_of(name, None) for name in listing(run.prep))
            and all(name.endswith(".log") for name in listing(run.logs)))


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _rmdir_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not empty (someone's file) or gone
        folder.rmdir()


def _is_temp_of(name: str, owned: tuple[str, ...] | None) -> bool:
    match = _TEMP_FILE.match(name)
    return bool(match) and (owned is None or match["name"] in owned)


def remove_temp_files(folder: Path, owned: tuple[str, ...] | None = None) -> int:
    """Temporaries of killed writers (`.<name>.<random>.tmp`) in `folder`: of the names in `owned`, or all."""
    stale = [p for p in (folder.iterdir() if folder.is_dir() else ()) if _is_temp_of(p.name, owned)]
    for path in stale:
        if path.is_dir():  # an array folder under construction (io.mapped.ArrayFolderWriter)
            shutil.rmtree(path, ignore_errors=True)
        else:
            _unlink(path)
    return len(stale)


def remove_stale_temps(run: RunDir, prep_names: tuple[str, ...] = ()) -> int:
    """At resume, under the run lock: temporaries left in RUNDIR and prep/ by writers killed in earlier attempts."""
    owned = OUTPUT_NAMES + RUN_STATE_NAMES + (MARKER,)
    return remove_temp_files(run.root, owned) + remove_temp_files(run.prep, PREP_NAMES + tuple(prep_names))


def remove_shard_files(shard_dir: Path) -> None:
    """A shard's parts, markers and temporaries; anything else in the folder stays (and so does the folder)."""
    for path in (shard_dir.iterdir() if shard_dir.is_dir() else ()):
        if _SHARD_FILE.match(path.name) or _is_temp_of(path.name, None):
            _unlink(path)
    _rmdir_if_empty(shard_dir)


def clear_results(run: RunDir, prep_names: tuple[str, ...] = ()) -> None:
    """--force-restart: forget prep, shards, outputs and the manifest; keep logs, the checksum cache and every file
    the run did not write."""
    for shard_dir in run.shard_dirs():
        remove_shard_files(shard_dir)
    for name in PREP_NAMES + tuple(prep_names):
        _unlink(run.prep / name)
    for name in PREP_FOLDERS:
        shutil.rmtree(run.prep / name, ignore_errors=True)
    remove_temp_files(run.prep)
    for name in OUTPUT_NAMES + ("manifest.json", "telemetry.jsonl"):
        _unlink(run.root / name)
    remove_temp_files(run.root, OUTPUT_NAMES + RUN_STATE_NAMES)


def remove_skeleton(run: RunDir) -> None:
    """A first attempt that failed before its manifest: remove what it wrote (the folder itself is the caller's)."""
    clear_results(run)
    for folder in (run.shards, run.prep):
        _rmdir_if_empty(folder)
    for path in (run.logs.iterdir() if run.logs.is_dir() else ()):
        if path.suffix == ".log":
            _unlink(path)
    _rmdir_if_empty(run.logs)
    for name in RUN_STATE_NAMES + (MARKER,):
        _unlink(run.root / name)


@contextlib.contextmanager
def disk_errors(rundir: Path) -> Iterator[None]:
    """Turn 'disk full' (h5py reports it as OSError/RuntimeError text) into one clear, resumable error line."""
    try:
        yield
    except (OSError, RuntimeError) as error:
        if not is_disk_full(error):
            raise
        raise disk_full_error(error, rundir) from None


class RunLogHandler(logging.FileHandler):
    """RUNDIR/logs/<name>-<host>-<pid>.log; on a full disk it stops writing instead of printing tracebacks."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        self.failed = True

    def emit(self, record: logging.LogRecord) -> None:
        if not getattr(self, "failed", False):
            super().emit(record)


def attach_log_file(rundir: RunDir, name: str) -> logging.Handler:
    """Mirror this process's log records into RUNDIR/logs/<name>-<host>-<pid>.log (stderr keeps its handler)."""
    rundir.logs.mkdir(parents=True, exist_ok=True)
    handler = RunLogHandler(rundir.logs / f"{name}-{socket.gethostname()}-{os.getpid()}.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    if logging.getLogger().level > logging.INFO or logging.getLogger().level == logging.NOTSET:
        logging.getLogger().setLevel(logging.INFO)
    return handler


def detach_log_file(handler: logging.Handler) -> None:
    logging.getLogger().removeHandler(handler)
    handler.close()
