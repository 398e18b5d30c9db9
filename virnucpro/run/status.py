"""What a run directory has done so far and whether a process is working on it: read from file names, the scoring
processes' heartbeats, the run lock and telemetry only (fast, never loads a model or a part).

Frames done: a finished shard counts all its frames; otherwise the frames in its checkpoint parts, or more while a
live process scores it (its heartbeat counts the frames scored since the last part). Liveness: a heartbeat is live
while its process runs (same host: the pid; another host: rewritten within HEARTBEAT_STALE_SECONDS); the run is
running while the run lock or a heartbeat is live, else stopped at the time of its last sign of life. Speed and
ETA: ESM-2 tokens (residues + BOS/EOS, the unit of the manifest's `tokens`) per second over the last minute of
each live scoring process, summed; ETA = tokens not yet done / that speed.
"""

from __future__ import annotations

import socket
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime

from virnucpro.run.lock import inspect_lock, pid_running
from virnucpro.run.manifest import Manifest
from virnucpro.run.parts import is_done, list_parts
from virnucpro.run.rundir import HEARTBEAT, RunDir
from virnucpro.run.telemetry import read_events, read_heartbeat

HEARTBEAT_STALE_SECONDS = 60.0  # a heartbeat is rewritten every 5 s


@dataclass
class ShardStatus:
    index: int
    start: int
    stop: int
    tokens: int
    frames_done: int  # checkpointed, or more while a live process scores the shard
    done: bool
    restarts: int  # times the shard was started again after its first start
    tokens_per_s: float | None  # mean over the parts written so far
    frames_checkpointed: int = 0
    state: str = "pending"  # done | running | stopped | pending
    heartbeat: dict | None = None

    @property
    def frames(self) -> int:
        return self.stop - self.start

    def as_dict(self) -> dict:
        return {**asdict(self), "frames": self.frames}


@dataclass
class RunStatus:
    state: str  # complete | running | stopped | planned | preparing
    detail: str  # who runs it, or when it stopped
    frames: int
    frames_done: int
    frames_checkpointed: int
    tokens: int
    tokens_per_s: float | None  # now, all live scoring processes together
    eta_seconds: float | None
    last_activity: float | None  # epoch seconds
    shards: list[ShardStatus] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.state == "complete"

    def as_dict(self) -> dict:
        return {**asdict(self), "complete": self.complete}


def heartbeat_alive(beat: dict | None, now: float | None = None) -> bool:
    if not beat or beat.get("state") != "scoring":
        return False
    age = (now or time.time()) - float(beat.get("time", 0))
    if beat.get("host") == socket.gethostname():
        return age < 10 * HEARTBEAT_STALE_SECONDS and pid_running(int(beat.get("pid", 0)))
    return age < HEARTBEAT_STALE_SECONDS


def _shard_speeds(events: list[dict]) -> tuple[dict, dict]:
    starts, tokens, seconds = {}, {}, {}
    for event in events:
        shard = event.get("shard")
        if event.get("event") == "shard_start":
            starts[shard] = starts.get(shard, 0) + 1
        elif event.get("event") == "part":
            tokens[shard] = tokens.get(shard, 0) + event["tokens"]
            seconds[shard] = seconds.get(shard, 0.0) + event["seconds"]
    speeds = {shard: tokens[shard] / seconds[shard] for shard in tokens if seconds[shard] > 0}
    return starts, speeds


def _one_shard(run: RunDir, index: int, bounds: tuple[int, int, int], starts: dict, speeds: dict) -> ShardStatus:
    start, stop, tokens = bounds
    shard_dir = run.shard_dir(index)
    done = is_done(shard_dir)
    frames = stop - start
    checkpointed = frames if done else min(frames, sum(ref.stop - ref.start for ref in list_parts(shard_dir)))
    beat = None if done else read_heartbeat(shard_dir / HEARTBEAT)
    live = heartbeat_alive(beat)
    frames_done = min(frames, max(checkpointed, int(beat.get("frames_done", 0)))) if live else checkpointed
    if done:
        state = "done"
    elif live:
        state = "running"
    else:
        state = "stopped" if checkpointed or beat else "pending"
    return ShardStatus(index, start, stop, tokens, frames_done, done, max(0, starts.get(index, 0) - 1),
                       speeds.get(index), checkpointed, state, beat)


