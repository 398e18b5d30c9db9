"""Command-line front end. Each command lives in its own module and exposes `register(subparsers)`;
its handler receives the parsed arguments and the EnvConfig built once here. The modules are virnucpro.commands.*."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Callable

from virnucpro import __version__
from virnucpro.config import EnvConfig
from virnucpro.errors import VirNucProError

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="virnucpro", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"virnucpro {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS.values():
        importlib.import_module(module).register(subparsers)
    return parser


def main(argv: list[str] | None = None, *, on_event: Callable[[str], None] | None = None) -> int:
    """Run one command; the exit status. `on_event` becomes the run's RunOptions.on_event (tests' fault hooks)."""
    parser = build_parser()
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
    try:
        env = EnvConfig.from_environ()
        return int(args.handler(args, env) or 0)
    except VirNucProError as error:
        print(f"virnucpro: error: {error}", file=sys.stderr)
        return error.exit_code
    except OSError as error:  # disk full, permissions, vanished files: one line, not a traceback
        print(f"virnucpro: error: {error}", file=sys.stderr)
        return 5
    except KeyboardInterrupt:
        print("virnucpro: interrupted", file=sys.stderr)
        return 130
