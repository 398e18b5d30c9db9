"""Random-weight models of the real shapes for the benchmark (speed needs the shapes, not the weights), and the
stand-in model files that give a benchmarked `predict` run its identity."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from virnucpro.bench.workloads import ESM_SHAPES
from virnucpro.config import EngineConfig, EnvConfig, ModelPaths
from virnucpro.engine.loading import DNABERT_TOKEN_BUDGET, LoadedModels
from virnucpro.models.esm2 import ESM2
from virnucpro.models.precision import DEFAULT_PRECISION, PRECISION_MODES, Numerics, Precision

DEFAULT_NUMERICS = PRECISION_MODES[DEFAULT_PRECISION]  # the bench measures what `predict` runs by default


def random_fairesm(shape, device):
    """fair-esm's own ESM2 with random weights, built directly on the GPU."""
    import esm

    layers, dim, heads = shape
    with torch.device(device):
        model = esm.model.esm2.ESM2(num_layers=layers, embed_dim=dim, attention_heads=heads,
                                    alphabet=esm.data.Alphabet.from_architecture("ESM-1b"), token_dropout=True)
    return model.eval(), model.alphabet


def ours_from_fairesm(fair, shape, device, budget_fuse: bool = True, precision: Precision = DEFAULT_NUMERICS.esm) -> ESM2:
    layers, dim, heads = shape
    with torch.device("meta"):
        model = ESM2(layers, dim, heads)
    state = {k: v for k, v in fair.state_dict().items() if not k.startswith(("lm_head", "contact_head"))}
    model.load_state_dict(state, strict=False, assign=True)
    model = model.to(device=device).set_precision(precision).eval()
    model.set_attention(device)
    model.fuse_elementwise(budget_fuse)
    return model


def random_hf_esm(shape, device):
    from transformers import EsmConfig, EsmModel

    layers, dim, heads = shape
    config = EsmConfig(vocab_size=33, hidden_size=dim, num_hidden_layers=layers, num_attention_heads=heads,
                       intermediate_size=4 * dim, position_embedding_type="rotary", token_dropout=True,
                       mask_token_id=32, pad_token_id=1, emb_layer_norm_before=False, max_position_embeddings=1026,
                       attn_implementation="sdpa")
    with torch.device(device):
        model = EsmModel(config, add_pooling_layer=False)
    return model.to(torch.bfloat16).eval()


def random_dnabert(device, precision, tokenizer_dir: str | None, fuse: bool = True):
    """Real-size DNABERT-S (12 x 768, 12 heads, 3072) with random weights, written in the real folder format;
    `precision` (a Precision or a dtype) as load_dnabert takes it."""
    from virnucpro.models.dnabert import load_dnabert
    from virnucpro.testing.dnabert_checkpoint import write_tiny_dnabert

    folder = Path(tempfile.mkdtemp()) / "dnabert-s-random"
    tokenizer_json = Path(tokenizer_dir) / "tokenizer.json" if tokenizer_dir else None
    write_tiny_dnabert(folder, layers=12, hidden=768, heads=12, intermediate=3072, seed=0,
                       tokenizer_json=tokenizer_json)
    model = load_dnabert(folder, device, precision)
    model.fuse_elementwise(fuse and device.type == "cuda")
    return model, folder


def warm_up(esm, dnabert, device) -> None:
    """One small forward each, so kernel selection and compilation stay out of the timed region."""
    with torch.inference_mode():
        for model, vocab in ((esm, 20), (dnabert, 100)):
            ids = torch.randint(4, 4 + vocab, (300,), device=device)
            cu = torch.tensor([0, 100, 300], dtype=torch.int32, device=device)
            model(ids, cu, 200)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_loaded_models(device: torch.device, tokenizer_dir: str | None, esm_budget: int,
                         numerics: Numerics = DEFAULT_NUMERICS) -> LoadedModels:
    """Real-size ESM-2 3B, DNABERT-S and classifier with random weights on `device`, warmed up."""
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


def stand_in_model_files(folder: Path) -> ModelPaths:
    """Three small files that stand in for the model files of a benchmarked run: the run directory records their
    checksums as its identity, while the scorer factory holds the random-weight models themselves."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for role in ("esm", "dnabert", "classifier"):
        path = folder / f"{role}.random-weights"
        path.write_text(f"{role}: random weights, built in memory by virnucpro bench\n")
        paths[role] = str(path)
    return ModelPaths(**paths)


def write_random_checkpoints(folder: Path, device, tokenizer_dir: str | None) -> ModelPaths:
    """Model files in the real formats with random weights of the real shapes, so a benchmarked `predict` loads
    them as it loads the real ones: the fair-esm ESM-2 3B .pt with fp16 weights (as the released file stores
    them), a DNABERT-S folder (the real tokenizer when given) and a published-style pickled classifier."""
    from virnucpro.testing.classifier_checkpoint import write_tiny_classifier
    from virnucpro.testing.dnabert_checkpoint import write_tiny_dnabert
    from virnucpro.testing.esm2_checkpoint import save_fair_esm_checkpoint

    folder.mkdir(parents=True, exist_ok=True)
    layers, dim, heads = ESM_SHAPES["3B"]
    fair, _ = random_fairesm(ESM_SHAPES["3B"], device)
    state = {k: (v if k.endswith("inv_freq") else v.half()).cpu() for k, v in fair.state_dict().items()}
    del fair
    esm = save_fair_esm_checkpoint(folder / "esm2_t36_3B_random.pt", state, layers, dim, heads)
    del state
    tokenizer_json = Path(tokenizer_dir) / "tokenizer.json" if tokenizer_dir else None
    dnabert = write_tiny_dnabert(folder / "dnabert-s-random", layers=12, hidden=768, heads=12, intermediate=3072,
                                 seed=0, tokenizer_json=tokenizer_json)
    classifier = write_tiny_classifier(folder / "300_model_random.pth", input_dim=768 + dim, hidden_dim=512, seed=0,
                                       form="pickle")
    return ModelPaths(esm=str(esm), dnabert=str(dnabert), classifier=str(classifier))
