#!/usr/bin/env python3
"""Where a Python process spends its wall time: run a module under a sampling thread that records every thread's
stack every few milliseconds (a thread waiting in C — a CUDA copy, a lock, an import's file read — shows the
Python line that called it). For a start-up profile of one `virnucpro shard` process:

    python scripts/stack_sampler.py --out samples.jsonl -- -m virnucpro shard RUN --index 1
    python scripts/stack_sampler.py --summarize samples.jsonl      # seconds per stage and per function

One JSON line per sample: {"t": seconds since start, "thread": name, "stack": ["file:function:line", ...]}
(outermost first).
"""

from __future__ import annotations

import argparse
import collections
import json
import runpy
import sys
import threading
import time
from pathlib import Path

_START = time.perf_counter()


def _frames(frame, limit: int = 60) -> list[str]:
    stack = []
    while frame is not None and len(stack) < limit:
        code = frame.f_code
        stack.append(f"{code.co_filename}:{code.co_name}:{frame.f_lineno}")
        frame = frame.f_back
    return stack[::-1]


def _sample_forever(out, interval: float) -> None:
    me = threading.get_ident()
    while True:
        time.sleep(interval)
        names = {thread.ident: thread.name for thread in threading.enumerate()}
        now = round(time.perf_counter() - _START, 4)
        for ident, frame in sys._current_frames().items():
            if ident != me:
                out.write(json.dumps({"t": now, "thread": names.get(ident, str(ident)), "stack": _frames(frame)}) + "\n")


def run(out_path: Path, interval: float, argv: list[str]) -> None:
    out = open(out_path, "w", buffering=1 << 20)
    threading.Thread(target=_sample_forever, args=(out, interval), name="stack-sampler", daemon=True).start()
    try:
        if argv[:1] == ["-m"]:
            sys.argv = [argv[1], *argv[2:]]
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = argv
            runpy.run_path(argv[0], run_name="__main__")
    finally:  # SystemExit from the module's own sys.exit included
        out.flush()


def _label(stack: list[str], depth: int) -> str:
    """The innermost `depth` frames that belong to virnucpro (or torch/transformers when none does)."""
    ours = [f for f in stack if "/virnucpro/" in f]
    chosen = ours[-depth:] if ours else stack[-depth:]
    return " > ".join(f.rsplit("/", 1)[-1] for f in chosen)


def summarize(path: Path, depth: int, top: int, window: float) -> None:
    samples = [json.loads(line) for line in path.open()]
    main = [s for s in samples if s["thread"] == "MainThread"]
    if not main:
        print("no MainThread samples")
        return
    interval = (main[-1]["t"] - main[0]["t"]) / max(len(main) - 1, 1)
    print(f"{len(main)} main-thread samples, {interval * 1000:.1f} ms apart, {main[-1]['t']:.2f} s")
    by_label = collections.Counter(_label(s["stack"], depth) for s in main)
    for label, count in by_label.most_common(top):
        print(f"{count * interval:7.2f} s  {label}")
    print(f"\nper {window:g} s window, main thread's commonest innermost virnucpro/torch frames:")
    windows = collections.defaultdict(collections.Counter)
    for s in main:
        windows[int(s["t"] // window)][_label(s["stack"], 2)] += 1
    for index in sorted(windows):
        label, count = windows[index].most_common(1)[0]
        print(f"{index * window:6.1f}s  {count / sum(windows[index].values()):4.0%}  {label}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--interval", type=float, default=0.01)
    parser.add_argument("--summarize", type=Path)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--window", type=float, default=0.5)
    parser.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.summarize:
        summarize(args.summarize, args.depth, args.top, args.window)
        return
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    run(args.out, args.interval, argv)


if __name__ == "__main__":
    main()
