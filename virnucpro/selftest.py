"""`virnucpro selftest`: this installation on this device, offline, in well under a minute.

Writes tiny random-weight models in the real formats (a fair-esm ESM-2 `.pt`, a DNABERT-S Hugging Face folder,
the published pickled classifier), loads them with the loaders `predict` uses and scores a few frames with its
engine (packed batches, token budgets, the device's attention backends and dtypes). Compares with the fp32
references, one sequence at a time: fair-esm's own ESM-2 forward and the eager DNABERT-S (virnucpro/reference).
Proteins of 1, 2, 166 and 1100 residues (pooling stops at 1024), DNA past 512 tokens. Passes when every
embedding has cosine >= 0.999 with its reference, the loaded classifier scores as the module that was pickled,
and the calls agree (a call may flip only for a frame at the decision boundary). On CUDA two precision modes
run: `predict`'s default and fp32 (the exact mode).

Random weights: this checks the software stack and the device, not the published models (`models verify`).
"""

from __future__ import annotations

import importlib.metadata
import logging
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

MIN_COSINE = 0.999
NEAR_BOUNDARY = 0.1  # a call may flip only where |reference margin| < this fraction of the median |margin|
PROTEIN_LENGTHS = (1, 2, 166, 1100)  # required: one residue, two, a 500 bp frame, past the 1024 pooled
RANDOM_FRAMES = 12  # frames of random lengths besides, so both calls occur
MIN_DNA_TOKENS = 513
ESM_SHAPE = {"layers": 2, "dim": 64, "heads": 4}
DNABERT_SHAPE = {"layers": 2, "hidden": 48, "heads": 6, "intermediate": 96}  # 6 heads: ALiBi slopes of a
# head count that is not a power of two, as DNABERT-S's 12
CLASSIFIER_HIDDEN = 32
VERSIONED = ("numpy", "fair-esm", "tokenizers", "safetensors", "h5py", "flash-attn")


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class Fixture:
    """The tiny models and frames on disk, with the fp32 reference features of every frame."""

    models: "ModelPaths"
    prep_dir: Path
    ids: list[str]
    reference: np.ndarray  # [frames, DNABERT-S dim + ESM-2 dim] float32, DNABERT-S first as the classifier
    dna_dim: int
    classifier: torch.nn.Module  # the module that was pickled, fp32 on the CPU
    dna_tokens_max: int


# ------------------------------------------------------------------------------------------ the run


def run_selftest(device: str, env, dnabert_tokenizer: str | Path | None = None, stream=None) -> bool:
    """Print the report to `stream` (stdout); True when every check passed."""
    from virnucpro.engine.loading import resolve_device

    stream = stream or sys.stdout
    say = lambda text: print(text, file=stream, flush=True)  # noqa: E731
    started = time.perf_counter()
    say("virnucpro selftest (tiny random-weight models: checks the software and the device)")
    say("versions: " + versions())
    resolved = resolve_device(device)
    say(f"device: {describe_device(resolved)}")
    with tempfile.TemporaryDirectory(prefix="virnucpro-selftest-") as tmp:
        try:
            fixture = make_fixture(Path(tmp), dnabert_tokenizer)
        except Exception as error:  # a broken install shows here: report it as the failed step
            log.debug("selftest setup failed", exc_info=True)
            checks = [Check("setup (tiny models, fp32 references)", False, one_line(error))]
        else:
            checks = [inputs_check(fixture)]
            for precision in precision_modes(resolved):
                checks += engine_checks(fixture, resolved, precision, env, say)
    for check in checks:
        say(f"{'PASS' if check.passed else 'FAIL'}  {check.name}: {check.detail}")
    failed = [check.name for check in checks if not check.passed]
    seconds = time.perf_counter() - started
    if failed:
        say(f"selftest FAILED ({seconds:.0f} s): " + "; ".join(failed))
    else:
        say(f"selftest passed: {len(checks)} checks in {seconds:.0f} s")
    return not failed


def precision_modes(device: torch.device) -> tuple[str, ...]:
    """`predict`'s default and the exact fp32 on CUDA; the CPU computes every mode in fp32."""
    from virnucpro.models.precision import DEFAULT_PRECISION

    return tuple(dict.fromkeys((DEFAULT_PRECISION, "fp32"))) if device.type == "cuda" else ("fp32",)


