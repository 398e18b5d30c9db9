"""One module per `virnucpro` subcommand: `register(subparsers)` adds its parser and sets `handler(args, env) -> int`.

A command only parses arguments, builds the configuration the layers below take (options.py) and prints; the
work itself lives in its layer (prep, run, slurm, store, bench). To add a command: a module here with `register`
and `handle`, and one line in `cli.COMMANDS`.
"""
