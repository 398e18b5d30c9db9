"""Check the input and the three model files before a run directory or its manifest is written.

A bad model found only when the scorer loads (after the manifest) would be recorded as the run's model, and the
corrected command would then be refused as "model differs". So plan checks them first with the product's own
loaders, on PyTorch's meta device: the checkpoint's structure, tensor names and shapes are read (memory-mapped),
no weights are copied. ESM-2 `.safetensors` files are only opened and their header and metadata parsed, so that
a login node planning a SLURM run never reads a 30 GB file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from virnucpro.config import ModelPaths
from virnucpro.errors import InputError, ModelError
from virnucpro.io.sequences import check_sequence_file


def check_input(path: Path) -> None:
    """The input exists, is a readable file (not a directory: io.sequences says so) and starts like FASTA/FASTQ
    (prep checks every record)."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "input file not found")
    check_sequence_file(path)


def _check_not_empty(path: Path, what: str) -> None:
    if path.is_file() and os.path.getsize(path) == 0:
        raise ModelError(path, f"{what} file is empty (0 bytes): an interrupted download or copy?")


def _check_esm_safetensors(path: Path) -> None:
    from safetensors import safe_open

    from virnucpro.models.esm2 import SAFETENSORS_KEY

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = json.loads((handle.metadata() or {}).get(SAFETENSORS_KEY, "null"))
    except Exception as error:  # safetensors raises its own error types for a corrupt or truncated header
        raise ModelError(path, f"not a readable safetensors file: {error}") from None
    if not isinstance(meta, dict) or meta.get("model") != "esm2":
        raise ModelError(path, "safetensors file lacks ESM-2 metadata", key=SAFETENSORS_KEY)


def check_model_files(files: ModelPaths) -> None:
    """ModelError naming the file and the problem when a model file cannot be what the run needs."""
    from virnucpro.models.classifier import load_classifier
    from virnucpro.models.dnabert import load_dnabert
    from virnucpro.models.esm2 import load_esm2
    from virnucpro.tokenize.dna import DnaTokenizer

    esm, dnabert, classifier = Path(files.esm), Path(files.dnabert), Path(files.classifier)
    _check_not_empty(esm, "ESM-2")
    _check_not_empty(classifier, "classifier")
    if esm.suffix == ".safetensors":
        _check_esm_safetensors(esm)
        esm_dim = None
    else:
        esm_dim = load_esm2(esm, device="meta").embed_dim
    dna_dim = load_dnabert(dnabert, device="meta").hidden_size
    DnaTokenizer(dnabert)
    load_classifier(classifier, "cpu", expected_input_dim=None if esm_dim is None else esm_dim + dna_dim)
