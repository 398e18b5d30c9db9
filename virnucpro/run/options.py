"""Run-time knobs of the checkpointing machinery (from EnvConfig) and the run's event hook.

`RunOptions.on_event(name)` is called at the named moments of a run (RUN_EVENTS, in order of a run's life:
after prep, after the frame index, during de-duplication (after each hashed chunk and each resolved bucket),
before the manifest is written, after each SLURM array is submitted and recorded, after each scored block,
before a part's rename, after a part is written, after a shard's `.done`; in aggregation (and `call`): at the
start, after each part is streamed (aggregate-part), before the consensus is merged from its sorted runs
(aggregate-merge), before the report, before embeddings.h5, before the outputs are renamed into place and before
each rename (aggregate-commit)). The default does nothing; the reliability tests install a hook there
(tests/fault_runner.py kills the process at the n-th occurrence of an event).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from virnucpro.config import EnvConfig
from virnucpro.outputs.external_sort import RUN_ROWS

RUN_EVENTS = ("prep", "index", "dedup", "plan", "submit", "block", "part-write", "part", "shard-done", "aggregate",
              "aggregate-part", "aggregate-merge", "aggregate-commit")
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
    # "up": shards of at most shard_tokens (predict); "down": of at least shard_tokens (submit: start-up bound)
    shard_rounding: str = "up"
    sort_rows: int = RUN_ROWS  # consensus rows sorted in memory; more are sorted in runs on disk and merged
    on_event: EventHook = ignore_event

    @classmethod
    def from_env(cls, env: EnvConfig, on_event: EventHook = ignore_event) -> "RunOptions":
        return cls(part_frames=env.part_frames, part_seconds=env.part_seconds, block_frames=env.block_frames,
                   shard_tokens=env.shard_tokens or cls.shard_tokens, sort_rows=env.sort_rows or cls.sort_rows,
                   on_event=on_event)
