"""Command-line front end. Each command lives in its own module and exposes `register(subparsers)`;
its handler receives the parsed arguments and the EnvConfig built once here."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from virnucpro import __version__
from virnucpro.config import EnvConfig
from virnucpro.errors import VirNucProError

# command name -> module exposing register(subparsers); each sets `handler(args, env) -> int`
COMMANDS = {
    "prep": "virnucpro.prep.command",
    "predict": "virnucpro.engine.command",
    "demo": "virnucpro.testing.demo",
    "bench": "virnucpro.bench.command",
    "shard": "virnucpro.run.command",
    "aggregate": "virnucpro.run.command",
    "status": "virnucpro.run.command",
    "submit": "virnucpro.slurm.command",
    "models": "virnucpro.store.command",
    "selftest": "virnucpro.selftest",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="virnucpro", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"virnucpro {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    registered = set()
    for module_name in COMMANDS.values():
        if module_name in registered:
            continue
        registered.add(module_name)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name == module_name:
                continue  # command not built yet
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
