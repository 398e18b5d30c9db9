"""`virnucpro call --classifier FILE`: score a finished run's stored embeddings again with another classifier.

Runs on the CPU (an MLP over [n, 768 + 2560] features is cheap) with the product's loader and scoring
(`models.classifier`: the same concatenation, DNABERT-S first, and the same fp32 softmax as the engine).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from virnucpro.errors import ModelError, RunStateError
from virnucpro.run.manifest import Manifest
from virnucpro.run.parts import PartData


def check_rescorable(manifest: Manifest, rundir) -> None:
    if not manifest.identity.save_embeddings:
        raise RunStateError(f"{rundir}: --classifier needs the stored embeddings of a run made with "
                            "--save-embeddings; this run has none")


def load_rescoring_classifier(path: str | Path):
    """The classifier on the CPU, any input width (checked against the embeddings when the first part comes)."""
    from virnucpro.models.classifier import load_classifier

    return load_classifier(path, "cpu", expected_input_dim=None)


def rescored(parts: Iterable[PartData], model, path: str | Path) -> Iterator[PartData]:
    """The parts (read with their embeddings) with scores from `model`; embeddings dropped after use."""
    import torch

    from virnucpro.models.classifier import score

    for part in parts:
        features = np.concatenate([part.dna, part.protein], axis=1)
        if features.shape[1] != model.input_dim:
            raise ModelError(path, f"takes {model.input_dim} features, the run's embeddings have "
                                   f"{part.dna.shape[1]} + {part.protein.shape[1]} = {features.shape[1]}")
        with torch.inference_mode():
            scores = score(model, torch.from_numpy(features)).numpy().astype(np.float32)
        yield PartData(part.start, part.ids, scores)