def shard_status(rundir) -> list[ShardStatus]:
    run = RunDir(rundir)
    return _shards(run, Manifest.load(run.manifest), read_events(run.telemetry))


def _shards(run: RunDir, manifest: Manifest, events: list[dict]) -> list[ShardStatus]:
    starts, speeds = _shard_speeds(events)
    return [_one_shard(run, index, bounds, starts, speeds) for index, bounds in enumerate(manifest.shards)]


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="seconds")


def run_status(rundir) -> RunStatus:
    """The whole run: state, progress, speed and ETA (see the module docstring)."""
    run = RunDir(rundir)
    if not run.manifest.exists() and run.marker.exists():
        return _before_plan(run)
    manifest = Manifest.load(run.manifest)
    events = read_events(run.telemetry)
    shards = _shards(run, manifest, events)
    lock = inspect_lock(run.lock, probe_flock=False)
    live_beats = [s.heartbeat for s in shards if s.state == "running"]
    speed = sum(b.get("tokens_per_s", 0.0) for b in live_beats) if live_beats else None
    tokens_done = sum(s.tokens * s.frames_done / max(s.frames, 1) for s in shards)
    signs = [float(e["time"]) for e in events[-1:]] + [float(s.heartbeat["time"]) for s in shards if s.heartbeat]
    last = max(signs) if signs else None
    all_done = all(s.done for s in shards)
    if all_done and run.complete.exists():
        state, detail = "complete", f"finished at {_when(run.complete.stat().st_mtime)}"
    elif lock is not None and lock.alive:
        state, detail = "running", lock.holder.describe() if lock.holder else "a process holds the run"
    elif live_beats:
        state, detail = "running", ", ".join(f"shard {s.index}: pid {s.heartbeat['pid']} on {s.heartbeat['host']}"
                                             for s in shards if s.state == "running")
    else:
        state = "stopped" if any(s.frames_done or s.heartbeat for s in shards) or all_done else "planned"
        detail = (f"no live process; last activity {_when(last)}" if last else "no live process") + \
            ("; every shard is scored, the outputs are not written yet" if all_done else "") + \
            "; rerun the same command to resume"
    eta = (manifest.tokens - tokens_done) / speed if state == "running" and speed else None
    return RunStatus(state, detail, manifest.frames, sum(s.frames_done for s in shards),
                     sum(s.frames_checkpointed for s in shards), manifest.tokens, speed, eta, last, shards)


def _before_plan(run: RunDir) -> RunStatus:
    """A run directory whose input is still being prepared (or whose first attempt stopped during it)."""
    lock = inspect_lock(run.lock, probe_flock=False)
    if lock is not None and lock.alive:
        who = lock.holder.describe() if lock.holder else "a process holds the run"
        return RunStatus("preparing", f"{who}; the input is being prepared", 0, 0, 0, 0, None, None, None)
    return RunStatus("stopped", "stopped before the input was prepared; rerun the same command to resume",
                     0, 0, 0, 0, None, None, None)


def pending_shards(rundir) -> list[int]:
    """Shards without a `.done` marker (what `submit --resume` and `predict` still have to run)."""
    run = RunDir(rundir)
    manifest = Manifest.load(run.manifest)
    return [index for index in range(len(manifest.shards)) if not is_done(run.shard_dir(index))]


def is_complete(rundir) -> bool:
    """complete.json exists and every shard is still done (aggregation removes `.done` of a shard whose part
    failed its check: the earlier outputs are then out of date)."""
    run = RunDir(rundir)
    return run.complete.exists() and not pending_shards(rundir)
