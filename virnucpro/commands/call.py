"""`virnucpro call RUNDIR`: calls again from the stored per-frame scores with other thresholds (seconds, no GPU).

    virnucpro call RUN --min-score 0.9 --min-viral-fraction 0.3 --min-chunks 2
    virnucpro call RUN --consensus-format broad
    virnucpro call RUN --classifier other_500_model.pth     # runs made with --save-embeddings: re-score on the CPU
    virnucpro call RUN --min-score published --classifier run   # back to the published rule and the run's scores

Every output is written again (each atomically) and the settings are recorded in RUN/calls.json; options not
given keep their recorded values.
"""

from __future__ import annotations

import argparse
import sys

from virnucpro.commands.options import add_consensus_format_option, run_options
from virnucpro.config import EnvConfig
from virnucpro.run.calls import parse_min_score, parse_number
from virnucpro.run.recall import call_run


def register(subparsers) -> None:
    parser = subparsers.add_parser("call", help="derive every call again from the stored scores (new thresholds)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rundir")
    parser.add_argument("--min-score", metavar="S|published",
                        help="a chunk is viral when its best score2 >= S (default: the published rule, best score2 "
                             ">= best score1); also the per-frame Prediction column")
    parser.add_argument("--min-viral-fraction", metavar="F",
                        help="a sequence is viral when >= F of its scored chunks are (default 0.5)")
    parser.add_argument("--min-chunks", metavar="N",
                        help="sequences with fewer than N scored chunks get no call (few_chunks; default 1)")
    add_consensus_format_option(parser)
    parser.add_argument("--classifier", metavar="FILE|run",
                        help="score the stored embeddings again with this classifier (CPU; runs made with "
                             "--save-embeddings); 'run' returns to the run's own scores")
    parser.set_defaults(handler=handle)


def changes_from_args(args) -> dict:
    """The settings given (checked in the run layer: one-line errors naming the option)."""
    parsers = {"min_score": parse_min_score, "min_viral_fraction": parse_number("--min-viral-fraction", float),
               "min_chunks": parse_number("--min-chunks", int), "consensus_format": str}
    return {name: parse(getattr(args, name)) for name, parse in parsers.items() if getattr(args, name) is not None}


def handle(args, env: EnvConfig) -> int:
    report, settings = call_run(args.rundir, changes_from_args(args), args.classifier, run_options(args, env))
    rule = "published rule" if settings.min_score is None else f"min score {settings.min_score:g}"
    print(f"{report.sequences} sequences: {report.viral_sequences} virus ({rule}, min viral fraction "
          f"{settings.min_viral_fraction:g}, min chunks {settings.min_chunks}); {report.viral_chunks} of "
          f"{report.chunks} chunks viral -> {args.rundir}", file=sys.stderr)
    return 0
