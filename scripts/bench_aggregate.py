"""Peak memory and speed of `virnucpro aggregate` on finished run directories (see scripts/synthetic_run.py).

    python scripts/synthetic_run.py /scratch/syn1e7 --frames 1e7
    python scripts/bench_aggregate.py /scratch/syn1e5 /scratch/syn1e6 /scratch/syn1e7 [--json out.json]

Runs the real command line (`python -m virnucpro aggregate RUN`, a fresh process each time) and samples every
50 ms the memory of its process tree (aggregation reads the parts in a forked second process): the peak of the
sum of the tree's RSS, the peak of the sum of its PSS (shared pages counted once: the fork shares the ~250 MB of
imports), and the main process's own peak RSS (VmHWM, exact). Frames/s = the run's frames / wall seconds of the
whole command, start-up (imports) included; cpu_seconds = user + system time of the command and its reader
process (what a machine shared with other work still measures fairly).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

SAMPLE_S = 0.05
PSS_EVERY = 5  # smaps_rollup walks the page tables: read it on every 5th sample only


def _kb(path: Path, field: str) -> int:
    try:
        for line in path.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError):
        pass
    return 0


def _tree(pid: int) -> list[int]:
    pids, queue = [], [pid]
    while queue:
        current = queue.pop()
        pids.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                queue += [int(child) for child in task.read_text().split()]
            except (FileNotFoundError, ProcessLookupError):
                pass
    return pids


def measure(rundir: Path) -> dict:
    frames = json.loads((rundir / "manifest.json").read_text())["frames"]
    cpu_before = os.times()
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "virnucpro", "aggregate", str(rundir)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak_rss = peak_pss = main_hwm = samples = 0
    while process.poll() is None:
        pids = _tree(process.pid)
        peak_rss = max(peak_rss, sum(_kb(Path(f"/proc/{p}/status"), "VmRSS") for p in pids))
        if samples % PSS_EVERY == 0:
            peak_pss = max(peak_pss, sum(_kb(Path(f"/proc/{p}/smaps_rollup"), "Pss") for p in pids))
        main_hwm = max(main_hwm, _kb(Path(f"/proc/{process.pid}/status"), "VmHWM"))
        samples += 1
        time.sleep(SAMPLE_S)
    seconds = time.perf_counter() - started
    cpu = os.times()
    cpu_seconds = (cpu.children_user - cpu_before.children_user) + (cpu.children_system - cpu_before.children_system)
    stderr = process.stderr.read()
    if process.returncode != 0:
        raise SystemExit(f"aggregate {rundir} failed:\n{stderr}")
    return {"run": str(rundir), "frames": frames, "seconds": round(seconds, 2),
            "frames_per_s": round(frames / seconds), "cpu_seconds": round(cpu_seconds, 2), "peak_tree_rss_mb": round(peak_rss / 1024),
            "peak_tree_pss_mb": round(peak_pss / 1024), "main_peak_rss_mb": round(main_hwm / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results = []
    for rundir in args.runs:
        results.append(measure(rundir))
        print(json.dumps(results[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"machine": platform.node(), "processor": platform.processor(),
                                         "python": platform.python_version(), "results": results}, indent=1))


if __name__ == "__main__":
    main()
