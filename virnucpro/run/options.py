"""Run-time knobs of the checkpointing machinery (from EnvConfig) and the run's event hook.

`RunOptions.on_event(name)` is called at the named moments of a run (RUN_EVENTS, in order of a run's life:
after prep, before the manifest is written, after each scored block, before a part's rename, after a part is
written, after a shard's `.done`, before each final output). The default does nothing; the reliability tests
install a hook there (tests/fault_runner.py kills the process at the n-th occurrence of an event).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from virnucpro.config import EnvConfig

RUN_EVENTS = ("prep", "plan", "block", "part-write", "part", "shard-done", "aggregate")
EventHook = Callable[[str], None]


def ignore_event(name: str) -> None:
    """The default hook (a module-level function, so RunOptions pickles into spawned GPU processes)."""


@dataclass
class RunOptions:
    part_frames: int = 16384  # a checkpoint part every this many frames...
    part_seconds: float = 120.0  # ...or this many seconds, whichever comes first
    block_frames: int = 4096  # frames per Scorer block
    cpu_block_frames: int = 256  # at most this many on the CPU: a block of seconds, so progress moves every few
    shard_tokens: int = 20_000_000  # target tokens per shard (~ minutes of one GPU on ESM-2 3B)
    on_event: EventHook = ignore_event

    @classmethod
    def from_env(cls, env: EnvConfig, on_event: EventHook = ignore_event) -> "RunOptions":
        return cls(part_frames=env.part_frames, part_seconds=env.part_seconds, block_frames=env.block_frames,
                   shard_tokens=env.shard_tokens, on_event=on_event)
