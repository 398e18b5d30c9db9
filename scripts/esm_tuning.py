"""Packed ESM-2 throughput on the GPU for token budgets x fused elementwise regions x attention backend.

Usage (on the lent GPU): python scripts/esm_tuning.py [--shape 3B] [--sequences 4096]
"""

from __future__ import annotations

import argparse
import itertools

import torch

from virnucpro.bench import peers
from virnucpro.bench.suites import ours_from_fairesm, random_fairesm
from virnucpro.bench.timing import timed
from virnucpro.bench.workloads import ESM_SHAPES, WORKLOADS
from virnucpro.models.esm2 import mean_pool_residues
from virnucpro.tokenize.protein import ProteinTokenizer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="3B")
    parser.add_argument("--sequences", type=int, default=4096)
    parser.add_argument("--budgets", default="16384,32768,65536")
    parser.add_argument("--attention", default="varlen,padded")
    args = parser.parse_args()
    device = torch.device("cuda")
    shape = ESM_SHAPES[args.shape]
    fair, _ = random_fairesm(shape, device)
    model = ours_from_fairesm(fair, shape, device, budget_fuse=False)
    del fair
    torch.cuda.empty_cache()
    tokenizer = ProteinTokenizer()
    encoded = [tokenizer.encode(p) for p in WORKLOADS["chunks500"].proteins(args.sequences)]
    tokens = sum(len(e) for e in encoded)
    for fuse, attention, budget in itertools.product((False, True), args.attention.split(","),
                                                      [int(b) for b in args.budgets.split(",")]):
        model.set_attention(device, attention)
        model.fuse_elementwise(fuse)
        batches = peers.prepack(encoded, budget)
        peers.packed(model, mean_pool_residues, batches[:2], device)  # warm-up / compile
        seconds = min(timed(lambda: peers.packed(model, mean_pool_residues, batches, device), device) for _ in range(2))
        print(f"{args.shape} fuse={fuse!s:5} attention={attention:7} budget={budget:6d}: "
              f"{tokens / seconds:10,.0f} tokens/s  peak mem {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB",
              flush=True)


if __name__ == "__main__":
    main()
