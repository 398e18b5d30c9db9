"""Run-time knobs of the checkpointing machinery, read once at start-up, and the test kill hook.

VIRNUCPRO_TEST_KILL_AT=<event>:<n> makes the process SIGKILL itself the n-th time it reaches the named point
(events: prep, plan, block, part-write, part, shard-done, aggregate). Only the reliability tests set it.
"""

from __future__ import annotations

import functools
import os
import signal
from dataclasses import dataclass, field

from virnucpro.config import EnvConfig

KILL_EVENTS = ("prep", "plan", "block", "part-write", "part", "shard-done", "aggregate")


@dataclass
class KillSwitch:
    event: str | None = None
    at: int = 0
    counts: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str | None) -> "KillSwitch":
        if not spec:
            return cls()
        event, _, count = spec.partition(":")
        if event not in KILL_EVENTS or not count.isdigit() or int(count) < 1:
            raise ValueError(f"VIRNUCPRO_TEST_KILL_AT={spec!r}: expected <event>:<n>, event one of {KILL_EVENTS}")
        return cls(event, int(count))

    def hit(self, event: str) -> None:
        if event != self.event:
            return
        self.counts[event] = self.counts.get(event, 0) + 1
        if self.counts[event] == self.at:
            os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class RunOptions:
    part_frames: int = 16384  # a checkpoint part every this many frames...
    part_seconds: float = 120.0  # ...or this many seconds, whichever comes first
    block_frames: int = 4096  # frames per Scorer block
    shard_tokens: int = 20_000_000  # target tokens per shard (~ minutes of one GPU on ESM-2 3B)
    kill: KillSwitch = field(default_factory=KillSwitch)

    @classmethod
    def from_env(cls, env: EnvConfig) -> "RunOptions":
        return cls(part_frames=env.part_frames, part_seconds=env.part_seconds, block_frames=env.block_frames,
                   shard_tokens=env.shard_tokens, kill=KillSwitch.parse(env.test_kill_at))


@functools.lru_cache(maxsize=1)
def default_options() -> RunOptions:
    """The options of this process, from the EnvConfig read once at start-up (shared kill counters)."""
    return RunOptions.from_env(EnvConfig.from_environ())
