"""Command-line front end. Each command lives in its own module and exposes `register(subparsers)`;
its handler receives the parsed arguments and the EnvConfig built once here. The modules are virnucpro.commands.*."""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
import traceback
from typing import Callable

from virnucpro import __version__
from virnucpro.config import EnvConfig
from virnucpro.errors import EXIT_INTERNAL, Terminated, failure

DESCRIPTION = """Find viral sequences in DNA reads and contigs with the published VirNucPro method (DNABERT-S +
ESM-2 embeddings, the published classifier), on GPUs or the CPU, resumable after any interruption."""
EPILOG = """first steps:
  virnucpro demo                              offline run with tiny random models (meaningless calls)
  virnucpro models fetch                      download the real models once (~6.2 GB)
  virnucpro predict reads.fasta -o run/       prepare, score, write the results into run/ (rerun to resume)
  virnucpro status run/                       progress, liveness and ETA of a run

exit codes: 0 ok, 1 internal error (a bug), 2 bad input or command line, 3 model files, 4 run directory cannot
be used as asked, 5 SLURM, 6 disk full (rerun to resume), 7 run directory in use by another process,
8 other system error, 130 interrupted, 143 terminated. `virnucpro COMMAND --help` describes each command."""

# command name -> its module (register(subparsers) sets `handler(args, env) -> int`), in `--help` order
COMMANDS = {
    "prep": "virnucpro.commands.prep",
    "predict": "virnucpro.commands.predict",
    "demo": "virnucpro.commands.demo",
    "bench": "virnucpro.commands.bench",
    "shard": "virnucpro.commands.shard",
    "aggregate": "virnucpro.commands.aggregate",
    "call": "virnucpro.commands.call",
    "report": "virnucpro.commands.report",
    "status": "virnucpro.commands.status",
    "submit": "virnucpro.commands.submit",
    "models": "virnucpro.commands.models",
    "selftest": "virnucpro.commands.selftest",
}


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser with every command; given the command line, only the command it names, so that a task's
    start-up does not import the other commands' modules (`virnucpro --help` and a mistyped name get all)."""
    parser = argparse.ArgumentParser(prog="virnucpro", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"virnucpro {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    named = _named_command(argv)
    for name, module in COMMANDS.items():
        if named in (None, name):
            importlib.import_module(module).register(subparsers)
    return parser


def _named_command(argv: list[str] | None) -> str | None:
    """The command of a command line (its first word that is not an option) when it is a known one."""
    first = next((word for word in (argv or []) if not word.startswith("-")), None)
    return first if first in COMMANDS else None


def main(argv: list[str] | None = None, *, on_event: Callable[[str], None] | None = None) -> int:
    """Run one command; the exit status. `on_event` becomes the run's RunOptions.on_event (tests' fault hooks)."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    args.on_event = on_event
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return 2
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        env = EnvConfig.from_environ()
        return int(args.handler(args, env) or 0)
    except (Exception, KeyboardInterrupt, Terminated) as error:  # one line; a bug's traceback with -v
        code, line = failure(error)
        if code == EXIT_INTERNAL and args.verbose:
            traceback.print_exc()
        print(f"virnucpro: error: {line}", file=sys.stderr)
        return code
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _terminate(signum, frame) -> None:
    """SIGTERM (scancel, kill, a time limit): unwind like Ctrl-C, so locks are released and the log says so."""
    raise Terminated()
