"""A finished run directory of any size, without models: input -> real prep -> index -> plan -> fake scores.

    python scripts/synthetic_run.py OUT --frames 1e7 [--chunk-length 300] [--part-frames 16384] [--seed 0]

The input is random DNA, mostly C/G (few stop codons, so most chunks keep 4-6 frames): 90% reads of 100-300 bp
and 10% contigs of 1-10 kb (several chunks each), ~frames/4.5 chunks in all. It goes through the product's own
prep (run_prep: the three published files and prep/sequences.tsv), frame index and shard plan; then, instead of
a scorer, every shard gets checkpoint parts with random softmax-like scores (virus score v, others 1 - v; a few
frames with high v) and `.done`, and telemetry.jsonl gets one 'part' event per part. The result is what
`virnucpro aggregate` / `call` / `report` read after a real run (tests/doubles.py's HashScorer is the slow,
per-frame-hashed version of the same). Vectorised throughout: ~1e7 frames in a few minutes on one core.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from virnucpro.io.prep_files import IDENTIFIED_PROTEIN, FrameSource, build_index
from virnucpro.prep.pipeline import run_prep
from virnucpro.run.manifest import Manifest, RunIdentity
from virnucpro.run.parts import PartData, write_done, write_part
from virnucpro.run.plan import frame_costs, plan_shards
from virnucpro.run.rundir import RunDir

BASES = np.frombuffer(b"ACGT", dtype=np.uint8)
BASE_WEIGHTS = np.array([0.05, 0.45, 0.45, 0.05])
FRAMES_PER_BP = 0.0185  # kept frames per input base of this input (measured at 300 bp chunks)
READS_PER_WRITE = 200_000


def write_input(path: Path, frames: int, seed: int) -> int:
    """Random FASTA with about `frames` kept frames; returns the number of records."""
    rng = np.random.default_rng(seed)
    target_bp, written, records = frames / FRAMES_PER_BP, 0, 0
    with open(path, "wb") as handle:
        while written < target_bp:
            long = rng.random(READS_PER_WRITE) < 0.1
            lengths = np.where(long, rng.integers(1_000, 10_001, READS_PER_WRITE),
                               rng.integers(100, 301, READS_PER_WRITE))
            keep = np.cumsum(lengths) <= target_bp - written + lengths.max()
            lengths = lengths[keep]
            handle.write(_fasta(lengths, records, rng))
            written += int(lengths.sum())
            records += lengths.size
    return records


def _fasta(lengths: np.ndarray, first: int, rng: np.random.Generator) -> bytes:
    bases = BASES[rng.choice(4, size=int(lengths.sum()), p=BASE_WEIGHTS)]
    ends = np.cumsum(lengths)
    pieces = np.split(bases, ends[:-1])
    names = [f">read{first + i} synthetic length={n}\n".encode() for i, n in enumerate(lengths.tolist())]
    return b"".join(name + piece.tobytes() + b"\n" for name, piece in zip(names, pieces))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def fake_models(folder: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    models = {}
    for role in ("esm", "dnabert", "classifier"):
        path = folder / f"{role}.bin"
        path.write_text(f"synthetic {role}\n")
        models[role] = {"path": str(path), "size": path.stat().st_size, "sha256": sha256(path)}
    return models


def frame_ids(prep_dir: Path):
    """Frame ids in prep order, streamed from identified_protein.faa."""
    with open(prep_dir / IDENTIFIED_PROTEIN, "rb") as handle:
        for header in handle:
            handle.readline()
            yield header[1:-1].decode()


def random_scores(rng: np.random.Generator, n: int) -> np.ndarray:
    virus = rng.beta(0.6, 0.9, n).astype(np.float32)
    return np.stack([1 - virus, virus], axis=1)


def write_parts(run: RunDir, manifest: Manifest, part_frames: int, seed: int) -> None:
    rng = np.random.default_rng(seed + 1)
    ids = frame_ids(run.prep)
    clock = time.time()
    with open(run.telemetry, "a") as telemetry:
        for index, (start, stop, _) in enumerate(manifest.shards):
            shard_dir = run.shard_dir(index)
            shard_dir.mkdir(parents=True, exist_ok=True)
            for first in range(start, stop, part_frames):
                last = min(first + part_frames, stop)
                part = PartData(first, [next(ids) for _ in range(last - first)], random_scores(rng, last - first))
                write_part(shard_dir, part)
                seconds = (last - first) / 500.0  # as if one GPU scored 500 frames/s
                clock += seconds
                telemetry.write(json.dumps({"time": round(clock, 3), "event": "part", "shard": index,
                                            "device": "synthetic", "start": first, "stop": last,
                                            "frames": last - first, "seconds": seconds}) + "\n")
            write_done(shard_dir, {"frames": stop - start, "synthetic": True})


def make_run(out: Path, frames: int, chunk_length: int, part_frames: int, seed: int) -> Manifest:
    run = RunDir(out).create()
    input_path = out / "input.fasta"
    write_input(input_path, frames, seed)
    run_prep(input_path, run.prep, chunk_length)
    build_index(run.prep)
    costs = frame_costs(FrameSource(run.prep))
    shards = plan_shards(costs, 1, 20_000_000)
    identity = RunIdentity({"path": str(input_path.resolve()), "size": input_path.stat().st_size,
                            "sha256": sha256(input_path)}, chunk_length, fake_models(out / "models"), "fp16", False)
    manifest = Manifest(identity, len(costs), int(costs.sum()), shards,
                        created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    write_parts(run, manifest, part_frames, seed)
    manifest.save(run.manifest)
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--frames", type=float, default=1e6)
    parser.add_argument("--chunk-length", type=int, choices=(300, 500), default=300)
    parser.add_argument("--part-frames", type=int, default=16384)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    began = time.perf_counter()
    manifest = make_run(args.out, int(args.frames), args.chunk_length, args.part_frames, args.seed)
    print(f"{args.out}: {manifest.frames} frames in {len(manifest.shards)} shards "
          f"({time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