def engine_checks(fixture: Fixture, device: torch.device, precision: str, env, say) -> list[Check]:
    """Load the three files as `predict` does and score every frame; compare with the references."""
    from virnucpro.config import EngineConfig
    from virnucpro.engine.scorer import Scorer
    from virnucpro.io.prep_files import FrameSource

    try:
        scorer = Scorer.load(fixture.models, EngineConfig(device=str(device), precision=precision), env)
        say(f"[{precision}] {describe_models(scorer.models)}")
        source = FrameSource(fixture.prep_dir)
        blocks = list(scorer.score_range(source, 0, len(source), keep_embeddings=True))
    except Exception as error:  # e.g. a kernel that refuses this dtype: the result to report, not a traceback
        log.debug("selftest engine run failed", exc_info=True)
        return [Check(f"{precision} load and score", False, one_line(error))]
    scores = np.concatenate([block.scores for block in blocks])
    dna = np.concatenate([block.dna for block in blocks])
    protein = np.concatenate([block.protein for block in blocks])
    reference = fixture.reference
    return [
        cosine_check(f"{precision} ESM-2 embeddings", protein, reference[:, fixture.dna_dim:],
                     f"proteins of {min(PROTEIN_LENGTHS)}..{max(PROTEIN_LENGTHS)} residues"),
        cosine_check(f"{precision} DNABERT-S embeddings", dna, reference[:, :fixture.dna_dim],
                     f"DNA up to {fixture.dna_tokens_max} tokens"),
        classifier_loader_check(precision, scorer.models.classifier, fixture),
        calls_check(f"{precision} classifier calls", scores, fixture),
    ]


# ------------------------------------------------------------------------------------------ checks


def cosine_check(name: str, got: np.ndarray, expected: np.ndarray, what: str) -> Check:
    got64, expected64 = got.astype(np.float64), expected.astype(np.float64)
    norms = np.linalg.norm(got64, axis=1) * np.linalg.norm(expected64, axis=1)
    cosine = (got64 * expected64).sum(axis=1) / np.maximum(norms, 1e-30)
    worst = int(np.argmin(cosine))
    detail = f"min cosine {cosine[worst]:.6f} (frame {worst}) over {len(cosine)} frames, {what}"
    return Check(name, bool(np.isfinite(cosine).all() and cosine.min() >= MIN_COSINE), detail)


def classifier_loader_check(precision: str, loaded: torch.nn.Module, fixture: Fixture) -> Check:
    """The classifier read from the pickle scores the reference features as the module that was saved."""
    from virnucpro.models.classifier import score

    features = torch.from_numpy(fixture.reference)
    got = score(loaded, features.to(next(loaded.parameters()).device)).cpu()
    with torch.inference_mode():
        expected = torch.softmax(fixture.classifier(features), dim=1)
    error = float((got - expected).abs().max())
    return Check(f"{precision} classifier loader", error <= 1e-5, f"max |score difference| {error:.2e} (≤ 1e-5)")


def calls_check(name: str, scores: np.ndarray, fixture: Fixture) -> Check:
    margins = reference_margins(fixture)
    expected = margins > 0  # virus
    got = scores[:, 1] > scores[:, 0]
    near = np.abs(margins) < NEAR_BOUNDARY * np.median(np.abs(margins))
    flipped = np.flatnonzero(got != expected)
    wrong = [fixture.ids[i] for i in flipped if not near[i]]
    detail = (f"{len(expected) - len(flipped)}/{len(expected)} calls as the fp32 reference "
              f"({int(expected.sum())} virus)")
    if wrong:
        detail += f"; flipped away from the decision boundary: {', '.join(wrong)}"
    return Check(name, not wrong, detail)


def inputs_check(fixture: Fixture) -> Check:
    """The test itself: DNA past 512 tokens, and both calls among the reference calls."""
    virus = int((reference_margins(fixture) > 0).sum())
    passed = fixture.dna_tokens_max >= MIN_DNA_TOKENS and 0 < virus < len(fixture.ids)
    return Check("inputs", passed, f"{len(fixture.ids)} frames, longest DNA {fixture.dna_tokens_max} tokens "
                                   f"(need ≥ {MIN_DNA_TOKENS}), {virus} called virus by the reference")


def reference_margins(fixture: Fixture) -> np.ndarray:
    with torch.inference_mode():
        logits = fixture.classifier(torch.from_numpy(fixture.reference))
    return (logits[:, 1] - logits[:, 0]).numpy()


# ------------------------------------------------------------------------------------------ fixture


def make_fixture(folder: Path, dnabert_tokenizer: str | Path | None) -> Fixture:
    """Tiny models and frames in `folder`; fp32 references; a classifier calibrated on them, pickled."""
    from virnucpro.config import ModelPaths
    from virnucpro.reference.dnabert_ref import reference_dnabert_embeddings
    from virnucpro.reference.esm2_ref import reference_esm2_embeddings
    from virnucpro.testing.dnabert_checkpoint import write_tiny_dnabert
    from virnucpro.testing.esm2_checkpoint import write_tiny_esm2

    ids, nucleotides, proteins = random_frames(seed=0)
    esm = write_tiny_esm2(folder / "esm2_t2_selftest.pt", seed=0, **ESM_SHAPE)
    dnabert = write_tiny_dnabert(folder / "dnabert-s-selftest", seed=0, tokenizer_json=dnabert_tokenizer,
                                 weights_format="safetensors", **DNABERT_SHAPE)
    token_ids = reference_token_ids(dnabert, nucleotides)
    dna = reference_dnabert_embeddings(dnabert, nucleotides, token_ids=token_ids)
    reference = np.concatenate([dna, reference_esm2_embeddings(esm, proteins)], axis=1)
    classifier = calibrated_classifier(reference)
    classifier_path = save_classifier(classifier, folder / "500_model_selftest.pth")
    prep_dir = write_frames(folder / "prep", ids, nucleotides, proteins)
    return Fixture(ModelPaths(esm=str(esm), dnabert=str(dnabert), classifier=str(classifier_path)), prep_dir, ids,
                   reference, dna.shape[1], classifier, max(len(ids_) for ids_ in token_ids))


