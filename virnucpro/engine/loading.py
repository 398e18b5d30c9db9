"""Load the three models once onto one device, check they fit together, and size the packing budget."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from virnucpro.config import EngineConfig, ModelPaths
from virnucpro.errors import ModelError
from virnucpro.models.classifier import load_classifier
from virnucpro.models.dnabert import load_dnabert
from virnucpro.models.esm2 import load_esm2
from virnucpro.models.precision import CPU_NUMERICS, PRECISION_MODES, Numerics
from virnucpro.tokenize.dna import DnaTokenizer
from virnucpro.tokenize.protein import ProteinTokenizer

log = logging.getLogger(__name__)

# bf16 activation bytes per token and hidden unit that one packed forward keeps alive at its peak
# (residual, LN output, q/k/v, fc1 output at 4x width, gelu output): ~24 values of 2 bytes.
_ACTIVATION_BYTES_PER_TOKEN_PER_DIM = 48
# Measured on an H100 (docs/benchmarks.md): ESM-2 3B gains <1% past 32k tokens, DNABERT-S ~1% past 64k.
ESM_TOKEN_BUDGET = 32768
DNABERT_TOKEN_BUDGET = 65536
_CPU_BUDGET = 4096


@dataclass
class LoadedModels:
    device: torch.device
    numerics: Numerics
    esm: torch.nn.Module
    dnabert: torch.nn.Module
    classifier: torch.nn.Module
    dna_tokenizer: DnaTokenizer
    protein_tokenizer: ProteinTokenizer
    identity: dict
    token_budgets: tuple[int, int]


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(requested, "CUDA device requested but no GPU is visible (CUDA_VISIBLE_DEVICES?)")
    return device


def resolve_numerics(mode: str, device: torch.device) -> Numerics:
    """What `--precision mode` computes in on this device (always fp32 on the CPU, where half GEMMs are slow)."""
    if mode not in PRECISION_MODES:
        raise ModelError(mode, f"precision must be one of {', '.join(PRECISION_MODES)}")
    return PRECISION_MODES[mode] if device.type == "cuda" else CPU_NUMERICS


def token_budget(engine: EngineConfig, device: torch.device, embed_dim: int, preferred: int) -> int:
    """Tokens per packed batch: `preferred` unless the GPU's memory is too small for it.

    Sized from the GPU's total memory, not its momentary free memory, so that every run on the same kind of GPU
    packs identically (a resumed run computes the same batches as an uninterrupted one).
    """
    if engine.token_budget > 0:
        return engine.token_budget
    if device.type != "cuda":
        return _CPU_BUDGET
    total = torch.cuda.get_device_properties(device).total_memory
    fits = int(total * 0.25) // (_ACTIVATION_BYTES_PER_TOKEN_PER_DIM * embed_dim)
    return max(2048, min(preferred, fits))


def load_models(paths: ModelPaths, engine: EngineConfig) -> LoadedModels:
    """`paths` are files (the run layer resolves model names in the store before it asks for a scorer)."""
    device = resolve_device(engine.device)
    numerics = resolve_numerics(engine.precision, device)
    numerics.apply_global_settings()
    esm = load_esm2(paths.esm, device, numerics.esm, attention=engine.attention)
    dnabert = load_dnabert(paths.dnabert, device, numerics.dnabert, attention=engine.attention)
    features = dnabert.hidden_size + esm.embed_dim
    classifier = load_classifier(paths.classifier, device, expected_input_dim=features)
    fuse = engine.fuse and device.type == "cuda" and not engine.compile
    esm.fuse_elementwise(fuse)
    dnabert.fuse_elementwise(fuse)
    if engine.compile:
        esm = torch.compile(esm, dynamic=True)
        dnabert = torch.compile(dnabert, dynamic=True)
    budgets = (token_budget(engine, device, esm.embed_dim, ESM_TOKEN_BUDGET),
               token_budget(engine, device, dnabert.hidden_size, DNABERT_TOKEN_BUDGET))
    identity = {
        "esm": {"path": str(paths.esm), "layers": esm.num_layers, "dim": esm.embed_dim},
        "dnabert": {"path": str(paths.dnabert), "layers": dnabert.num_layers, "dim": dnabert.hidden_size},
        "classifier": {"path": str(paths.classifier)},
        "precision": numerics.describe(),
        "attention": {"esm": esm.attention_backend, "dnabert": dnabert.attention_backend},
    }
    log.info("models on %s (%s): ESM-2 %d layers x %d, DNABERT-S %d x %d; token budgets %d (ESM) %d (DNABERT)",
             device, identity["precision"], esm.num_layers, esm.embed_dim, dnabert.num_layers,
             dnabert.hidden_size, *budgets)
    return LoadedModels(device, numerics, esm, dnabert, classifier, DnaTokenizer(paths.dnabert),
                        ProteinTokenizer(), identity, budgets)
