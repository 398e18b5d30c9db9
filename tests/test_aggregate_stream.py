"""Aggregation in one streaming pass: byte-identical to the previous (whole-memory) aggregation, the consensus
sorted on disk when it is large, chunks that straddle parts, sequences walked from prep/sequences.tsv, and frames
whose scores are not finite kept out of every output."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import h5py
import numpy as np
import pytest

from finished_run import NanHashScorer, finished_run, write_fasta
from doubles import hash_vector
from virnucpro.config import EnvConfig
from virnucpro.errors import RunStateError
from virnucpro.io.prep_files import SequenceInfo
from virnucpro.outputs.chunks import ChunkGrouper
from virnucpro.outputs.consensus import HighestScoreTable, chunk_is_virus
from virnucpro.outputs.external_sort import ExternalSorter
from virnucpro.outputs.results import read_prediction_results
from virnucpro.outputs.sequence_walk import SequenceWalk
from virnucpro.run import aggregate
from virnucpro.run.options import RunOptions
from virnucpro.run.rundir import HIGHEST_SCORE, NONFINITE, PREDICTIONS, SUMMARY

GOLDEN = Path(__file__).resolve().parent / "data" / "golden"
# The outputs of the previous aggregation (main before issue 14, whole-memory) on the HashScorer runs below.
BEFORE = GOLDEN / "aggregate"
PUBLISHED_RESULTS = sorted((GOLDEN / "published").glob("*_prediction_results.txt")) + [GOLDEN / "prep" / "prediction_results.txt"]


@pytest.mark.parametrize("chunk_length", [300, 500])
@pytest.mark.parametrize("sort_rows", [1 << 18, 5])
def test_aggregate_is_byte_identical_to_the_previous_aggregation(tmp_path, golden_prep, chunk_length, sort_rows):
    rundir = finished_run(tmp_path, golden_prep / "input.fasta", chunk_length=chunk_length)
    aggregate(rundir, RunOptions(sort_rows=sort_rows))
    before = BEFORE / f"hash{chunk_length}"
    for name in (PREDICTIONS, HIGHEST_SCORE):
        assert (rundir / name).read_bytes() == (before / name).read_bytes(), name
    # the summary keeps the previous seven columns, byte for byte, and adds columns after them
    got = [line.split("\t")[:7] for line in (rundir / SUMMARY).read_text().splitlines()]
    want = [line.split("\t") for line in (before / SUMMARY).read_text().splitlines()]
    assert got == want
    assert not (rundir / ".aggregate-sort").exists() and not list(rundir.glob(".*.tmp"))


@pytest.mark.parametrize("variable, rows", [(None, 1 << 18), ("", 1 << 18), ("7", 7), ("0", 1)])
def test_sort_rows_from_the_environment(variable, rows):
    """VIRNUCPRO_SORT_ROWS (at least 1) or 2^18 rows sorted in memory, the same default as RunOptions()."""
    environ = {"VIRNUCPRO_MODELS": "/m"} | ({} if variable is None else {"VIRNUCPRO_SORT_ROWS": variable})
    assert RunOptions.from_env(EnvConfig.from_environ(environ)).sort_rows == rows
    assert RunOptions().sort_rows == 1 << 18


@pytest.mark.parametrize("results", PUBLISHED_RESULTS, ids=lambda p: p.name)
@pytest.mark.parametrize("block, sort_rows", [(100_000, 1 << 18), (3, 4), (1, 1)])
def test_streamed_consensus_equals_the_published_csv(tmp_path, results, block, sort_rows):
    """The published tool's own prediction_results -> its _highestscore.csv, fed in blocks, sorted on disk."""
    ids, scores, _ = read_prediction_results(results)
    grouper, table = ChunkGrouper(), HighestScoreTable(tmp_path / "sort", sort_rows)
    for start in range(0, len(ids), block):
        chunks = grouper.add(ids[start:start + block], scores[start:start + block].astype(np.float32))
        table.add(chunks, chunk_is_virus(chunks.best_others, chunks.best_virus))
    last = grouper.finish()
    table.add(last, chunk_is_virus(last.best_others, last.best_virus))
    out = tmp_path / "highest.csv"
    with open(out, "w", newline="\n") as handle:
        table.write(handle)
    assert out.read_bytes() == results.with_name(results.stem + "_highestscore.csv").read_bytes()
    assert not any((tmp_path / "sort").glob("*"))  # the sorted runs are removed once merged


