"""The real `virnucpro` command line with a fault hook in the run's event seam (RunOptions.on_event):

    python tests/fault_runner.py --kill-at EVENT:N [--signal TERM] -- predict INPUT -o RUNDIR ...

SIGKILLs this process the N-th time the run reaches EVENT (virnucpro.run.options.RUN_EVENTS), as a crash, the OOM
killer or a pulled plug would, at a moment a test can name. `--signal TERM` sends SIGTERM instead (scancel, kill,
a batch system's time limit).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from dataclasses import dataclass

from virnucpro import cli
from virnucpro.run.options import RUN_EVENTS


@dataclass
class KillAt:
    event: str
    at: int
    seen: int = 0
    signal: int = signal.SIGKILL

    @classmethod
    def parse(cls, spec: str) -> "KillAt":
        event, _, count = spec.partition(":")
        if event not in RUN_EVENTS or not count.isdigit() or int(count) < 1:
            raise argparse.ArgumentTypeError(f"{spec!r}: expected EVENT:N, EVENT one of {', '.join(RUN_EVENTS)}")
        return cls(event, int(count))

    def __call__(self, event: str) -> None:
        if event != self.event:
            return
        self.seen += 1
        if self.seen == self.at:
            os.kill(os.getpid(), self.signal)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(prog="fault_runner.py", usage="%(prog)s --kill-at EVENT:N -- VIRNUCPRO ARGS")
    parser.add_argument("--kill-at", type=KillAt.parse, required=True)
    parser.add_argument("--signal", choices=("KILL", "TERM"), default="KILL")
    options = parser.parse_args(argv[:split])
    options.kill_at.signal = getattr(signal, f"SIG{options.signal}")
    return cli.main(argv[split + 1:], on_event=options.kill_at)


if __name__ == "__main__":
    raise SystemExit(main())
