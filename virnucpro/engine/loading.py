"""Load the three models once onto one device, check they fit together, and size the packing budget.

Two steps, so a scoring process can start its CPU side between them (engine.scorer): `read_models` reads and
checks the checkpoints (memory-mapped: no weight is copied yet) and fixes everything the CPU side and the run's
records need — device, numerics, tokenizers, token budgets, identity; `place_models` copies the weights to the
device and casts them there. `load_models` does both.
"""

from __future__ import annotations

import copy
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import torch

from virnucpro.config import EngineConfig, ModelPaths
from virnucpro.engine.determinism import deterministic_kernels, make_deterministic, use_compile_cache
from virnucpro.errors import ModelError
from virnucpro.models.classifier import load_classifier
from virnucpro.models.attention import HALF_ONLY
from virnucpro.models.dnabert import DnaBert, place_dnabert, read_dnabert
from virnucpro.models.esm2 import ESM2, place_esm2, read_esm2
from virnucpro.models.precision import CPU_NUMERICS, FP32, PRECISION_MODES, Numerics
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
_COPY_THREADS = 8


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
    reference: "LoadedModels | None" = None  # fp32 models from the files' own weights, for a recheck margin


@dataclass
class HostModels:
    """The models read and checked, weights still in their (memory-mapped) files; what `place_models` takes."""

    engine: EngineConfig
    device: torch.device
    numerics: Numerics
    esm: ESM2
    dnabert: DnaBert
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
    return place_models(read_models(paths, engine))


def read_models(paths: ModelPaths, engine: EngineConfig) -> HostModels:
    """Checkpoints read and checked, device and numerics set up, tokenizers, token budgets and identity fixed."""
    device = resolve_device(engine.device)
    if device.type == "cuda":
        use_compile_cache(engine.compile_cache)
    numerics = resolve_numerics(engine.precision, device)
    numerics.apply_global_settings()
    esm = read_esm2(paths.esm)
    dnabert = read_dnabert(paths.dnabert)
    classifier = load_classifier(paths.classifier, "cpu", expected_input_dim=dnabert.hidden_size + esm.embed_dim)
    budgets = (token_budget(engine, device, esm.embed_dim, ESM_TOKEN_BUDGET),
               token_budget(engine, device, dnabert.hidden_size, DNABERT_TOKEN_BUDGET))
    attention = {"esm": ESM2.choose_attention(device, engine.attention, numerics.esm).backend_name,
                 "dnabert": DnaBert.choose_attention(device, engine.attention, numerics.dnabert).backend_name}
    identity = {
        "esm": {"path": str(paths.esm), "layers": esm.num_layers, "dim": esm.embed_dim},
        "dnabert": {"path": str(paths.dnabert), "layers": dnabert.num_layers, "dim": dnabert.hidden_size},
        "classifier": {"path": str(paths.classifier)},
        "precision": numerics.describe(),
        "numerics": engine_numerics(numerics, device, attention, budgets),
    }
    return HostModels(engine, device, numerics, esm, dnabert, classifier, DnaTokenizer(paths.dnabert),
                      ProteinTokenizer(), identity, budgets)


def place_models(host: HostModels) -> LoadedModels:
    """The weights copied to the device and cast there; the elementwise regions compiled lazily (first block)."""
    engine, device, numerics = host.engine, host.device, host.numerics
    compiles = device.type == "cuda" and (engine.fuse or engine.compile)
    importing = _import_compiler_in_background() if compiles else None
    copy_to_device((host.esm, host.dnabert, host.classifier), device)  # GIL released: the import overlaps it
    if importing is not None:
        importing.join()
    make_deterministic(device)  # before the first kernel (the casts below); imports Inductor's config
    esm, dnabert, reference = _place_encoders(host)
    classifier = host.classifier.eval()
    chosen = {"esm": esm.attention_backend, "dnabert": dnabert.attention_backend}
    if chosen != host.identity["numerics"]["attention"]:
        raise RuntimeError(f"attention backends {chosen} differ from those read_models recorded")
    fuse = engine.fuse and device.type == "cuda" and not engine.compile
    esm.fuse_elementwise(fuse)
    dnabert.fuse_elementwise(fuse)
    if engine.compile:
        esm = torch.compile(esm, dynamic=True)
        dnabert = torch.compile(dnabert, dynamic=True)
    log.info("models on %s (%s): ESM-2 %d layers x %d (elementwise work: %s; attention: %s), DNABERT-S %d x %d; "
             "token budgets %d (ESM) %d (DNABERT)", device, host.identity["precision"], esm.num_layers, esm.embed_dim,
             "whole model compiled" if engine.compile else esm.elementwise, esm.attention_backend,
             dnabert.num_layers, dnabert.hidden_size,
             *host.token_budgets)
    loaded = LoadedModels(device, numerics, esm, dnabert, classifier, host.dna_tokenizer, host.protein_tokenizer,
                          host.identity, host.token_budgets)
    if reference is not None:
        loaded.reference = replace(loaded, numerics=replace(PRECISION_MODES["fp32"], mode=f"{numerics.mode} recheck"),
                                   esm=reference[0], dnabert=reference[1])
    return loaded


