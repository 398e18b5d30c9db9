"""Oracle for ESM-2 embeddings: fair-esm's own model and alphabet, fp32, one protein at a time.

Loads the checkpoint with `esm.pretrained.load_model_and_alphabet_local` (no code shared with
virnucpro.models.esm2) and pools as the published tool does:
`model(tokens, repr_layers=[num_layers])["representations"][num_layers][0, 1:min(L, 1024) + 1].mean(0)`.
An empty protein therefore gives NaN here (mean of nothing); the packed path documents zeros instead.
Slow on purpose; the oracle of the tests (tests/test_esm2.py, the GPU fidelity test) and of `virnucpro selftest`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from virnucpro.models.torch_files import FAIR_ESM_GLOBALS, allowed_globals

MAX_POOLED_RESIDUES = 1024


def load_fair_esm(checkpoint_path: str | Path):
    """(model, alphabet) in fp32 eval mode. fair-esm 2.0.0 calls torch.load without weights_only, which
    torch >= 2.6 treats as weights_only=True; allowing argparse.Namespace keeps it on the safe unpickler."""
    import esm

    with allowed_globals(FAIR_ESM_GLOBALS):
        model, alphabet = esm.pretrained.load_model_and_alphabet_local(str(checkpoint_path))
    return model.float().eval(), alphabet


def reference_esm2_embeddings(checkpoint_path: str | Path, proteins: Sequence[str]) -> np.ndarray:
    """[n, embed_dim] float32: last layer (after the final LayerNorm), mean over the first <= 1024 residues."""
    model, alphabet = load_fair_esm(checkpoint_path)
    convert = alphabet.get_batch_converter()
    layer = model.num_layers
    out = np.zeros((len(proteins), model.embed_dim), dtype=np.float32)
    with torch.inference_mode():
        for i, protein in enumerate(proteins):
            _, _, tokens = convert([(str(i), protein)])
            hidden = model(tokens, repr_layers=[layer])["representations"][layer]
            residues = min(len(protein), MAX_POOLED_RESIDUES)
            out[i] = hidden[0, 1:residues + 1].mean(0).numpy()
    return out
