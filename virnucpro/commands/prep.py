"""`virnucpro prep INPUT -o DIR [--chunk-length {300,500}]`: only the published preparation step."""

from __future__ import annotations

import sys
from pathlib import Path

from virnucpro.commands.options import add_prep_options
from virnucpro.prep.chunking import PUBLISHED_CHUNK_LENGTHS
from virnucpro.prep.pipeline import run_prep


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "prep",
        help="chunk and six-frame translate a FASTA/FASTQ file (the published prep files)",
        description="Write chunked.fasta, identified_nucleotide.fasta and identified_protein.faa (and the "
                    "per-sequence table sequences.tsv) into DIR.",
    )
    parser.add_argument("input", type=Path, help="FASTA or FASTQ, plain or gzip/bgzip")
    parser.add_argument("-o", "--outdir", metavar="DIR", type=Path, required=True, help="output directory")
    parser.add_argument("--chunk-length", type=int, choices=PUBLISHED_CHUNK_LENGTHS, default=500)
    add_prep_options(parser)
    parser.set_defaults(handler=handle)


def handle(args, env) -> int:
    stats = run_prep(args.input, args.outdir, args.chunk_length, min_length=args.min_length)
    rate = stats.bases / 1e6 / stats.seconds if stats.seconds > 0 else 0.0
    print(
        f"virnucpro prep: {stats.records} records, {stats.bases} bp -> {stats.chunks} chunks, "
        f"{stats.frames} frames in {stats.seconds:.2f} s ({rate:.1f} Mbp/s) -> {args.outdir}",
        file=sys.stderr,
    )
    return 0
