"""Tiny random-weight ESM-2 checkpoints in fair-esm's real file format (tests, `make demo`).

`<name>.pt` holds {"model": {"encoder.sentence_encoder.<name>" | "encoder.lm_head.<name>": tensor},
"cfg": {"model": Namespace(encoder_layers, encoder_embed_dim, encoder_attention_heads, token_dropout, ...)}}
like the published esm2_t*_UR50D.pt files, and `<name>-contact-regression.pt` holds the contact head, which
fair-esm's local loader requires next to it. The file name must start with "esm2" for fair-esm to read it as
ESM-2. LayerNorm weights and biases are randomised too, so a test notices a skipped or misplaced norm.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from virnucpro.io.atomic import atomic_write

def _random_fair_esm(layers: int, dim: int, heads: int, seed: int):
    import esm

    torch.manual_seed(seed)
    model = esm.model.esm2.ESM2(num_layers=layers, embed_dim=dim, attention_heads=heads, alphabet="ESM-1b",
                                token_dropout=True)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.1)
    return model


def _file_key(name: str) -> str:
    return ("encoder." if name.startswith("lm_head.") else "encoder.sentence_encoder.") + name


def _save(obj, path: Path) -> None:
    with atomic_write(path, "wb") as handle:
        torch.save(obj, handle)


def write_tiny_esm2(path: str | Path, layers: int = 2, dim: int = 64, heads: int = 4, seed: int = 0) -> Path:
    """Write `path` (a name starting with 'esm2', ending in .pt) and its contact-regression file; return path."""
    path = Path(path)
    if not path.name.startswith("esm2") or path.suffix != ".pt":
        raise ValueError(f"{path}: fair-esm only reads ESM-2 files named esm2*.pt")
    return save_fair_esm_checkpoint(path, _random_fair_esm(layers, dim, heads, seed).state_dict(), layers, dim, heads)


def save_fair_esm_checkpoint(path: Path, state: dict, layers: int, dim: int, heads: int) -> Path:
    """Write a fair-esm ESM2 state dict (its own module names) as fair-esm's published files do."""
    cfg = argparse.Namespace(encoder_layers=layers, encoder_embed_dim=dim, encoder_ffn_embed_dim=4 * dim,
                             encoder_attention_heads=heads, token_dropout=True, attention_dropout=0.0,
                             dropout=0.0, max_positions=1024, arch="ESM-1b")
    model = {_file_key(k): v.clone() for k, v in state.items() if not k.startswith("contact_head.")}
    regression = {k: v.clone() for k, v in state.items() if k.startswith("contact_head.")}
    _save({"model": model, "cfg": {"model": cfg}}, path)
    _save({"model": regression}, path.with_name(path.stem + "-contact-regression.pt"))
    return path
