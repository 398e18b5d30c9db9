"""The frame index at scale: built by a vectorised streaming scan into memory-mapped arrays, read without
per-frame Python objects; shard planning streams over it. Oracles: a line-by-line Python scan and the in-memory
planner's arithmetic."""

from __future__ import annotations

import math
import pickle
import random

import numpy as np
import pytest

import virnucpro.io.prep_files as prep_files
import virnucpro.run.plan as plan
from virnucpro.errors import InputError
from virnucpro.io.prep_files import FrameSource, build_index


def python_scan(path) -> tuple[list[int], list[int]]:
    offsets, lengths, position = [], [], 0
    lines = open(path, "rb").read().splitlines(keepends=True)
    for header, sequence in zip(lines[0::2], lines[1::2]):
        offsets.append(position)
        lengths.append(len(sequence.rstrip(b"\r\n")))
        position += len(header) + len(sequence)
    return offsets, lengths


def write_pair(folder, frames, newline="\n", final_newline=True):
    for name, column in (("identified_nucleotide.fasta", 0), ("identified_protein.faa", 1)):
        text = newline.join(f">id{i}\n{frame[column]}".replace("\n", newline) for i, frame in enumerate(frames))
        (folder / name).write_bytes((text + (newline if final_newline and frames else "")).encode())


@pytest.mark.parametrize("scan_bytes", [7, 64, 1 << 26])
@pytest.mark.parametrize("newline, final_newline", [("\n", True), ("\r\n", True), ("\n", False)])
def test_streamed_index_equals_a_line_by_line_scan(tmp_path, monkeypatch, scan_bytes, newline, final_newline):
    monkeypatch.setattr(prep_files, "SCAN_BYTES", scan_bytes)  # records straddle many scan chunks
    rng = random.Random(scan_bytes)
    frames = [("ACGT" * rng.randint(0, 30), "MK" * rng.randint(0, 20)) for _ in range(300)]
    write_pair(tmp_path, frames, newline, final_newline)
    build_index(tmp_path)
    source = FrameSource(tmp_path)
    for kind, name in (("nt", "identified_nucleotide.fasta"), ("aa", "identified_protein.faa")):
        offsets, lengths = python_scan(tmp_path / name)
        assert getattr(source, f"{kind}_offsets").tolist() == offsets
        assert getattr(source, f"{kind}_lengths").tolist() == lengths
    assert isinstance(source.aa_lengths, np.memmap)
    assert [(f.nucleotide, f.protein) for f in source.read(0, len(source))] == frames
    assert source.ids(3, 6) == ["id3", "id4", "id5"]
    assert len(pickle.dumps(source)) < 1000  # workers reopen the maps


@pytest.mark.parametrize("text, line", [(">a\nAC\nb\nAC\n", 3), (">a\nAC\n>b\n", 3), (">a\nAC\n>b", 3),
                                        ("AC\n", 1)])
def test_malformed_prepared_file_names_its_line(tmp_path, monkeypatch, text, line):
    monkeypatch.setattr(prep_files, "SCAN_BYTES", 3)
    (tmp_path / "identified_nucleotide.fasta").write_text(text)
    (tmp_path / "identified_protein.faa").write_text(text)
    with pytest.raises(InputError, match=rf"identified_nucleotide.fasta:{line}: malformed prepared file"):
        build_index(tmp_path)
    assert not prep_files.has_index(tmp_path) and not list(tmp_path.glob(".*"))


def test_run_directories_with_the_older_npz_index_still_read(tmp_path):
    frames = [("ACG", "T"), ("ACGTTT", "TF")]
    write_pair(tmp_path, frames)
    build_index(tmp_path)
    mapped = FrameSource(tmp_path)
    np.savez(tmp_path / "frames.index.npz", **{name: np.asarray(getattr(mapped, name))
                                              for name in ("nt_offsets", "nt_lengths", "aa_offsets")},
             aa_lengths=np.asarray(mapped.aa_lengths))
    import shutil

    shutil.rmtree(tmp_path / "frames.index")
    assert FrameSource(tmp_path).read(0, 2) == mapped.read(0, 2)


def reference_plan(costs: np.ndarray, min_shards: int, target: int) -> list[tuple[int, int, int]]:
    """The planner before it streamed (whole arrays in memory): the arithmetic the streamed one must reproduce."""
    cumulative = np.cumsum(costs)
    total = int(cumulative[-1])
    count = min(len(costs), max(1, min_shards, math.ceil(total / max(target, 1))))
    cuts = (np.searchsorted(cumulative, total * np.arange(1, count) / count, side="left") + 1).tolist()
    bounds = [0]
    for k, cut in enumerate(cuts, start=1):
        bounds.append(min(max(cut, bounds[-1] + 1), len(costs) - (count - k)))
    bounds.append(len(costs))
    return [(a, b, int(costs[a:b].sum())) for a, b in zip(bounds, bounds[1:])]


@pytest.mark.parametrize("chunk", [1, 5, 64, 1 << 22])
@pytest.mark.parametrize("seed", range(3))
def test_streamed_shard_plan_equals_the_in_memory_one(monkeypatch, chunk, seed):
    monkeypatch.setattr(plan, "COST_CHUNK", chunk)
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 400, size=300).astype(np.int32)
    costs = plan.TokenCosts(lengths)
    assert costs.sum() == int(lengths.sum()) + 2 * len(lengths)
    for min_shards, target in ((1, 10**9), (4, 10**9), (3, 5000), (300, 10**9), (1, 1)):
        assert plan.plan_shards(costs, min_shards, target) == reference_plan(lengths.astype(np.int64) + 2, min_shards, target)
