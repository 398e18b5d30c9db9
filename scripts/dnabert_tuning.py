"""Packed DNABERT-S throughput on the GPU: attention backend x fused elementwise regions x token budget.

Usage (on the lent GPU): python scripts/dnabert_tuning.py [--tokenizer DIR] [--sequences 8192]
"""

from __future__ import annotations

import argparse
import itertools

import torch

from virnucpro.bench import peers
from virnucpro.bench.suites import random_dnabert
from virnucpro.bench.timing import timed
from virnucpro.bench.workloads import WORKLOADS
from virnucpro.models.dnabert import mean_pool_all_tokens
from virnucpro.tokenize.dna import DnaTokenizer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokenizer", default=None)
    parser.add_argument("--sequences", type=int, default=8192)
    parser.add_argument("--budgets", default="32768,65536,131072")
    parser.add_argument("--attention", default="padded,flex")
    args = parser.parse_args()
    device = torch.device("cuda")
    model, folder = random_dnabert(device, torch.bfloat16, args.tokenizer)
    encoded = DnaTokenizer(folder).encode_batch(WORKLOADS["chunks500"].nucleotides(args.sequences))
    tokens = sum(len(e) for e in encoded)
    for fuse, attention, budget in itertools.product((False, True), args.attention.split(","),
                                                      [int(b) for b in args.budgets.split(",")]):
        model.set_attention(device, attention)
        model.fuse_elementwise(fuse)
        batches = peers.prepack(encoded, budget)
        peers.packed(model, mean_pool_all_tokens, batches, device)  # warm-up / compile every shape
        seconds = min(timed(lambda: peers.packed(model, mean_pool_all_tokens, batches, device), device)
                      for _ in range(2))
        print(f"DNABERT-S fuse={fuse!s:5} attention={attention:7} budget={budget:6d}: {tokens / seconds:12,.0f} tokens/s",
              flush=True)


if __name__ == "__main__":
    main()
