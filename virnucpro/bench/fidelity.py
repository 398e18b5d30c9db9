"""Fidelity of the engine against the plain fp32 reference, frame by frame: embeddings and calls.

Real shapes (ESM-2 3B, DNABERT-S), random weights. The oracle is fair-esm's own fp32 forward of each protein
(proteins of one length batched together, so nothing is padded) and the eager fp32 DNABERT-S reference of each
nucleotide slice, one at a time, with TF32 off; the same classifier scores both in fp32.

A random classifier would call nearly every frame the same way and test nothing, so each classifier is
calibrated on the reference features the way a trained one is: BatchNorm statistics from the data, and the
output bias set so that half of the frames are called viral — the harshest case: with random weights the
embeddings of different frames are nearly alike, the calibrated BatchNorm magnifies their differences, and many
frames sit near the decision boundary. Several classifiers (seeds) are used and their agreements averaged.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from virnucpro.bench.workloads import stop_free_reads
from virnucpro.io.prep_files import FrameSource, build_index
from virnucpro.models.classifier import MLPClassifier, score
from virnucpro.models.precision import PRECISION_MODES, Numerics, custom_precision
from virnucpro.tokenize.protein import ProteinTokenizer

CLASSIFIER_SEEDS = (5, 6, 7, 8, 9)
# (reads, read length): 500 bp chunks (166-residue frames) and Illumina-length reads (~50 residues)
READ_SETS = ((800, 500), (800, 150))


def fidelity_frames(workdir: Path, read_sets=READ_SETS, seed: int = 11) -> FrameSource:
    """Prepared frames of stop-free random reads (a held-out set: its own seed)."""
    from virnucpro.prep.pipeline import run_prep

    workdir.mkdir(parents=True, exist_ok=True)
    reads = workdir / "reads.fasta"
    parts = []
    for number, (count, length) in enumerate(read_sets):
        part = workdir / f"reads-{length}.fasta"
        stop_free_reads(part, count, length=length, seed=seed + number)
        parts.append(part.read_text().replace(">read_", f">r{length}_"))
    reads.write_text("".join(parts))
    run_prep(reads, workdir / "prep", 500)  # 500 bp reads: 166-residue frames; 150 bp reads: one short chunk
    build_index(workdir / "prep")
    return FrameSource(workdir / "prep")


def _esm_reference(fair, proteins: list[str], device) -> torch.Tensor:
    tokenizer = ProteinTokenizer()
    layers = fair.num_layers
    out = torch.zeros(len(proteins), fair.embed_dim, dtype=torch.float32, device=device)
    by_length: dict[int, list[int]] = {}
    for index, protein in enumerate(proteins):
        by_length.setdefault(len(protein), []).append(index)
    with torch.inference_mode():
        for length, members in by_length.items():
            for start in range(0, len(members), 64):
                rows = members[start:start + 64]
                tokens = torch.from_numpy(np.stack([tokenizer.encode(proteins[i]) for i in rows])).to(device)
                hidden = fair(tokens, repr_layers=[layers])["representations"][layers]
                out[rows] = hidden[:, 1:min(length, 1024) + 1].mean(1).float()
    return out


def reference_features(fair, dnabert_folder, frames, device) -> torch.Tensor:
    """[n, 768 + 2560] fp32: eager DNABERT-S mean, then fair-esm mean over residues (the classifier's order)."""
    from virnucpro.reference.dnabert_ref import reference_dnabert_embeddings

    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        esm = _esm_reference(fair.float(), [f.protein for f in frames], device)
        dna = reference_dnabert_embeddings(dnabert_folder, [f.nucleotide for f in frames], device=str(device))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return torch.cat([torch.from_numpy(dna).to(device), esm], dim=1)


def calibrated_classifier(features: torch.Tensor, seed: int) -> MLPClassifier:
    """A published-shape MLP whose BatchNorm is fitted to `features` and whose bias calls half of them viral."""
    generator = torch.Generator().manual_seed(seed)
    classifier = MLPClassifier(features.shape[1], 512)
    with torch.no_grad():
        for layer in (classifier.hidden_layer, classifier.output_layer):
            bound = layer.in_features ** -0.5
            layer.weight.copy_(torch.empty_like(layer.weight).uniform_(-bound, bound, generator=generator))
            layer.bias.copy_(torch.empty_like(layer.bias).uniform_(-bound, bound, generator=generator))
    classifier = classifier.to(features.device).eval()
    with torch.inference_mode():
        hidden = classifier.hidden_layer(features)
        classifier.bn1.running_mean.copy_(hidden.mean(0))
        classifier.bn1.running_var.copy_(hidden.var(0))
        logits = classifier(features)
        classifier.output_layer.bias[1] -= (logits[:, 1] - logits[:, 0]).median()
    return classifier


def engine_features(models, source: FrameSource, env, stop: int | None = None) -> torch.Tensor:
    """[n, 768 + 2560] fp32 features of frames [0, stop) exactly as the engine hands them to the classifier."""
    return engine_pass(models, source, env, stop)[0]


def engine_pass(models, source: FrameSource, env, stop: int | None = None):
    """(engine_features, the engine's EngineStats) of one pass."""
    from virnucpro.config import EngineConfig
    from virnucpro.engine.scorer import Scorer

    scorer = Scorer(models, EngineConfig(device=str(models.device)), env)
    blocks = list(scorer.score_range(source, 0, len(source) if stop is None else stop, keep_embeddings=True))
    rows = np.concatenate([np.concatenate([b.dna, b.protein], 1) for b in blocks])
    return torch.from_numpy(rows).to(models.device), scorer.stats


def features_per_classifier(models, source: FrameSource, env, classifiers, first: torch.Tensor | None = None):
    """The engine's features as each classifier gets them: with a recheck margin the frames computed again in fp32
    depend on the classifier (its margins), so the engine runs once per classifier; otherwise once for all.
    `first`: features already computed with classifiers[0]."""
    first = engine_features(models, source, env) if first is None else first
    if not models.numerics.recheck_margin:
        return [first] * len(classifiers)
    return [first] + [engine_features(with_classifier(models, c), source, env) for c in classifiers[1:]]


def with_classifier(models, classifier):
    reference = None if models.reference is None else replace(models.reference, classifier=classifier)
    return replace(models, classifier=classifier, reference=reference)


# A reference margin (virus - others logit) smaller than this is a tie: the fp32 engine's margins differ from
# fair-esm's by up to 7.8e-6 on the fidelity set (H200), rounding that depends on how rows are batched, so no engine
# calls such a frame the same way every time. A calibrated classifier makes at least one such
# frame by construction: its median frame's margin becomes 0.
TIE_MARGIN = 5e-5


@dataclass
class Agreement:
    frames: int
    agreement: float  # mean over classifiers of the fraction of frames called as the reference calls them
    agreement_min: float
    flips: int  # summed over classifiers
    tied_flips: int  # of those, flips of frames whose reference margin is a tie (below TIE_MARGIN)
    agreement_beyond_ties: float  # the agreement when a tie counts as agreeing either way
    cosine_min: dict
    margin_abs_median: float
    margin_error_max: float
    flipped_reference_margins: list

    def as_dict(self) -> dict:
        return dict(vars(self))


def compare(reference: torch.Tensor, features: torch.Tensor | list, classifiers, dna_dim: int = 768) -> Agreement:
    """Calls of each classifier on `features` (one tensor, or one per classifier) against the reference's."""
    per_classifier = features if isinstance(features, list) else [features] * len(classifiers)
    agreements, flips, tied, flipped, medians, errors = [], 0, 0, [], [], []
    with torch.inference_mode():
        for classifier, features in zip(classifiers, per_classifier):
            expected = score(classifier, reference).argmax(1)
            got = score(classifier, features).argmax(1)
            ref_margin, got_margin = (_margin(classifier, x) for x in (reference, features))
            agreements.append(float((got == expected).float().mean()))
            changed = torch.nonzero(got != expected).flatten()
            flips += int(changed.numel())
            tied += int((ref_margin[changed].abs() < TIE_MARGIN).sum())
            flipped += [round(float(ref_margin[i]), 5) for i in changed]
            medians.append(float(ref_margin.abs().median()))
            errors.append(float((got_margin - ref_margin).abs().max()))
    features = per_classifier[0]
    cosine = lambda cols: float(torch.nn.functional.cosine_similarity(features[:, cols], reference[:, cols]).min())  # noqa: E731
    beyond_ties = 1 - (flips - tied) / (len(reference) * len(agreements))
    return Agreement(len(reference), float(np.mean(agreements)), float(min(agreements)), flips, tied, beyond_ties,
                     {"dnabert": cosine(slice(0, dna_dim)), "esm": cosine(slice(dna_dim, None))},
                     float(np.median(medians)), max(errors), flipped)


def _margin(classifier, features) -> torch.Tensor:
    logits = classifier(features.float())
    return (logits[:, 1] - logits[:, 0]).float()


def scratch_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="virnucpro-fidelity-"))


