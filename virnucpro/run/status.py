"""What a run directory has done so far, read from file names and telemetry only (fast, never loads a model)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from virnucpro.run.manifest import Manifest
from virnucpro.run.parts import is_done, list_parts
from virnucpro.run.rundir import RunDir
from virnucpro.run.telemetry import read_events


@dataclass
class ShardStatus:
    index: int
    start: int
    stop: int
    tokens: int
    frames_done: int
    done: bool
    restarts: int  # times the shard was started again after its first start
    tokens_per_s: float | None  # over the parts written so far

    @property
    def frames(self) -> int:
        return self.stop - self.start

    def as_dict(self) -> dict:
        return {**asdict(self), "frames": self.frames}


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


def shard_status(rundir) -> list[ShardStatus]:
    run = RunDir(rundir)
    manifest = Manifest.load(run.manifest)
    starts, speeds = _shard_speeds(read_events(run.telemetry))
    statuses = []
    for index, (start, stop, tokens) in enumerate(manifest.shards):
        shard_dir = run.shard_dir(index)
        done = is_done(shard_dir)
        frames_done = stop - start if done else sum(ref.stop - ref.start for ref in list_parts(shard_dir))
        statuses.append(ShardStatus(index, start, stop, tokens, min(frames_done, stop - start), done,
                                    max(0, starts.get(index, 0) - 1), speeds.get(index)))
    return statuses


def pending_shards(rundir) -> list[int]:
    """Shards without a `.done` marker (what `submit --resume` and `predict` still have to run)."""
    run = RunDir(rundir)
    manifest = Manifest.load(run.manifest)
    return [index for index in range(len(manifest.shards)) if not is_done(run.shard_dir(index))]


def is_complete(rundir) -> bool:
    return RunDir(rundir).complete.exists()
