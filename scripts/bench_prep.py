"""Prep speed on one CPU core: virnucpro's vectorised prep vs the published per-codon approach.

Generates a random FASTA (~50 Mbp by default: reads of ~500 bp, half of them with a stop-free reading frame so
frames are kept as in real coding sequence, a few ambiguity codes and lowercase stretches, plus a few long
contigs), then times
  - virnucpro: run_prep(input -> three files), i.e. read + chunk + six-frame translate + select + write;
  - published: the per-codon oracle of tests/test_prep.py (virnucpro.reference.published_prep, strings already in
    memory, no file I/O) on a subset of the reads, which flatters the published side; and virnucpro on the same
    subset in memory (iter_prepared: chunk + translate + select + format the three files' text).
Prints Mbp/s for both and the ratio, for each of --repeat repetitions (same input) and their medians.

    python scripts/bench_prep.py [--mbp 50] [--published-mbp 2] [--chunk-length 500] [--repeat 1]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from virnucpro.io.sequences import Record, read_records
from virnucpro.prep.pipeline import iter_prepared, run_prep
from virnucpro.reference.published_prep import published_prep, random_sequence


def pin_to_one_core() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})


def write_input(path: Path, mbp: float, seed: int = 0) -> None:
    rng = random.Random(seed)
    target = int(mbp * 1e6)
    written = 0
    with open(path, "w") as handle:
        for contig in range(4):  # a few long contigs, 60-column lines
            sequence = "".join(rng.choices("ACGT", k=min(target // 20, 2_000_000)))
            handle.write(f">contig{contig} long\n")
            handle.writelines(sequence[i : i + 60] + "\n" for i in range(0, len(sequence), 60))
            written += len(sequence)
        read = 0
        while written < target:
            sequence = random_sequence(rng, rng.randint(300, 700))
            handle.write(f">read{read}\n{sequence}\n")
            written += len(sequence)
            read += 1


def time_virnucpro(path: Path, outdir: Path, chunk_length: int) -> tuple[float, float, int]:
    began = time.perf_counter()
    stats = run_prep(path, outdir, chunk_length)
    seconds = time.perf_counter() - began
    return stats.bases / 1e6, seconds, stats.frames


def published_subset(path: Path, mbp: float) -> list[tuple[str, str]]:
    """The first reads of the bench input, about `mbp` megabases."""
    records, bases = [], 0
    for record in read_records(path):
        if record.id.startswith("read") and bases < mbp * 1e6:
            records.append((record.id, record.seq))
            bases += len(record.seq)
    return records


def virnucpro_in_memory(records: list[tuple[str, str]], chunk_length: int) -> tuple[str, str, str]:
    """The three files' text, as published_prep returns it."""
    batches = list(iter_prepared([Record(i, s, i) for i, s in records], chunk_length))
    return tuple(b"".join(getattr(batch, part).tobytes() for batch in batches).decode("utf-8")
                 for part in ("chunked", "nucleotides", "proteins"))


def time_in_memory(prep, records: list[tuple[str, str]], chunk_length: int) -> tuple[float, float]:
    bases = sum(len(sequence) for _, sequence in records)
    began = time.perf_counter()
    prep(records, chunk_length)
    return bases / 1e6, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mbp", type=float, default=50.0)
    parser.add_argument("--published-mbp", type=float, default=2.0)
    parser.add_argument("--chunk-length", type=int, default=500, choices=(300, 500))
    parser.add_argument("--repeat", type=int, default=1, help="timed repetitions on the same input")
    args = parser.parse_args()
    pin_to_one_core()
    print(f"cpu cores used: 1; chunk length {args.chunk_length}")
    rates = {"end to end": [], "in memory": [], "published": []}
    with tempfile.TemporaryDirectory() as workdir:
        path = Path(workdir) / "bench.fasta"
        write_input(path, args.mbp)
        subset = published_subset(path, args.published_mbp)
        for repetition in range(1, args.repeat + 1):
            fast_mbp, fast_seconds, frames = time_virnucpro(path, Path(workdir) / "out", args.chunk_length)
            slow_mbp, slow_seconds = time_in_memory(published_prep, subset, args.chunk_length)
            same_mbp, same_seconds = time_in_memory(virnucpro_in_memory, subset, args.chunk_length)
            fast_rate, slow_rate, same_rate = fast_mbp / fast_seconds, slow_mbp / slow_seconds, same_mbp / same_seconds
            rates["end to end"].append(fast_rate)
            rates["in memory"].append(same_rate)
            rates["published"].append(slow_rate)
            print(f"repetition {repetition}:")
            print(f"  virnucpro run_prep (file -> 3 files, fsync): {fast_mbp:.1f} Mbp in {fast_seconds:.2f} s = {fast_rate:.1f} Mbp/s ({frames} frames)")
            print(f"  virnucpro in memory, published subset: {same_mbp:.1f} Mbp in {same_seconds:.2f} s = {same_rate:.1f} Mbp/s")
            print(f"  published per-codon, in memory: {slow_mbp:.1f} Mbp in {slow_seconds:.2f} s = {slow_rate:.2f} Mbp/s")
            print(f"  speed-up: {fast_rate / slow_rate:.1f}x end to end, {same_rate / slow_rate:.1f}x in memory")
    if args.repeat > 1:
        fast, same, slow = (statistics.median(rates[key]) for key in ("end to end", "in memory", "published"))
        print(f"median of {args.repeat}: virnucpro {fast:.1f} Mbp/s end to end, {same:.1f} Mbp/s in memory; "
              f"published {slow:.2f} Mbp/s; speed-up (ratio of medians) {fast / slow:.1f}x end to end, {same / slow:.1f}x in memory")


if __name__ == "__main__":
    main()
