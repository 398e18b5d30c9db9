"""The benchmark's results: one table on stdout (rates, MFU, ratios to the published way and to ours) and JSON."""

from __future__ import annotations

import json

import torch

from virnucpro.bench.timing import Measurement


def print_table(results: list[Measurement], peak: float) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"virnucpro bench on {torch.cuda.get_device_name()} (bf16 GEMM peak {peak / 1e12:.0f} TFLOP/s)")
    for column in ("model", "workload", "way", "tokens/s", "seq/s", "MFU", "vs published", "vs ours", "GPU busy"):
        table.add_column(column, justify="right" if column not in ("model", "workload", "way") else "left")
    for m in results:
        same = [r for r in results if r.model == m.model and r.workload == m.workload]
        published = next((r for r in same if r.name == "published"), None)
        ours = next((r for r in same if r.name == "ours"), None)
        ratio = lambda ref: f"{m.tokens_per_s / ref.tokens_per_s:.2f}x" if ref else "-"  # noqa: E731
        busy = f"{m.gpu_busy:.0%}" if m.gpu_busy is not None else "-"
        table.add_row(m.model, m.workload, m.name, f"{m.tokens_per_s:,.0f}", f"{m.sequences_per_s:,.0f}",
                      f"{m.mfu(peak):.0%}" if m.flops_per_token else "-", ratio(published), ratio(ours), busy)
    Console(stderr=False, width=160).print(table)


def write_json(path: str, results: list[Measurement], peak: float, device: torch.device) -> None:
    with open(path, "w") as handle:
        json.dump({"device": torch.cuda.get_device_name(device), "gemm_peak_flops": peak,
                   "results": [dict(vars(m), tokens_per_s=m.tokens_per_s, sequences_per_s=m.sequences_per_s,
                                    mfu=m.mfu(peak)) for m in results]}, handle, indent=1)
