"""Layout of a run directory and the few helpers every run module shares.

    RUNDIR/manifest.json          what this run is (input, models, chunk length, shard plan); written last by plan
    RUNDIR/prep/                  chunked.fasta, identified_*.fast[a], frames.index/ (+ dedup.unique/, dedup.map/)
    RUNDIR/shards/shard-NNNN/     part-<start>-<stop>.h5 checkpoints, then .done
    RUNDIR/logs/                  one log file per process
    RUNDIR/telemetry.jsonl        one JSON event per line (stages, parts, shard starts)
    RUNDIR/<outputs>              prediction_results.txt, ..._highestscore.csv, summary, embeddings.h5,
                                  nonfinite_frames.tsv, viral_sequences.fasta, report.html, calls.json
    RUNDIR/complete.json          written after every output: the run is finished
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from virnucpro.errors import RunStateError

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

    def shard_dir(self, index: int) -> Path:
        return self.shards / f"shard-{index:04d}"

    def output(self, name: str) -> Path:
        return self.root / name

    def create(self) -> "RunDir":
        for folder in (self.root, self.prep, self.shards, self.logs):
            folder.mkdir(parents=True, exist_ok=True)
        return self

    def clear_results(self) -> None:
        """--force-restart: forget prep, shards, outputs and the manifest; keep logs and the checksum cache."""
        for folder in (self.shards, self.prep):
            shutil.rmtree(folder, ignore_errors=True)
        for name in OUTPUT_NAMES + ("manifest.json", "telemetry.jsonl"):
            with contextlib.suppress(FileNotFoundError):
                (self.root / name).unlink()
        self.create()


_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
_DISK_FULL_TEXT = ("No space left", "File too large", "quota exceeded", "errno = 28", "errno = 27", "errno = 122")


def is_disk_full(error: BaseException) -> bool:
    if getattr(error, "errno", None) in _DISK_FULL_ERRNOS:
        return True
    return any(text.lower() in str(error).lower() for text in _DISK_FULL_TEXT)


@contextlib.contextmanager
def disk_errors(rundir: Path) -> Iterator[None]:
    """Turn 'disk full' (h5py reports it as OSError/RuntimeError text) into one clear, resumable error line."""
    try:
        yield
    except (OSError, RuntimeError) as error:
        if not is_disk_full(error):
            raise
        where = getattr(error, "filename", None) or rundir
        reason = getattr(error, "strerror", None) or "disk full or file size limit reached"
        raise RunStateError(f"{where}: cannot write ({reason}); free space and rerun the same command to resume") from None


def attach_log_file(rundir: RunDir, name: str) -> logging.Handler:
    """Mirror this process's log records into RUNDIR/logs/<name>-<host>-<pid>.log (stderr keeps its handler)."""
    rundir.logs.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(rundir.logs / f"{name}-{socket.gethostname()}-{os.getpid()}.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    if logging.getLogger().level > logging.INFO or logging.getLogger().level == logging.NOTSET:
        logging.getLogger().setLevel(logging.INFO)
    return handler
