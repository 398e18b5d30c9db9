"""Benchmark suites: ESM-2 (ours vs the three peers), DNABERT-S, and the whole predict path."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from virnucpro.bench import peers
from virnucpro.bench.timing import Measurement, UtilisationSampler, timed
from virnucpro.bench.workloads import WORKLOADS, esm_flops_per_token, random_dna_fasta
from virnucpro.engine.loading import DNABERT_TOKEN_BUDGET, ESM_TOKEN_BUDGET
from virnucpro.models.esm2 import ESM2, mean_pool_residues
from virnucpro.models.precision import DEFAULT_PRECISION, PRECISION_MODES, as_precision
from virnucpro.tokenize.protein import ProteinTokenizer

log = logging.getLogger(__name__)


def random_fairesm(shape, device):
    """fair-esm's own ESM2 with random weights, built directly on the GPU."""
    import esm

    layers, dim, heads = shape
    with torch.device(device):
        model = esm.model.esm2.ESM2(num_layers=layers, embed_dim=dim, attention_heads=heads,
                                    alphabet=esm.data.Alphabet.from_architecture("ESM-1b"), token_dropout=True)
    return model.eval(), model.alphabet


def ours_from_fairesm(fair, shape, device, budget_fuse: bool = True,
                      precision=PRECISION_MODES[DEFAULT_PRECISION].esm) -> ESM2:
    layers, dim, heads = shape
    with torch.device("meta"):
        model = ESM2(layers, dim, heads)
    state = {k: v for k, v in fair.state_dict().items() if not k.startswith(("lm_head", "contact_head"))}
    model.load_state_dict(state, strict=False, assign=True)
    model = model.to(device=device).set_precision(as_precision(precision)).eval()
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


def _measure(name, model_name, workload, proteins, fn, device, flops) -> Measurement:
    fn(proteins[: max(8, len(proteins) // 16)])  # warm-up: kernels, allocator, compilation
    tokens = sum(len(p) + 2 for p in proteins)
    with UtilisationSampler(device) as sampler:
        seconds = timed(lambda: fn(proteins), device)
    m = Measurement(name, model_name, workload, len(proteins), tokens, seconds, flops, sampler.busy)
    log.info("%s %s %s: %.0f tokens/s", model_name, workload, name, m.tokens_per_s)
    print(f"  {model_name:5s} {workload:10s} {name:14s} {m.tokens_per_s:12,.0f} tokens/s", flush=True)
    return m


def esm_suite(shape, model_name, workloads, wanted, args, device) -> list[Measurement]:
    fair, alphabet = random_fairesm(shape, device)
    ours = ours_from_fairesm(fair, shape, device)
    tokenizer = ProteinTokenizer()
    budget = args.token_budget or ESM_TOKEN_BUDGET
    results = []
    for workload_name in workloads:
        workload = WORKLOADS[workload_name]
        flops = esm_flops_per_token(shape[0], shape[1], (workload.min_protein + workload.max_protein) / 2 + 2)

        def run_ours(proteins):
            peers.packed(ours, mean_pool_residues, peers.prepack([tokenizer.encode(p) for p in proteins], budget),
                         device)

        if "ours" in wanted:
            results.append(_measure("ours", model_name, workload_name, workload.proteins(args.sequences), run_ours,
                                    device, flops))
        if "published" in wanted:
            results.append(_measure("published", model_name, workload_name,
                                    workload.proteins(args.published_sequences),
                                    lambda p: peers.published_esm(fair, alphabet, p, device), device, flops))
    del ours
    if "hf-sdpa-bf16" in wanted:
        hf = random_hf_esm(shape, device)
        for workload_name in workloads:
            workload = WORKLOADS[workload_name]
            flops = esm_flops_per_token(shape[0], shape[1], (workload.min_protein + workload.max_protein) / 2 + 2)
            results.append(_measure("hf-sdpa-bf16", model_name, workload_name, workload.proteins(args.peer_sequences),
                                    lambda p: peers.hf_sdpa(hf, p, device), device, flops))
        del hf
    if "fairesm-fp16" in wanted:
        for workload_name in workloads:
            workload = WORKLOADS[workload_name]
            flops = esm_flops_per_token(shape[0], shape[1], (workload.min_protein + workload.max_protein) / 2 + 2)
            results.append(_measure("fairesm-fp16", model_name, workload_name, workload.proteins(args.peer_sequences),
                                    lambda p: peers.fairesm_padded(fair, alphabet, p, device), device, flops))
    del fair
    torch.cuda.empty_cache()
    return results


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


def dnabert_suite(args, device) -> list[Measurement]:
    from virnucpro.models.dnabert import mean_pool_all_tokens
    from virnucpro.tokenize.dna import DnaTokenizer

    ours, folder = random_dnabert(device, PRECISION_MODES[DEFAULT_PRECISION].dnabert, args.dnabert_tokenizer)
    tokenizer = DnaTokenizer(folder)
    flops = 12 * (2 * (4 * 768 * 768 + 3 * 768 * 3072))  # QKV+out, gated (2x3072) and wo GEMMs, per token
    results = []
    for workload_name in ("chunks500", "mixed"):
        seqs = WORKLOADS[workload_name].nucleotides(args.sequences)
        encoded = tokenizer.encode_batch(seqs)
        budget = DNABERT_TOKEN_BUDGET

        def run_ours(_):
            peers.packed(ours, mean_pool_all_tokens, peers.prepack(encoded, budget), device)

        results.append(_dna_measure("ours", workload_name, encoded, run_ours, device, flops))
    reference, _ = random_dnabert(device, torch.float32, args.dnabert_tokenizer, fuse=False)
    reference.set_attention(device, "sdpa")
    encoded = tokenizer.encode_batch(WORKLOADS["chunks500"].nucleotides(args.published_sequences))

    def one_by_one(_):
        with torch.no_grad():
            for ids in encoded:
                ids_t = torch.from_numpy(ids).to(device)
                cu = torch.tensor([0, len(ids)], dtype=torch.int32, device=device)
                reference(ids_t, cu, len(ids)).mean(0).cpu()

    results.append(_dna_measure("published", "chunks500", encoded, one_by_one, device, flops))
    return results


def _dna_measure(name, workload, encoded, fn, device, flops) -> Measurement:
    fn(None)
    tokens = sum(len(e) for e in encoded)
    with UtilisationSampler(device) as sampler:
        seconds = timed(lambda: fn(None), device)
    m = Measurement(name, "DNABERT-S", workload, len(encoded), tokens, seconds, flops, sampler.busy)
    print(f"  DNABERT-S {workload:10s} {name:14s} {m.tokens_per_s:12,.0f} tokens/s", flush=True)
    return m


def pipeline_suite(args, env, device) -> list[Measurement]:
    """The whole predict path on 500 bp reads: prep, workers, both models, classifier, writing — vs ESM only."""
    from virnucpro.bench.pipeline import time_pipeline

    return time_pipeline(args, env, device)
