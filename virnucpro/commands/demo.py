"""`virnucpro demo`: an offline end-to-end run with tiny random-weight models written in the real formats.

The calls it prints are meaningless (random weights); it shows the pipeline, the files and their columns.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

from virnucpro.commands.options import run_options
from virnucpro.commands.predict import RESULT_FILES, predict_and_report
from virnucpro.config import EngineConfig, EnvConfig, ModelPaths, PredictConfig
from virnucpro.testing.demo import demo_input, make_demo_models


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="offline demo with tiny random-weight models (meaningless calls)")
    parser.add_argument("--out", default="demo-out", help="folder for the demo models and run (default demo-out)")
    parser.set_defaults(handler=handle)


def handle(args, env: EnvConfig) -> int:
    out = Path(args.out)
    run_dir = out / "run"
    models = make_demo_models(out / "models")
    input_copy = out / "demo.fasta"
    shutil.copyfile(demo_input(), input_copy)
    # force_restart: a fresh demo every time, removing only the earlier demo run's own files
    cfg = PredictConfig(input=input_copy, outdir=run_dir, models=models, engine=EngineConfig(device="cpu"),
                        force_restart=True)
    predict_and_report(cfg, env, run_options(args, env))
    print(f"\nDemo finished. Outputs in {run_dir}/:", file=sys.stderr)
    for name in RESULT_FILES:
        print(f"  {run_dir / name}", file=sys.stderr)
    mine = out / "my-run"
    print(f"\nRun predict yourself with the demo models (any FASTA/FASTQ as input):\n"
          f"  {predict_command(input_copy, models, mine)}\nthen `virnucpro status {mine}` shows its progress.",
          file=sys.stderr)
    print("NOTE: the demo uses tiny RANDOM-weight models, so its virus/others calls are meaningless.\n"
          "Real runs need the real weights: see README.md (`virnucpro models fetch`).", file=sys.stderr)
    return 0


def predict_command(input_path: Path, models: ModelPaths, run_dir: Path) -> str:
    """The `virnucpro predict` command line that runs these models (what the demo ran, as a user types it)."""
    return " ".join(shlex.quote(str(part)) for part in (
        program_name(), "predict", input_path, "-o", run_dir, "--device", "cpu", "--esm-model", models.esm,
        "--dnabert-model", models.dnabert, "--classifier", models.classifier))


def program_name() -> str:
    """How to call virnucpro from a shell: plain `virnucpro` when PATH finds this installation, else its path
    (after `make install`, .venv/bin/virnucpro: the virtual environment is not activated)."""
    beside = Path(sys.executable).parent / "virnucpro"
    found = shutil.which("virnucpro")
    if found and beside.exists() and Path(found).resolve() == beside.resolve():
        return "virnucpro"
    return str(beside) if beside.exists() else f"{sys.executable} -m virnucpro"
