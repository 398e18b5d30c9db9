"""`virnucpro demo`: an offline end-to-end run with tiny random-weight models written in the real formats.

The calls it prints are meaningless (random weights); it shows the pipeline, the files and their columns.
"""

from __future__ import annotations

import shutil
import sys
from importlib import resources
from pathlib import Path

from virnucpro.config import ModelPaths

ESM_DIM = 64
DNABERT_HIDDEN = 48


def make_demo_models(folder: str | Path, seed: int = 0) -> ModelPaths:
    """Write a tiny ESM-2 .pt (+ contact regression), a DNABERT-S folder and a pickled classifier."""
    from virnucpro.testing.classifier_checkpoint import write_tiny_classifier
    from virnucpro.testing.dnabert_checkpoint import write_tiny_dnabert
    from virnucpro.testing.esm2_checkpoint import write_tiny_esm2

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    esm = write_tiny_esm2(folder / "esm2_t2_demo.pt", layers=2, dim=ESM_DIM, heads=4, seed=seed)
    dnabert = write_tiny_dnabert(folder / "dnabert-s-demo", layers=2, hidden=DNABERT_HIDDEN, heads=4,
                                 intermediate=96, seed=seed)
    classifier = write_tiny_classifier(folder / "500_model_demo.pth", input_dim=ESM_DIM + DNABERT_HIDDEN,
                                       hidden_dim=16, seed=seed, form="pickle")
    return ModelPaths(esm=str(esm), dnabert=str(dnabert), classifier=str(classifier))


def demo_input() -> Path:
    return Path(str(resources.files("virnucpro") / "data" / "demo.fasta"))


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="offline demo with tiny random-weight models (meaningless calls)")
    parser.add_argument("--out", default="demo-out", help="folder for the demo models and run (default demo-out)")
    parser.set_defaults(handler=run_demo)


def run_demo(args, env) -> int:
    from virnucpro.cli import main as cli_main

    out = Path(args.out)
    run_dir = out / "run"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    models = make_demo_models(out / "models")
    input_copy = out / "demo.fasta"
    shutil.copyfile(demo_input(), input_copy)
    status = cli_main(["predict", str(input_copy), "-o", str(run_dir), "--device", "cpu",
                       "--esm-model", models.esm, "--dnabert-model", models.dnabert,
                       "--classifier", models.classifier])
    if status:
        return status
    print(f"\nDemo finished. Outputs in {run_dir}/:", file=sys.stderr)
    for name in ("prediction_results.txt", "prediction_results_highestscore.csv", "sequence_summary.tsv"):
        print(f"  {run_dir / name}", file=sys.stderr)
    print("NOTE: the demo uses tiny RANDOM-weight models, so its virus/others calls are meaningless.\n"
          "Real runs need the real weights: see README.md (`virnucpro models fetch`).", file=sys.stderr)
    return 0
