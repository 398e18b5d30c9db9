"""Whole `predict` on one GPU (prep, workers, both models, classifier, checkpoints, aggregation, writing),
with random-weight real-size models held in memory, compared with the ESM-2-only rate on the same proteins."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from virnucpro.bench.timing import Measurement, UtilisationSampler, timed
from virnucpro.bench.workloads import ESM_SHAPES, esm_flops_per_token
from virnucpro.config import EngineConfig, EnvConfig
from virnucpro.engine.loading import DNABERT_TOKEN_BUDGET, ESM_TOKEN_BUDGET
from virnucpro.models.precision import DEFAULT_PRECISION, PRECISION_MODES, Numerics

SENSE_CODONS = [a + b + c for a in "ACGT" for b in "ACGT" for c in "ACGT" if a + b + c not in ("TAA", "TAG", "TGA")]


def stop_free_reads(path: Path, reads: int, length: int = 500, seed: int = 0) -> None:
    """Reads whose first frame has no stop (random DNA almost never gives a 166-codon open frame)."""
    rng = np.random.default_rng(seed)
    codons = np.array(SENSE_CODONS)
    with open(path, "w") as handle:
        for i in range(reads):
            body = "".join(codons[rng.integers(0, len(codons), size=length // 3)])
            tail = "".join(rng.choice(list("ACGT"), size=length - len(body)))
            handle.write(f">read_{i}\n{body}{tail}\n")


def random_loaded_models(device: torch.device, tokenizer_dir: str | None, esm_budget: int,
                         numerics: Numerics = PRECISION_MODES[DEFAULT_PRECISION]):
    """Real-size ESM-2 3B, DNABERT-S and classifier with random weights on `device`, warmed up."""
    from virnucpro.bench.suites import ours_from_fairesm, random_dnabert, random_fairesm
    from virnucpro.engine.loading import LoadedModels
    from virnucpro.models.classifier import MLPClassifier
    from virnucpro.tokenize.dna import DnaTokenizer
    from virnucpro.tokenize.protein import ProteinTokenizer

    fair, _ = random_fairesm(ESM_SHAPES["3B"], device)
    numerics.apply_global_settings()
    esm = ours_from_fairesm(fair, ESM_SHAPES["3B"], device, precision=numerics.esm)
    del fair
    torch.cuda.empty_cache()
    dnabert, folder = random_dnabert(device, numerics.dnabert, tokenizer_dir)
    classifier = MLPClassifier(dnabert.hidden_size + esm.embed_dim, 512).to(device).eval()
    warm_up(esm, dnabert, device)
    return LoadedModels(device, numerics, esm, dnabert, classifier, DnaTokenizer(folder), ProteinTokenizer(),
                        {"bench": "random weights"}, (esm_budget, DNABERT_TOKEN_BUDGET))


@dataclass(frozen=True)
class RandomModelsFactory:
    """Picklable scorer recipe: each GPU process of a multi-GPU run builds its own random-weight models."""

    tokenizer_dir: str | None
    esm_budget: int
    env: EnvConfig

    def __call__(self, engine: EngineConfig):
        from virnucpro.engine.scorer import Scorer

        return Scorer(random_loaded_models(torch.device(engine.device), self.tokenizer_dir, self.esm_budget),
                      engine, self.env)


def in_memory_scorer_factory(env, device, args):
    """Models built once here; every Scorer the run asks for shares them (one GPU, this process)."""
    from virnucpro.engine.scorer import Scorer

    models = random_loaded_models(device, args.dnabert_tokenizer, args.token_budget or ESM_TOKEN_BUDGET)
    return lambda engine: Scorer(models, engine, env)


def warm_up(esm, dnabert, device) -> None:
    """One small forward each, so kernel selection and compilation stay out of the timed region."""
    with torch.inference_mode():
        for model, vocab in ((esm, 20), (dnabert, 100)):
            ids = torch.randint(4, 4 + vocab, (300,), device=device)
            cu = torch.tensor([0, 100, 300], dtype=torch.int32, device=device)
            model(ids, cu, 200)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_pipeline(args, env, device) -> list[Measurement]:
    from virnucpro.config import PredictConfig
    from virnucpro.engine.source import FrameSource
    from virnucpro.run import predict_run
    from virnucpro.run.testing import fake_model_files

    work = Path(tempfile.mkdtemp(prefix="virnucpro-bench-"))
    reads = work / "reads.fasta"
    stop_free_reads(reads, args.pipeline_reads)
    factory = in_memory_scorer_factory(env, device, args)  # models built here, outside the timed region
    cfg = PredictConfig(input=reads, outdir=work / "run", chunk_length=500, models=fake_model_files(work),
                        engine=EngineConfig(device=device.type), gpus=1)
    with UtilisationSampler(device) as sampler:
        seconds = timed(lambda: predict_run(cfg, env, scorer_factory=factory), device)
    if args.json:  # keep the run's own timeline (per-stage, per-part) beside the results
        shutil.copyfile(work / "run" / "telemetry.jsonl", Path(args.json).with_suffix(".telemetry.jsonl"))
    lengths = FrameSource(work / "run" / "prep").aa_lengths
    tokens = int((lengths.astype(np.int64) + 2).sum())
    layers, dim, _ = ESM_SHAPES["3B"]
    m = Measurement("whole predict", "3B", "chunks500", len(lengths), tokens, seconds,
                    esm_flops_per_token(layers, dim, 168), sampler.busy)
    print(f"  3B    chunks500  whole predict  {m.tokens_per_s:12,.0f} ESM tokens/s, GPU busy {m.gpu_busy}", flush=True)
    return [m]
