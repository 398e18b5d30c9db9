"""Where the first seconds of a scoring process go (issue 16): one process builds random-weight real-size models,
scores prepared Illumina-length reads and logs, per block, the time since the process started and the block's
ESM tokens/s. Run it twice with the same TORCHINDUCTOR_CACHE_DIR to see what a warm compile cache saves.

    python scripts/startup.py --work DIR --reads 20000 --length 150 --json OUT.json
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--reads", type=int, default=20000)
    parser.add_argument("--length", type=int, default=150)
    parser.add_argument("--tokenizer", default=os.environ.get("VIRNUCPRO_DNABERT_TOKENIZER"))
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    from virnucpro.bench.models import random_loaded_models
    from virnucpro.bench.workloads import stop_free_reads
    from virnucpro.config import EngineConfig, EnvConfig
    from virnucpro.engine.loading import ESM_TOKEN_BUDGET
    from virnucpro.engine.scorer import Scorer
    from virnucpro.io.prep_files import FrameSource, build_index, has_index
    from virnucpro.prep.pipeline import run_prep

    marks = {"imports": time.perf_counter() - STARTED}
    prep = args.work / "prep"
    if not has_index(prep):
        stop_free_reads(args.work / "reads.fasta", args.reads, length=args.length, seed=21)
        run_prep(args.work / "reads.fasta", prep, 300)
        build_index(prep)
    source = FrameSource(prep)
    marks["prep"] = time.perf_counter() - STARTED
    device = torch.device("cuda")
    models = random_loaded_models(device, args.tokenizer, ESM_TOKEN_BUDGET)
    torch.cuda.synchronize()
    marks["models"] = time.perf_counter() - STARTED
    scorer = Scorer(models, EngineConfig(device="cuda"), EnvConfig.from_environ())
    blocks, last = [], time.perf_counter()
    for block in scorer.score_range(source, 0, len(source), block_frames=4096, grid_start=0):
        now = time.perf_counter()
        tokens = int(source.aa_lengths[block.start:block.start + len(block.ids)].sum()) + 2 * len(block.ids)
        blocks.append({"t": round(now - STARTED, 2), "frames": len(block.ids), "tokens": tokens,
                       "tokens_per_s": round(tokens / (now - last))})
        last = now
    marks["done"] = time.perf_counter() - STARTED
    counters = {k: dict(v) for k, v in torch._dynamo.utils.counters.items() if k in ("stats", "inductor")}
    report = {"marks": marks, "blocks": blocks, "frames": len(source), "counters": counters,
              "cache_dir": os.environ.get("TORCHINDUCTOR_CACHE_DIR")}
    args.json.write_text(json.dumps(report, indent=1, default=str))
    print(json.dumps({"marks": marks, "first_blocks": blocks[:6], "last_blocks": blocks[-3:],
                      "unique_graphs": counters.get("stats", {}).get("unique_graphs")}, default=str), flush=True)


if __name__ == "__main__":
    main()
