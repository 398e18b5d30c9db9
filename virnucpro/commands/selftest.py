"""`virnucpro selftest`: this installation on this device, with tiny random-weight models (virnucpro/selftest.py)."""

from __future__ import annotations

from virnucpro.config import EnvConfig
from virnucpro.selftest import run_selftest


def register(subparsers) -> None:
    parser = subparsers.add_parser("selftest", help="check this installation and device with tiny random models",
                                   description="Tiny random-weight models in the real formats through predict's "
                                               "loaders and engine, against the fp32 references (offline).")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto (default: the GPU when one is visible) | cpu | cuda")
    parser.add_argument("--dnabert-tokenizer", default=None,
                        help="the real DNABERT-S tokenizer.json (or its folder); default: a small one made here")
    parser.set_defaults(handler=handle)


def handle(args, env: EnvConfig) -> int:
    return 0 if run_selftest(args.device, env, args.dnabert_tokenizer) else 1