def test_external_sort_is_python_string_order(tmp_path):
    rng = random.Random(0)
    alphabet = ["a", "B", "_", "1", "10", "é", "ß", "漢", "|", '"', "chunk"]
    keys = list({"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6))) for _ in range(3000)})
    rng.shuffle(keys)
    sorter = ExternalSorter(tmp_path / "runs", run_rows=97)
    for start in range(0, len(keys), 250):
        sorter.add(keys[start:start + 250], [str(len(k)) for k in keys[start:start + 250]])
    assert sorter.spilled_runs > 10
    assert list(sorter.sorted_pairs()) == sorted((k, str(len(k))) for k in keys)
    assert list((tmp_path / "runs").iterdir()) == []


@pytest.mark.parametrize("seed", range(4))
def test_chunk_maxima_across_blocks_equal_a_per_chunk_oracle(seed):
    rng = np.random.default_rng(seed)
    ids, scores = [], []
    for chunk in range(200):
        for frame in rng.choice(["F1", "F2", "F3", "R1", "R2", "R3"], size=rng.integers(1, 7), replace=False):
            ids.append(f"s{chunk // 3}_chunk_{chunk % 3 + 1}{frame}")
            scores.append(rng.random(2, dtype=np.float32))
    scores = np.array(scores, dtype=np.float32)
    scores[rng.random(len(ids)) < 0.1] = np.nan
    got, grouper, start = [], ChunkGrouper(), 0
    while start < len(ids):
        stop = start + int(rng.integers(1, 12))
        got.append(grouper.add(ids[start:stop], scores[start:stop]))
        start = stop
    got.append(grouper.finish())
    rows = [(c, o, v, n) for b in got for c, o, v, n in zip(b.ids, b.best_others, b.best_virus, b.nonfinite)]
    oracle: dict[str, list] = {}
    for frame_id, (others, virus) in zip(ids, scores.tolist()):
        oracle.setdefault(frame_id[:-2], []).append((others, virus))
    assert [r[0] for r in rows] == list(oracle)
    for chunk, others, virus, nonfinite in rows:
        finite = [pair for pair in oracle[chunk] if not np.isnan(pair).any()]
        assert nonfinite == len(oracle[chunk]) - len(finite)
        if finite:
            assert (others, virus) == (max(p[0] for p in finite), max(p[1] for p in finite))
        else:
            assert np.isnan(others) and np.isnan(virus)


def _walk(table: list[SequenceInfo], chunk_ids: list[str]):
    from virnucpro.outputs.chunks import ChunkBlock

    walk = SequenceWalk(iter(table))
    block = ChunkBlock(chunk_ids, np.zeros(len(chunk_ids), np.float32), np.ones(len(chunk_ids), np.float32),
                       np.zeros(len(chunk_ids), np.int64))
    return walk.add(block, np.ones(len(chunk_ids), bool)) + walk.finish()


def test_walk_maps_ids_that_contain_chunk_to_their_own_sequence():
    table = [SequenceInfo("a", 900, 2, 0), SequenceInfo("a_chunk_1", 400, 1, 0), SequenceInfo("b", 10, 1, 0)]
    summaries = _walk(table, ["a_chunk_2", "a_chunk_1_chunk_1", "b_chunk_1"])
    assert [(s.info.id, s.scored_chunks) for s in summaries] == [("a", 1), ("a_chunk_1", 1), ("b", 1)]


@pytest.mark.parametrize("chunk_ids", [["b_chunk_1", "a_chunk_1"], ["a_chunk_3"], ["a_chunk_2", "a_chunk_1"],
                                       ["ghost_chunk_1"], ["a_chunk_x"]])
def test_walk_refuses_scores_that_disagree_with_the_table(chunk_ids):
    table = [SequenceInfo("a", 900, 2, 0), SequenceInfo("b", 10, 1, 0)]
    with pytest.raises(RunStateError, match="disagree|_chunk_<number>"):
        _walk(table, chunk_ids)


def test_frames_with_non_finite_scores_stay_out_of_the_outputs(tmp_path, golden_prep):
    rundir = finished_run(tmp_path, golden_prep / "input.fasta", scorer=NanHashScorer())
    report = aggregate(rundir)
    all_ids = [line[1:].strip() for line in open(rundir / "prep" / "identified_protein.faa") if line.startswith(">")]
    bad = [i for i in all_ids if hash_vector(i, "nan", 1)[0] < NanHashScorer.fraction]
    assert bad and report.nonfinite_frames == len(bad)
    ids, scores, _ = read_prediction_results(rundir / PREDICTIONS)
    assert ids == [i for i in all_ids if i not in set(bad)] and np.isfinite(scores).all()
    listed = [line.split("\t")[0] for line in (rundir / NONFINITE).read_text().splitlines()[1:]]
    assert listed == bad
    for name in (PREDICTIONS, HIGHEST_SCORE, SUMMARY):
        assert "nan" not in (rundir / name).read_text().lower(), name
    with open(rundir / SUMMARY) as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert sum(int(row["nonfinite_frames"]) for row in rows) == len(bad)
    # a chunk whose frames are all NaN is not in the consensus
    finite_chunks = {i[:-2] for i in ids}
    consensus = [line.split("\t")[0] for line in (rundir / HIGHEST_SCORE).read_text().splitlines()[1:]]
    assert consensus == sorted(finite_chunks)


def test_parts_are_read_in_a_second_process_and_its_errors_arrive_here(tmp_path, golden_prep):
    rundir = finished_run(tmp_path, golden_prep / "input.fasta")
    part = sorted((rundir / "shards" / "shard-0001").glob("part-*.h5"))[0]
    with h5py.File(part, "r+") as handle:
        handle["scores"][0] = [0.25, 0.75]
        handle.attrs["start"] = 10**9  # no longer the range its name says
    with pytest.raises(RunStateError, match="shard-0001"):
        aggregate(rundir)
    assert not (rundir / PREDICTIONS).exists()


def test_long_multichunk_sequences_and_odd_ids(tmp_path):
    rng = random.Random(3)
    records = [(f'odd"q{i} text', "".join(rng.choice("CGCGAT") for _ in range(rng.randint(50, 2600))))
               for i in range(12)] + [("x_chunk_2", "CCGGCC" * 120), ("x", "GGC" * 400)]
    rundir = finished_run(tmp_path, write_fasta(tmp_path / "odd.fasta", records), chunk_length=300)
    aggregate(rundir, RunOptions(sort_rows=3))
    ids, scores, _ = read_prediction_results(rundir / PREDICTIONS)
    best: dict[str, list[float]] = {}
    for frame_id, (others, virus) in zip(ids, scores.tolist()):
        pair = best.setdefault(frame_id[:-2], [0.0, 0.0])
        pair[0], pair[1] = max(pair[0], others), max(pair[1], virus)
    with open(rundir / HIGHEST_SCORE, newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    assert rows[0] == ["Modified_ID", "Is_Virus"]
    assert rows[1:] == [[chunk, str(pair[1] >= pair[0])] for chunk, pair in sorted(best.items())]
    assert '"odd""q0_chunk_1"' in (rundir / HIGHEST_SCORE).read_text()  # pandas' quoting of a quote


def test_the_benchmark_run_generator_makes_a_finished_run(tmp_path):
    """scripts/synthetic_run.py (what docs/benchmarks.md measures aggregation on) stays a valid finished run."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "scripts" / "synthetic_run.py"
    result = subprocess.run([sys.executable, str(script), str(tmp_path / "syn"), "--frames", "3000",
                             "--part-frames", "500"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = aggregate(tmp_path / "syn", RunOptions(sort_rows=100))
    ids, _, _ = read_prediction_results(tmp_path / "syn" / PREDICTIONS)
    assert report.frames == len(ids) >= 3000 and report.sequences > 0 and report.viral_sequences > 0


def test_each_part_is_read_once_and_a_corrupt_one_later_in_a_shard_is_still_found(tmp_path, golden_prep, monkeypatch):
    """The check returns the content it read (one open per part, none again to yield it); a part altered on disk
    after good ones of its shard were streamed still ends the aggregation, is deleted and unmarks its shard."""
    import virnucpro.run.parts as parts_module
    import virnucpro.run.prefetch as prefetch_module

    rundir = finished_run(tmp_path, golden_prep / "input.fasta")
    parts = sorted((rundir / "shards").glob("shard-*/part-*.h5"))
    opened: list[str] = []
    real_file = parts_module.h5py.File

    def counting_file(path, *args, **kwargs):
        opened.append(Path(path).name)
        return real_file(path, *args, **kwargs)

    monkeypatch.setattr(parts_module.h5py, "File", counting_file)
    monkeypatch.setattr(prefetch_module.multiprocessing, "get_all_start_methods", lambda: ["spawn"])  # in-process
    aggregate(rundir)
    assert sorted(opened) == sorted(part.name for part in parts)

    shard = parts[-1].parent
    shard_parts = sorted(shard.glob("part-*.h5"))
    assert len(shard_parts) >= 2
    with h5py.File(shard_parts[-1], "r+") as handle:
        handle["scores"][0] = handle["scores"][0][::-1]  # content no longer matches its recorded sha256
    with pytest.raises(RunStateError, match=shard.name):
        aggregate(rundir)
    assert not shard_parts[-1].exists() and shard_parts[0].exists() and not (shard / ".done").exists()
