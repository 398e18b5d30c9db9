"""`virnucpro predict`: prepare, score on every visible GPU (or the CPU), aggregate — resumable in one run dir."""

from __future__ import annotations

import logging

from virnucpro.commands.options import (add_consensus_format_option, add_model_options, add_prep_options,
                                         predict_config_from_args, run_options)
from virnucpro.config import EnvConfig, PredictConfig
from virnucpro.run.options import RunOptions
from virnucpro.run.pipeline import predict_run
from virnucpro.run.rundir import HIGHEST_SCORE, PREDICTIONS, REPORT, SUMMARY, VIRAL_FASTA

log = logging.getLogger(__name__)

RESULT_FILES = (PREDICTIONS, HIGHEST_SCORE, SUMMARY, VIRAL_FASTA, REPORT)  # what a user reads first


def register(subparsers) -> None:
    parser = subparsers.add_parser("predict", help="identify viral sequences in a FASTA/FASTQ file",
                                   description=__doc__)
    parser.add_argument("input", help="FASTA or FASTQ, plain or gzip")
    parser.add_argument("-o", "--output", required=True, help="run directory (created; resumed if it exists)")
    add_model_options(parser)
    add_prep_options(parser)
    add_consensus_format_option(parser)
    parser.add_argument("--gpus", type=int, default=0, help="GPUs to use (default 0 = every visible GPU)")
    parser.add_argument("--save-embeddings", action="store_true", help="also write embeddings.h5")
    parser.add_argument("--force-restart", action="store_true",
                        help="discard the run directory's shards instead of refusing a mismatched resume")
    parser.set_defaults(handler=handle)


def handle(args, env: EnvConfig) -> int:
    return predict_and_report(predict_config_from_args(args), env, run_options(args, env), args.consensus_format)


def predict_and_report(cfg: PredictConfig, env: EnvConfig, options: RunOptions,
                       consensus_format: str | None = None) -> int:
    report = predict_run(cfg, env, options=options, consensus_format=consensus_format)
    log.info("done: %s", report)
    print(f"results in {cfg.outdir}/ ({', '.join(RESULT_FILES)})")
    return 0