def random_frames(seed: int) -> tuple[list[str], list[str], list[str]]:
    """(ids, nucleotides, proteins): the required protein lengths and random ones; DNA of 3 bp per residue."""
    rng = np.random.default_rng(seed)
    lengths = list(PROTEIN_LENGTHS) + rng.integers(20, 300, size=RANDOM_FRAMES).tolist()
    amino = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
    bases = np.array(list("ACGTN"))
    proteins = ["".join(rng.choice(amino, size=n)) for n in lengths]
    nucleotides = ["".join(rng.choice(bases, size=3 * n, p=[0.2475] * 4 + [0.01])) for n in lengths]
    ids = [f"selftest_{i}_chunk_1F1" for i in range(len(lengths))]
    return ids, nucleotides, proteins


def reference_token_ids(folder: Path, seqs: list[str]) -> list[list[int]]:
    """The folder's tokenizer.json applied by the `tokenizers` library itself ([CLS] ... [SEP])."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    return [tokenizer.encode(seq).ids for seq in seqs]


def calibrated_classifier(features: np.ndarray) -> torch.nn.Module:
    """The published classifier class with random weights, calibrated the way training would: BatchNorm
    statistics from the data, and the output bias putting the median frame on the decision boundary so
    both calls occur (a random classifier would call every frame alike and test nothing)."""
    from virnucpro.testing.classifier_checkpoint import random_published_classifier

    model = random_published_classifier(features.shape[1], CLASSIFIER_HIDDEN, seed=0)
    x = torch.from_numpy(features)
    with torch.no_grad():
        hidden = model.hidden_layer(x)
        model.bn1.running_mean.copy_(hidden.mean(0))
        model.bn1.running_var.copy_(hidden.var(0))
        logits = model(x)
        model.output_layer.bias[1] -= float(np.median((logits[:, 1] - logits[:, 0]).numpy()))
    return model.eval()


def save_classifier(model: torch.nn.Module, path: Path) -> Path:
    from virnucpro.testing.classifier_checkpoint import save_published_pickle

    return save_published_pickle(model, path)


def write_frames(prep_dir: Path, ids: list[str], nucleotides: list[str], proteins: list[str]) -> Path:
    """The two identified-frame files `predict` scores (`>id` and one sequence line each), and their index."""
    from virnucpro.io.atomic import write_text_atomic
    from virnucpro.io.prep_files import IDENTIFIED_NUCLEOTIDE, IDENTIFIED_PROTEIN, build_index

    for name, seqs in ((IDENTIFIED_NUCLEOTIDE, nucleotides), (IDENTIFIED_PROTEIN, proteins)):
        write_text_atomic(prep_dir / name, "".join(f">{i}\n{seq}\n" for i, seq in zip(ids, seqs)))
    build_index(prep_dir)
    return prep_dir


# ------------------------------------------------------------------------------------------ report


def versions() -> str:
    from virnucpro import __version__

    cuda = torch.version.cuda or "none (CPU build of torch)"
    packages = ", ".join(f"{name} {installed_version(name)}" for name in VERSIONED)
    return (f"virnucpro {__version__}, python {platform.python_version()}, torch {torch.__version__}, "
            f"CUDA {cuda}; {packages}")


def installed_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def describe_device(device: torch.device) -> str:
    if device.type != "cuda":
        return f"{device} ({torch.get_num_threads()} threads)"
    props = torch.cuda.get_device_properties(device)
    return (f"{device}: {props.name}, sm_{props.major}{props.minor}, {props.total_memory / 2**30:.0f} GiB, "
            f"{torch.cuda.device_count()} visible")


def describe_models(models) -> str:
    return (f"ESM-2 {dtypes(models.esm)}, attention {backend(models.esm)}; "
            f"DNABERT-S {dtypes(models.dnabert)}, attention {backend(models.dnabert)}; "
            f"classifier {dtypes(models.classifier)}; token budgets {models.token_budgets[0]} (ESM-2), "
            f"{models.token_budgets[1]} (DNABERT-S)")


def dtypes(model: torch.nn.Module) -> str:
    return "+".join(sorted({str(p.dtype).replace("torch.", "") for p in model.parameters()}))


def backend(model: torch.nn.Module) -> str:
    # ESM-2 names its backend; DNABERT-S keeps the function select_backend returned, which carries its name.
    return getattr(model, "attention_backend", None) or getattr(getattr(model, "_attention", None),
                                                                 "backend_name", "unknown")


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"
