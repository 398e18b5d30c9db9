"""`virnucpro report RUNDIR`: write RUNDIR/report.html again from the run's outputs (one self-contained page)."""

from __future__ import annotations

import sys

from virnucpro.config import EnvConfig
from virnucpro.run.report import rebuild_report


def register(subparsers) -> None:
    parser = subparsers.add_parser("report", help="write report.html of a finished run again", description=__doc__)
    parser.add_argument("rundir")
    parser.set_defaults(handler=handle)


def handle(args, env: EnvConfig) -> int:
    print(f"report: {rebuild_report(args.rundir)}", file=sys.stderr)
    return 0
