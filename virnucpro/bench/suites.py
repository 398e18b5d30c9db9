"""Benchmark suites: ESM-2 (ours vs the three peers) and DNABERT-S (ours vs the published way)."""

from __future__ import annotations

import logging

import torch

from virnucpro.bench import peers
from virnucpro.bench.models import DEFAULT_NUMERICS, ours_from_fairesm, random_dnabert, random_fairesm, random_hf_esm
from virnucpro.bench.timing import Measurement, UtilisationSampler, esm_gemm_ceiling, timed
from virnucpro.bench.workloads import WORKLOADS, esm_flops_per_token
from virnucpro.engine.loading import DNABERT_TOKEN_BUDGET, ESM_TOKEN_BUDGET
from virnucpro.models.esm2 import mean_pool_residues
from virnucpro.tokenize.protein import ProteinTokenizer, esm_tokens

log = logging.getLogger(__name__)


def _measure(name, model_name, workload, proteins, fn, device, flops) -> Measurement:
    fn(proteins[: max(8, len(proteins) // 16)])  # warm-up: kernels, allocator, compilation
    tokens = int(esm_tokens([len(p) for p in proteins]).sum())
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
            _against_ceiling(results[-1], shape, budget, device)
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


def _against_ceiling(ours: Measurement, shape, budget: int, device) -> None:
    """Ours as a fraction of the shape-GEMM ceiling in the default numerics' GEMM dtype (issue 16's measure)."""
    ceiling = esm_gemm_ceiling(shape[0], shape[1], budget, DEFAULT_NUMERICS.esm.gemm, device)
    if ceiling:
        ours.details.update(gemm_ceiling_tokens_per_s=ceiling, of_gemm_ceiling=ours.tokens_per_s / ceiling)
        print(f"  {ours.model:5s} {ours.workload:10s} {'GEMM ceiling':14s} {ceiling:12,.0f} tokens/s "
              f"({DEFAULT_NUMERICS.esm.gemm}, {budget}-token batches): ours at {ours.tokens_per_s / ceiling:.2f}",
              flush=True)


def dnabert_suite(args, device) -> list[Measurement]:
    from virnucpro.models.dnabert import mean_pool_all_tokens
    from virnucpro.tokenize.dna import DnaTokenizer

    ours, folder = random_dnabert(device, DEFAULT_NUMERICS.dnabert, args.dnabert_tokenizer)
    tokenizer = DnaTokenizer(folder)
    flops = 12 * (2 * (4 * 768 * 768 + 3 * 768 * 3072))  # QKV+out, gated (2x3072) and wo GEMMs, per token
    results = []
    for workload_name in [w for w in args.workloads.split(",") if w]:
        seqs = WORKLOADS[workload_name].nucleotides(args.sequences)
        encoded = tokenizer.encode_batch(seqs)
        budget = DNABERT_TOKEN_BUDGET

        def run_ours(_):
            peers.packed(ours, mean_pool_all_tokens, peers.prepack(encoded, budget), device)

        results.append(_dna_measure("ours", workload_name, encoded, run_ours, device, flops))
    if "published" not in args.peers.split(","):
        return results
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
