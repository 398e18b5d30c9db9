"""What `virnucpro demo` (and the reliability tests) run on: tiny random-weight models written in the real
formats, and the bundled example input. Their calls are meaningless (random weights)."""

from __future__ import annotations

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