def _place_encoders(host: HostModels):
    """(esm, dnabert, fp32 reference encoders or None) on the device: with a recheck margin both are placed in
    fp32 (the files' own weights, not a cast back from half precision) and the fast encoders are copies of them."""
    engine, device, numerics = host.engine, host.device, host.numerics
    if numerics.recheck_margin <= 0:
        return (place_esm2(host.esm, device, numerics.esm, attention=engine.attention),
                place_dnabert(host.dnabert, device, numerics.dnabert, attention=engine.attention), None)
    exact = "auto" if engine.attention in HALF_ONLY else engine.attention  # FlashAttention kernels take no fp32
    esm = place_esm2(host.esm, device, FP32, attention=exact)
    dnabert = place_dnabert(host.dnabert, device, FP32, attention=exact)
    fast = (_copy_in(esm, numerics.esm, device, engine.attention),
            _copy_in(dnabert, numerics.dnabert, device, engine.attention))
    return *fast, (esm, dnabert)


def copy_to_device(modules, device: torch.device, threads: int = _COPY_THREADS) -> None:
    """Every parameter and buffer of `modules` copied to `device` by a pool of threads, in place of
    `module.to(device)`: the weights are memory-mapped checkpoint pages, and one thread copying them page-faults
    them in and stages them through the driver's pinned buffer one tensor at a time; several copies in flight
    overlap the faults, the staging and the DMA (the 5.7 GB 3B file: 1.3 s with 8 threads on an H200 host in run 8;
    one thread took 4.7 s in run 6's first process, docs/benchmarks.md)."""
    tensors = {id(t): t for module in modules for t in (*module.parameters(), *module.buffers())}
    if threads <= 1 or device.type == "cpu":
        copies = {key: t.to(device) for key, t in tensors.items()}
    else:
        with ThreadPoolExecutor(threads, thread_name_prefix="copy-weights") as pool:
            copies = dict(zip(tensors, pool.map(lambda t: t.to(device), tensors.values())))
    for module in modules:
        module._apply(lambda t: copies[id(t)] if id(t) in copies else t.to(device))


def _import_compiler_in_background() -> threading.Thread:
    """torch.compile's first use imports torch._dynamo and Inductor (~2 s of Python) and hashes Triton's sources
    for its cache keys (~0.5 s); started here it runs while the main thread waits on the weight copy instead of
    before it (deterministic mode's setup) and in the first forward."""
    def import_compiler() -> None:
        import torch._dynamo  # noqa: F401
        import torch._inductor.compile_fx  # noqa: F401
        from torch._inductor.codecache import CacheBase

        CacheBase.get_system()  # functools.cache'd: the first compiled call reuses it

    thread = threading.Thread(target=import_compiler, name="import-torch-compile", daemon=True)
    thread.start()
    return thread


def fp32_fallback(models: LoadedModels) -> LoadedModels | None:
    """fp32 copies of both encoders for the engine's non-finite guard; None when they already compute in fp32.

    Copies, not casts in place: the half-precision models keep serving every other block, and the copies cost
    memory only in a run that needed them."""
    if models.numerics.esm == FP32 and models.numerics.dnabert == FP32:
        return None
    copies = [_copy_in(model, FP32, models.device) for model in (models.esm, models.dnabert)]
    log.warning("built fp32 copies of ESM-2 and DNABERT-S for the non-finite guard")
    return replace(models, numerics=PRECISION_MODES["fp32"], esm=copies[0], dnabert=copies[1])


def _copy_in(model: torch.nn.Module, precision, device: torch.device, attention: str = "auto") -> torch.nn.Module:
    """A copy of an encoder computing in `precision` (unfused; the original is left as it was)."""
    duplicate = copy.deepcopy(model)
    duplicate.fuse_elementwise(False)
    duplicate.set_precision(precision)
    duplicate.set_attention(device, attention)
    return duplicate


def engine_numerics(numerics: Numerics, device: torch.device, attention: dict, budgets: tuple[int, int]) -> dict:
    """Everything that decides the last bits of a result: a resumed shard compares it with what scored its parts."""
    return {"precision": numerics.describe(), "attention": dict(attention),
            "token_budgets": list(budgets), "torch": torch.__version__, "cuda": torch.version.cuda,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "deterministic": deterministic_kernels(device)}
