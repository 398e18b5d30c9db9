"""telemetry.jsonl (one JSON event per line, appended by every process), the scoring process's heartbeat, and the
rich progress display.

Events: {"event": "stage", "stage", "seconds"}, {"event": "shard_start", "shard", "device", "resumed"},
{"event": "part", "shard", "device", "start", "stop", "frames", "tokens", "seconds", "frames_per_s",
"tokens_per_s", "write_seconds", "engine": scorer.stats.as_dict()}, {"event": "shard_done", ...},
{"event": "aggregate", ...}. Each carries "time", "host" and "pid".

Heartbeat (shards/shard-NNNN/heartbeat.json, rewritten every HEARTBEAT_SECONDS by the process scoring that shard,
whether or not a block finished): {"time", "host", "pid", "shard", "device", "state" (scoring | done | failed),
"started", "frames_done" (in the shard, checkpointed or not), "frames_checkpointed", "tokens_per_s" (ESM-2
tokens = residues + BOS/EOS, over the last RATE_WINDOW_SECONDS of scoring), "tokens_per_s_mean" (since the first
block of this process)}. `status` reads it for progress between checkpoints and for liveness.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import socket
import sys
import threading
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
        try:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record, default=float) + "\n")
        except OSError as error:
            error.filename = error.filename or str(self.path)
            raise

    @contextlib.contextmanager
    def stage(self, name: str, **fields) -> Iterator[None]:
        started = time.perf_counter()
        yield
        seconds = time.perf_counter() - started
        log.info("%s took %.1f s", name, seconds)
        self.event("stage", stage=name, seconds=round(seconds, 3), **fields)


HEARTBEAT_SECONDS = 5.0
RATE_WINDOW_SECONDS = 60.0


class Heartbeat:
    """The scoring process's pulse for one shard (see the module docstring); a thread writes it, so it keeps
    beating while a long block computes. Use as a context manager around the scoring of the shard."""

    def __init__(self, path: Path, shard: int, device: str, frames_done: int, interval: float | None = None):
        self.path, self.interval = Path(path), interval or HEARTBEAT_SECONDS
        self.fields = {"host": socket.gethostname(), "pid": os.getpid(), "shard": shard, "device": device,
                       "state": "scoring", "started": round(time.time(), 3), "frames_done": frames_done,
                       "frames_checkpointed": frames_done}
        self.lock = threading.Lock()
        self.samples: collections.deque = collections.deque()  # (time, cumulative tokens) over the rate window
        self.tokens = 0
        self.first_block: float | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, name=f"heartbeat-{shard}", daemon=True)

    def advance(self, frames: int, tokens: int) -> None:
        now = time.time()
        with self.lock:
            if self.first_block is None:
                self.first_block = now - 1e-3
                self.samples.append((self.fields["started"], 0))
            self.fields["frames_done"] += frames
            self.tokens += tokens
            self.samples.append((now, self.tokens))
            while len(self.samples) > 2 and self.samples[1][0] < now - RATE_WINDOW_SECONDS:
                self.samples.popleft()

    def checkpointed(self, frames: int) -> None:
        with self.lock:
            self.fields["frames_checkpointed"] += frames

    def snapshot(self) -> dict:
        with self.lock:
            record = {"time": round(time.time(), 3), **self.fields}
            if len(self.samples) >= 2:
                (t0, k0), (t1, k1) = self.samples[0], self.samples[-1]
                record["tokens_per_s"] = (k1 - k0) / max(t1 - t0, 1e-9)
                record["tokens_per_s_mean"] = self.tokens / max(t1 - self.fields["started"], 1e-9)
        return record

    def write(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with contextlib.suppress(OSError):  # advisory: a full disk or a vanished folder must not stop the run
            tmp.write_text(json.dumps(self.snapshot()))
            os.replace(tmp, self.path)

    def _beat(self) -> None:
        while not self.stop.wait(self.interval):
            self.write()

    def __enter__(self) -> "Heartbeat":
        self.write()
        self.thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.stop.set()
        self.thread.join()
        self.fields["state"] = "failed" if exc_type else "done"
        self.write()


def read_heartbeat(path: Path) -> dict | None:
    with contextlib.suppress(OSError, ValueError):
        return json.loads(Path(path).read_text())
    return None


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
        self.first_block: float | None = None
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
        """`tokens`: ESM-2 tokens of the frames just scored. The rate counts from the first block on, so model
        loading and start-up do not dilute it."""
        self.frames += frames
        if self.first_block is None:
            self.first_block = time.perf_counter()
        else:
            self.tokens += tokens
        rate = self.tokens / max(time.perf_counter() - self.first_block, 1e-9)
        if self.progress is not None:
            self.progress.update(self.task, advance=frames, rate=f"{rate:,.0f}" if self.tokens else "-")
        elif time.perf_counter() - self.last_log > 60:
            self.last_log = time.perf_counter()
            log.info("%d/%d frames, %.0f tokens/s", self.frames, self.total_frames, rate)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
