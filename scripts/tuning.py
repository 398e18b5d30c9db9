"""Packed-model throughput on the GPU for attention backend x fused elementwise regions x token budget.

Usage (on the lent GPU):
    python scripts/tuning.py esm [--shape 3B] [--sequences 4096]          # budgets 16k,32k,64k; varlen,padded
    python scripts/tuning.py dnabert [--tokenizer DIR] [--sequences 8192] # budgets 32k,64k,128k; padded,flex
"""

from __future__ import annotations

import argparse
import itertools

import torch

from virnucpro.bench import peers
from virnucpro.bench.models import ours_from_fairesm, random_dnabert, random_fairesm
from virnucpro.bench.timing import timed
from virnucpro.bench.workloads import ESM_SHAPES, WORKLOADS

DEFAULTS = {"esm": ("16384,32768,65536", "varlen,padded", 4096),
            "dnabert": ("32768,65536,131072", "padded,flex", 8192)}


def esm_case(args, device):
    from virnucpro.models.esm2 import mean_pool_residues
    from virnucpro.tokenize.protein import ProteinTokenizer

    shape = ESM_SHAPES[args.shape]
    fair, _ = random_fairesm(shape, device)
    model = ours_from_fairesm(fair, shape, device, budget_fuse=False)
    del fair
    torch.cuda.empty_cache()
    tokenizer = ProteinTokenizer()
    encoded = [tokenizer.encode(p) for p in WORKLOADS["chunks500"].proteins(args.sequences)]
    return f"ESM-2 {args.shape}", model, mean_pool_residues, encoded


def dnabert_case(args, device):
    from virnucpro.models.dnabert import mean_pool_all_tokens
    from virnucpro.tokenize.dna import DnaTokenizer

    model, folder = random_dnabert(device, torch.bfloat16, args.tokenizer)
    encoded = DnaTokenizer(folder).encode_batch(WORKLOADS["chunks500"].nucleotides(args.sequences))
    return "DNABERT-S", model, mean_pool_all_tokens, encoded


def sweep(label, model, pool, encoded, attentions, budgets, device) -> None:
    tokens = sum(len(e) for e in encoded)
    for fuse, attention, budget in itertools.product((False, True), attentions, budgets):
        model.set_attention(device, attention)
        model.fuse_elementwise(fuse)
        batches = peers.prepack(encoded, budget)
        peers.packed(model, pool, batches, device)  # warm-up: compile every shape outside the timing
        seconds = min(timed(lambda: peers.packed(model, pool, batches, device), device) for _ in range(2))
        print(f"{label} fuse={fuse!s:5} attention={attention:7} budget={budget:6d}: {tokens / seconds:12,.0f} "
              f"tokens/s  peak mem {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", choices=sorted(DEFAULTS))
    parser.add_argument("--shape", default="3B")
    parser.add_argument("--tokenizer", default=None)
    parser.add_argument("--sequences", type=int, default=None)
    parser.add_argument("--budgets", default=None)
    parser.add_argument("--attention", default=None)
    args = parser.parse_args()
    budgets, attentions, sequences = DEFAULTS[args.model]
    args.sequences = args.sequences or sequences
    device = torch.device("cuda")
    case = esm_case if args.model == "esm" else dnabert_case
    sweep(*case(args, device), (args.attention or attentions).split(","),
          [int(b) for b in (args.budgets or budgets).split(",")], device)


if __name__ == "__main__":
    main()
