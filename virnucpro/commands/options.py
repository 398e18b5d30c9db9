"""Options shared by several commands, and the configuration objects built from them.

Every command builds what the layers below take (PredictConfig, ModelPaths, EngineConfig, RunOptions) here, from
its parsed arguments and the EnvConfig that `cli.main` read once.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from virnucpro.config import DEFAULT_PRECISION, PRECISION_NAMES, EngineConfig, EnvConfig, ModelPaths, PredictConfig
from virnucpro.prep.chunking import PUBLISHED_CHUNK_LENGTHS
from virnucpro.run.calls import CONSENSUS_FORMATS
from virnucpro.run.options import RunOptions, ignore_event

# Measured on an H200 (docs/benchmarks.md, "Numerics"): calls identical to the fp32 reference under a harsh
# calibration, and speed relative to the default.
PRECISION_HELP = ("numerics on the GPU (always fp32 on the CPU): fp16 (default; 99.81%% of calls identical to fp32, "
                  "full speed), bf16 (98.9%%, ~5%% faster), accurate (fp16, then every frame within 0.02 of a "
                  "call's boundary computed again in fp32: 99.95-99.97%%, every other call a tie fp32 itself cannot "
                  "resolve; 56-90%% speed with 9%% of frames rechecked), fp32 (the exact reference: 99.97-100%%, only "
                  "ties differ; ~9-18%% speed)")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by `predict` and `submit`: which models, how to run them."""
    group = parser.add_argument_group("models and engine")
    group.add_argument("--chunk-length", type=int, choices=PUBLISHED_CHUNK_LENGTHS, default=500,
                       help="chunk size in bp; picks the matching published classifier (default 500)")
    group.add_argument("--esm-model", default="3B",
                       help="650M | 3B | 15B (looked up in the model store) or a path to a fair-esm .pt / .safetensors")
    group.add_argument("--dnabert-model", default=None, help="DNABERT-S Hugging Face folder (default: model store)")
    group.add_argument("--classifier", default=None, help="300_model.pth / 500_model.pth (default: by --chunk-length)")
    group.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    group.add_argument("--precision", choices=PRECISION_NAMES, default=DEFAULT_PRECISION,
                       help=PRECISION_HELP)
    group.add_argument("--token-budget", type=int, default=0, help="tokens per packed batch (default: from GPU memory)")
    group.add_argument("--workers", type=int, default=-1, help="CPU DataLoader workers (default: from CPUs)")
    group.add_argument("--attention", choices=("auto", "varlen", "flash", "flex", "padded", "sdpa"), default="auto")
    group.add_argument("--compile", action="store_true", help="torch.compile the whole models (off by default)")
    group.add_argument("--no-fuse", dest="fuse", action="store_false",
                       help="do not torch.compile the elementwise regions between the GEMMs on the GPU")
    group.add_argument("--no-dedup", dest="dedup", action="store_false",
                       help="score every frame, also repeats (default: identical frames, same nucleotides and "
                            "protein, are scored once and their scores copied to every occurrence)")


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def add_prep_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--min-length", type=non_negative_int, default=0, metavar="BP",
                        help="drop input sequences shorter than BP at prep (counted as too_short in "
                             "sequence_summary.tsv; default 0 keeps all, as published)")


def add_consensus_format_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--consensus-format", choices=CONSENSUS_FORMATS, default=None,
                        help="prediction_results_highestscore.csv as published (Modified_ID, Is_Virus; sorted) or "
                             "as the Broad Institute port (+ max_score_0, max_score_1; frame order) "
                             "(default: as recorded in the run directory, else published)")


def model_paths_from_args(args) -> ModelPaths:
    return ModelPaths(esm=args.esm_model, dnabert=args.dnabert_model, classifier=args.classifier)


def engine_config_from_args(args) -> EngineConfig:
    return EngineConfig(device=args.device, precision=args.precision, token_budget=args.token_budget,
                        workers=args.workers, compile=args.compile, fuse=args.fuse,
                        attention=args.attention)


def predict_config_from_args(args, gpus: int | None = None) -> PredictConfig:
    """From `add_model_options`, `add_prep_options` plus input, -o, --save-embeddings, --force-restart (and --gpus
    unless given)."""
    return PredictConfig(
        input=Path(args.input), outdir=Path(args.output), chunk_length=args.chunk_length,
        models=model_paths_from_args(args), engine=engine_config_from_args(args),
        save_embeddings=args.save_embeddings, gpus=args.gpus if gpus is None else gpus,
        force_restart=args.force_restart, dedup=args.dedup, min_length=args.min_length,
    )


def run_options(args, env: EnvConfig) -> RunOptions:
    """Checkpoint cadence and shard size from the environment; the event hook `cli.main` was given, if any."""
    return RunOptions.from_env(env, on_event=getattr(args, "on_event", None) or ignore_event)
