"""Peak memory and time of planning at scale: frame index, de-duplication and shard plan over synthetic prepared
files (150 bp reads: 151-base nucleotide slices, 50-residue proteins), one fresh process per size.

    python scripts/plan_memory.py --frames 100000,1000000,10000000 --duplicates 0.3 --work /scratch/plan-mem

Prints one JSON line per size: frames, distinct frames, seconds per step, peak RSS (VmHWM: includes the pages of
the memory-mapped arrays, which are page cache the kernel reclaims), peak anonymous RSS (sampled RssAnon: what
cannot be reclaimed) and the RSS after the imports. Anonymous memory must not grow with the input.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

WRITE_FRAMES = 1 << 18


def write_prepared(folder: Path, frames: int, duplicates: float, seed: int = 0) -> None:
    """identified_nucleotide.fasta / identified_protein.faa; `duplicates` of the frames repeat another one."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    bases, residues = np.frombuffer(b"ACGT", np.uint8), np.frombuffer(b"ACDEFGHIKLMNPQRSTVWY", np.uint8)
    with open(folder / "identified_nucleotide.fasta", "wb") as nt, open(folder / "identified_protein.faa", "wb") as aa:
        for start in range(0, frames, WRITE_FRAMES):
            count = min(WRITE_FRAMES, frames - start)
            repeat = np.flatnonzero(rng.random(count) < duplicates)
            originals = np.setdiff1d(np.arange(count), repeat)
            copied = rng.choice(originals, size=len(repeat)) if len(originals) else repeat
            for handle, alphabet, width in ((nt, bases, 151), (aa, residues, 50)):
                lines = np.full((count, width + 1), ord("\n"), np.uint8)
                lines[:, :width] = alphabet[rng.integers(0, len(alphabet), size=(count, width))]
                lines[repeat] = lines[copied]
                ids = [f">r{i}_chunk_1F1\n".encode() for i in range(start, start + count)]
                handle.write(b"".join(i + row.tobytes() for i, row in zip(ids, lines)))


def peak_rss_mb() -> int:
    """This process's peak resident set (VmHWM: reset by exec, unlike ru_maxrss, which keeps the parent's)."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


class AnonymousPeak:
    """Samples RssAnon (memory that is not page cache: what a job's memory limit cannot reclaim) every 20 ms."""

    def __init__(self):
        self.peak_kb, self.running = 0, True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while self.running:
            for line in open("/proc/self/status"):
                if line.startswith("RssAnon:"):
                    self.peak_kb = max(self.peak_kb, int(line.split()[1]))
            time.sleep(0.02)

    def stop(self) -> int:
        self.running = False
        self.thread.join()
        return self.peak_kb // 1024


def measure(folder: Path) -> dict:
    """In this (fresh) process: index, de-duplicate and plan; peak RSS (all, and anonymous only)."""
    before = peak_rss_mb()
    from virnucpro.io.prep_files import FrameSource, build_index
    from virnucpro.run.dedup import plan_dedup, unique_source
    from virnucpro.run.plan import frame_costs, plan_shards

    imports = peak_rss_mb()
    marks = {}
    anonymous = AnonymousPeak()
    started = time.perf_counter()
    build_index(folder)
    marks["index_s"] = time.perf_counter() - started
    result = plan_dedup(folder)
    marks["dedup_s"] = time.perf_counter() - started - marks["index_s"]
    shards = plan_shards(frame_costs(unique_source(folder)), 1, 88_000_000)
    marks["plan_s"] = time.perf_counter() - started - marks["index_s"] - marks["dedup_s"]
    peak, anonymous_peak = peak_rss_mb(), anonymous.stop()
    return {"frames": len(FrameSource(folder)), "unique_frames": result.unique_frames, "shards": len(shards),
            **{k: round(v, 2) for k, v in marks.items()}, "peak_rss_mb": peak, "peak_anonymous_mb": anonymous_peak,
            "imports_rss_mb": imports, "python_rss_mb": before}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", default="100000,1000000")
    parser.add_argument("--duplicates", type=float, default=0.3)
    parser.add_argument("--work", type=Path, default=Path("plan-memory"))
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return 0
    for frames in (int(n) for n in args.frames.split(",")):
        folder = args.work / f"frames-{frames}"
        shutil.rmtree(folder, ignore_errors=True)
        write_prepared(folder, frames, args.duplicates)
        done = subprocess.run([sys.executable, __file__, "--measure", str(folder)], capture_output=True, text=True)
        print(done.stdout.strip() or done.stderr, flush=True)
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
