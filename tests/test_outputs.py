from pathlib import Path

import numpy as np
import pytest
import torch

from virnucpro.errors import InputError
from virnucpro.io.prep_files import SequenceInfo
from virnucpro.outputs.chunks import ChunkGrouper
from virnucpro.outputs.consensus import HighestScoreTable, chunk_is_virus
from virnucpro.outputs.embeddings import EmbeddingsWriter, read_embeddings_h5
from virnucpro.outputs.results import PredictionWriter, read_prediction_results
from virnucpro.outputs.sequence_walk import SequenceWalk
from virnucpro.outputs.summary import HEADER as SUMMARY_HEADER
from virnucpro.outputs.summary import SummaryWriter, Thresholds

PUBLISHED = Path(__file__).resolve().parent / "data" / "golden" / "published"
PUBLISHED_RESULTS = sorted(PUBLISHED.glob("*_prediction_results.txt"))


def test_there_are_published_golden_files():
    assert len(PUBLISHED_RESULTS) >= 2


def write_predictions(path: Path, ids, scores) -> None:
    with open(path, "w", newline="\n") as handle:
        PredictionWriter(handle).add(ids, np.asarray(scores, dtype=np.float32))


@pytest.mark.parametrize("results", PUBLISHED_RESULTS, ids=lambda p: p.name)
def test_results_writer_reproduces_the_published_files(tmp_path, results):
    # The published scores are float32 values printed with str(numpy.float32): reading and writing them
    # again must give the same bytes, predictions included.
    ids, scores, _ = read_prediction_results(results)
    out = tmp_path / "prediction_results.txt"
    write_predictions(out, ids, scores)
    assert out.read_bytes() == results.read_bytes()


def test_results_round_trip_and_ties(tmp_path):
    rng = np.random.default_rng(0)
    virus = rng.random(500, dtype=np.float32)
    scores = np.stack([1 - virus, virus], axis=1).astype(np.float32)
    scores[:3] = [[0.5, 0.5], [0.25, 0.25], [1e-7, 1e-7]]  # ties
    scores[3] = [1e-6, 0.999999]
    ids = [f"seq{i}_chunk_1F{i % 3 + 1}" for i in range(len(scores))]
    out = tmp_path / "prediction_results.txt"
    write_predictions(out, ids, scores)

    read_ids, read_scores, labels = read_prediction_results(out)
    assert read_ids == ids
    np.testing.assert_array_equal(read_scores.astype(np.float32), scores)
    # The published rule: torch.max over the two scores, index 1 = virus.
    published = torch.max(torch.from_numpy(scores), dim=1).indices
    assert labels == ["virus" if index == 1 else "others" for index in published.tolist()]
    assert labels[:3] == ["others"] * 3


