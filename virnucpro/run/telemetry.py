"""telemetry.jsonl (one JSON event per line, appended by every process) and the rich progress display.

Events: {"event": "stage", "stage", "seconds"}, {"event": "shard_start", "shard", "device", "resumed"},
{"event": "part", "shard", "device", "start", "stop", "frames", "tokens", "seconds", "frames_per_s",
"tokens_per_s", "write_seconds", "engine": scorer.stats.as_dict()}, {"event": "shard_done", ...},
{"event": "aggregate", ...}. Each carries "time", "host" and "pid".
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)


class Telemetry:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.host = socket.gethostname()

    def event(self, kind: str, **fields) -> None:
        record = {"time": round(time.time(), 3), "event": kind, "host": self.host, "pid": os.getpid(), **fields}
        # One write() of one line with O_APPEND: lines from concurrent GPU processes do not interleave.
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record, default=float) + "\n")

    @contextlib.contextmanager
    def stage(self, name: str, **fields) -> Iterator[None]:
        started = time.perf_counter()
        yield
        seconds = time.perf_counter() - started
        log.info("%s took %.1f s", name, seconds)
        self.event("stage", stage=name, seconds=round(seconds, 3), **fields)


def read_events(path: Path) -> list[dict]:
    """All complete events; a line torn by a kill is skipped."""
    events = []
    with contextlib.suppress(FileNotFoundError), open(path) as handle:
        for line in handle:
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
    return events


class ProgressDisplay:
    """Sequences done, tokens/s and ETA on stderr (rich), or a log line every minute when stderr is no terminal."""

    def __init__(self, total_frames: int, total_tokens: int, enabled: bool = True, done_frames: int = 0):
        self.total_tokens = max(total_tokens, 1)
        self.started = time.perf_counter()
        self.tokens = 0
        self.frames = done_frames
        self.total_frames = total_frames
        self.last_log = self.started
        self.progress = None
        if enabled and sys.stderr.isatty():
            self.progress = self._rich(total_frames, done_frames)

    def _rich(self, total: int, done: int):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        progress = Progress(TextColumn("frames"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[rate]} tokens/s"), TimeRemainingColumn(),
                            console=Console(stderr=True), transient=False)
        self.task = progress.add_task("predict", total=total, completed=done, rate="-")
        progress.start()
        return progress

    def advance(self, frames: int, tokens: int) -> None:
        self.frames += frames
        self.tokens += tokens
        rate = self.tokens / max(time.perf_counter() - self.started, 1e-9)
        if self.progress is not None:
            self.progress.update(self.task, advance=frames, rate=f"{rate:,.0f}")
        elif time.perf_counter() - self.last_log > 60:
            self.last_log = time.perf_counter()
            log.info("%d/%d frames, %.0f tokens/s", self.frames, self.total_frames, rate)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
