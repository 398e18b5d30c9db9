"""`virnucpro aggregate RUNDIR`: merge the finished shards into the final outputs."""

from __future__ import annotations

import sys

from virnucpro.commands.options import run_options
from virnucpro.config import EnvConfig
from virnucpro.run.aggregate import aggregate


def register(subparsers) -> None:
    parser = subparsers.add_parser("aggregate", help="merge finished shards into the final outputs")
    parser.add_argument("rundir")
    parser.set_defaults(handler=handle)


def handle(args, env: EnvConfig) -> int:
    report = aggregate(args.rundir, run_options(args, env))
    print(f"{report.frames} frames, {report.chunks} chunks ({report.viral_chunks} viral), "
          f"{report.sequences} sequences ({report.viral_sequences} viral) -> {args.rundir}", file=sys.stderr)
    return 0