# ------------------------------------------------------------------------------------------ precision sweep


def _v(name, esm_gemm, esm_residual, dna_gemm, tf32=False) -> Numerics:
    return Numerics(name, custom_precision(esm_gemm, esm_residual, tf32=tf32), custom_precision(dna_gemm, tf32=tf32))


CANDIDATES = {v.mode: v for v in (
    _v("bf16-residual-bf16", "bf16", "bf16", "bf16"),  # the first round's numerics (ESM-2 residual in bf16)
    _v("bf16", "bf16", "fp32", "bf16"),  # + fp32 residual stream and LayerNorms in ESM-2
    _v("esm-fp16", "fp16", "fp32", "bf16"),
    _v("fp16", "fp16", "fp32", "fp16"),
    _v("dna-fp16", "bf16", "fp32", "fp16"),
    _v("esm-fp16-dna-fp32", "fp16", "fp32", "fp32"),
    _v("tf32", "fp32", "fp32", "fp32", tf32=True),
    _v("fp32", "fp32", "fp32", "fp32"),
)} | {f"mode:{name}": numerics for name, numerics in PRECISION_MODES.items()}


def build_models(variant: Numerics, fair, dnabert_folder, classifier, device, fuse: bool = True):
    """LoadedModels of one variant: our ESM-2 from fair-esm's weights, DNABERT-S from its folder."""
    from virnucpro.bench.models import ours_from_fairesm
    from virnucpro.bench.workloads import ESM_SHAPES
    from virnucpro.engine.loading import DNABERT_TOKEN_BUDGET, ESM_TOKEN_BUDGET, LoadedModels
    from virnucpro.models.dnabert import load_dnabert
    from virnucpro.tokenize.dna import DnaTokenizer

    variant.apply_global_settings()
    esm = ours_from_fairesm(fair, ESM_SHAPES["3B"], device, budget_fuse=fuse, precision=variant.esm)
    dnabert = load_dnabert(dnabert_folder, device, variant.dnabert)
    dnabert.fuse_elementwise(fuse)
    models = LoadedModels(device, variant, esm, dnabert, classifier, DnaTokenizer(dnabert_folder),
                          ProteinTokenizer(), {"bench": variant.mode}, (ESM_TOKEN_BUDGET, DNABERT_TOKEN_BUDGET))
    if variant.recheck_margin:  # as load_models: fp32 encoders from the same fp32 weights
        fp32 = PRECISION_MODES["fp32"]
        models.reference = replace(models, numerics=fp32, dnabert=load_dnabert(dnabert_folder, device, fp32.dnabert),
                                   esm=ours_from_fairesm(fair, ESM_SHAPES["3B"], device, False, fp32.esm))
    return models