def test_results_reader_rejects_bad_rows(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("Sequence_ID\tPrediction\tscore1\tscore2\nx_chunk_1F1\tvirus\t0.1\n")
    with pytest.raises(InputError, match="bad.txt:2"):
        read_prediction_results(bad)


def consensus_rows(tmp_path: Path, ids, score1, score2) -> list[tuple[str, bool]]:
    grouper, table = ChunkGrouper(), HighestScoreTable(tmp_path / "sort", run_rows=2)
    for block in (grouper.add(ids, np.stack([score1, score2], axis=1)), grouper.finish()):
        table.add(block, chunk_is_virus(block.best_others, block.best_virus))
    out = tmp_path / "highest.csv"
    with open(out, "w", newline="\n") as handle:
        table.write(handle)
    lines = out.read_text().splitlines()
    assert lines[0] == "Modified_ID\tIs_Virus"
    return [(line.split("\t")[0], line.split("\t")[1] == "True") for line in lines[1:]]


def test_consensus_rule_ties_and_python_ordering(tmp_path):
    ids = ["b_chunk_1F1", "b_chunk_1R2", "B_chunk_1F1", "a|x_chunk_10F2", "a|x_chunk_2F1", "a|x_chunk_2R3"]
    score1 = np.array([0.9, 0.3, 0.6, 0.5, 0.7, 0.2], dtype=np.float32)
    score2 = np.array([0.1, 0.7, 0.4, 0.5, 0.3, 0.8], dtype=np.float32)
    rows = consensus_rows(tmp_path, ids, score1, score2)
    # Independent oracle: the published rule, spelled out per chunk.
    groups: dict[str, list[int]] = {}
    for index, frame_id in enumerate(ids):
        groups.setdefault(frame_id[:-2], []).append(index)
    expected = [
        (chunk, max(score2[i] for i in members) >= max(score1[i] for i in members))
        for chunk, members in sorted(groups.items())
    ]
    assert rows == expected
    assert [chunk for chunk, _ in rows] == ["B_chunk_1", "a|x_chunk_10", "a|x_chunk_2", "b_chunk_1"]
    assert dict(rows)["a|x_chunk_10"] is True  # a tie counts as virus


def _summary_oracle(sequences, frames, chunk_owner):
    """Straightforward recomputation from the frame rows, independent of consensus/summary code."""
    rows = []
    for sequence_id, chunk_count in sequences:
        chunks = {}
        for frame_id, s1, s2 in frames:
            chunk = frame_id[:-2]
            if chunk_owner[chunk] == sequence_id:
                chunks.setdefault(chunk, []).append((s1, s2))
        viral = sum(max(s2 for _, s2 in f) >= max(s1 for s1, _ in f) for f in chunks.values())
        scored = len(chunks)
        fraction = viral / scored if scored else 0.0
        best = max((s2 for f in chunks.values() for _, s2 in f), default=None)
        call = "unscored" if not scored else ("virus" if fraction >= 0.5 else "others")
        rows.append((sequence_id, chunk_count, scored, viral, fraction, best, call))
    return rows


def test_summary_on_a_hand_built_case(tmp_path):
    # "odd_chunk_7" is an input id that itself contains `_chunk_`: its chunks still map to it.
    sequences = [("odd_chunk_7", 3), ("plain", 2), ("empty", 1), ("half", 2)]
    chunk_owner = {f"{name}_chunk_{n}": name for name, count in sequences for n in range(1, count + 1)}
    frames = [
        ("odd_chunk_7_chunk_1F1", 0.2, 0.8),
        ("odd_chunk_7_chunk_1R2", 0.15, 0.85),
        ("odd_chunk_7_chunk_3F2", 0.7, 0.3),
        ("plain_chunk_1F1", 0.6, 0.4),
        ("plain_chunk_2R1", 0.55, 0.45),
        ("half_chunk_1F3", 0.25, 0.75),
        ("half_chunk_2F1", 0.75, 0.25),
    ]
    ids = [f[0] for f in frames]
    scores = np.array([f[1:] for f in frames], dtype=np.float32)
    walk = SequenceWalk(iter([SequenceInfo(name, 300 * count, count, 0) for name, count in sequences]))
    grouper = ChunkGrouper()
    summaries = []
    for block in (grouper.add(ids, scores), grouper.finish()):
        summaries += walk.add(block, chunk_is_virus(block.best_others, block.best_virus))
    summaries += walk.finish()
    thresholds = Thresholds()
    got = [(s.info.id, s.info.chunks, s.scored_chunks, s.viral_chunks, s.viral_fraction,
            None if s.best_virus_score is None else float(np.float32(s.best_virus_score)), s.call(thresholds))
           for s in summaries]
    oracle = [(*row[:5], None if row[5] is None else float(np.float32(row[5])), row[6])
              for row in _summary_oracle(sequences, frames, chunk_owner)]
    assert got == oracle
    assert [s.call(thresholds) for s in summaries] == ["virus", "others", "unscored", "virus"]

    out = tmp_path / "summary.tsv"
    with open(out, "w", newline="\n") as handle:
        SummaryWriter(handle, thresholds).add(summaries, [s.call(thresholds) for s in summaries])
    lines = out.read_text().splitlines()
    assert lines[0] == SUMMARY_HEADER
    assert lines[1] == "odd_chunk_7\t3\t2\t1\t0.5\t0.85\tvirus\t0.575\t900\t0\tpublished\t0.5\t1"
    assert lines[3] == "empty\t1\t0\t0\t0\t\tunscored\t\t300\t0\tpublished\t0.5\t1"


def test_embeddings_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    ids = ["seq1_chunk_1F1", "séquence|2_chunk_1R3", "x" * 300]
    dna = rng.standard_normal((3, 768)).astype(np.float32)
    protein = rng.standard_normal((3, 40)).astype(np.float32)
    models = {"dnabert": "zhihan1996/DNABERT-S sha256:abc", "esm": "esm2_t36_3B_UR50D"}
    out = tmp_path / "embeddings.h5"
    with EmbeddingsWriter(out, dna.shape[1], protein.shape[1], models) as writer:
        writer.append(ids, dna, protein)

    back = read_embeddings_h5(out)
    assert back.ids == ids and back.models == models
    assert back.dna.dtype == np.float32 and back.protein.dtype == np.float32
    np.testing.assert_array_equal(back.dna, dna)
    np.testing.assert_array_equal(back.protein, protein)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["embeddings.h5"]  # no temporary left behind


def test_embeddings_written_in_blocks_equal_one_shot(tmp_path):
    rng = np.random.default_rng(1)
    ids = [f"s{i}_chunk_1F1" for i in range(10)]
    dna, protein = rng.random((10, 8), dtype=np.float32), rng.random((10, 4), dtype=np.float32)
    with EmbeddingsWriter(tmp_path / "blocks.h5", 8, 4, {"esm": "tiny"}) as writer:
        for start, stop in [(0, 3), (3, 3), (3, 7), (7, 10)]:  # an empty block included
            writer.append(ids[start:stop], dna[start:stop], protein[start:stop])
    back = read_embeddings_h5(tmp_path / "blocks.h5")
    assert back.ids == ids
    np.testing.assert_array_equal(back.dna, dna)
    np.testing.assert_array_equal(back.protein, protein)


def test_failed_embeddings_write_leaves_nothing(tmp_path):
    with pytest.raises(ValueError):
        with EmbeddingsWriter(tmp_path / "e.h5", 8, 4, {}) as writer:
            writer.append(["a"], np.zeros((1, 8)), np.zeros((2, 4)))
    assert list(tmp_path.iterdir()) == []
