"""Exact de-duplication: identical frames (nucleotides AND protein) scored once, fanned out to every occurrence.

Oracles: a plain-Python first-occurrence table of the prepared frames; a scorer whose scores are a hash of the
frame's text (tests/doubles.ContentHashScorer), so a de-duplicated run must equal a full one byte for byte; the
tiny real models, whose calls must equal a run without de-duplication.
"""

from __future__ import annotations

import os
import pickle
import random
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from doubles import ContentHashScorerFactory, fake_model_files
from virnucpro.config import EngineConfig, EnvConfig, PredictConfig
from virnucpro.io.prep_files import FrameSource, build_index
from virnucpro.io.mapped import scratch_array
from virnucpro.outputs.results import read_prediction_results
from virnucpro.run import aggregate, predict_run
from virnucpro.run.dedup import plan_dedup, unique_of_frames, unique_source
from virnucpro.run.manifest import Manifest
from virnucpro.run.options import RunOptions
from virnucpro.run.rundir import EMBEDDINGS, HIGHEST_SCORE, PREDICTIONS, SUMMARY, RunDir
from virnucpro.run.scored import iter_scored

FAULT_RUNNER = Path(__file__).resolve().parent / "fault_runner.py"
OPTIONS = RunOptions(part_frames=8, block_frames=4, shard_tokens=3000)


# ---------------------------------------------------------------- inputs


def write_prepared(folder: Path, frames: list[tuple[str, str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "identified_nucleotide.fasta", "w") as nt, open(folder / "identified_protein.faa", "w") as aa:
        for number, (nucleotide, protein) in enumerate(frames):
            nt.write(f">f{number}\n{nucleotide}\n")
            aa.write(f">f{number}\n{protein}\n")
    build_index(folder)


def random_frames(seed: int, distinct: int, total: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    pool = [("".join(rng.choice("ACGTN") for _ in range(rng.randint(3, 40))),
             "".join(rng.choice("ACDEFGHIKLMNPQRSTVWY") for _ in range(rng.randint(1, 13)))) for _ in range(distinct)]
    return [rng.choice(pool) for _ in range(total)]


def first_occurrences(frames: list) -> tuple[list[int], list[int]]:
    """(prepared index of each distinct frame, distinct ordinal of every frame): the plain-Python oracle."""
    first: dict = {}
    for index, frame in enumerate(frames):
        first.setdefault(frame, index)
    ordinal = {frame: number for number, frame in enumerate(sorted(first, key=first.get))}
    return sorted(first.values()), [ordinal[frame] for frame in frames]


def with_duplicate_reads(source: Path, target: Path, fraction: float, seed: int = 0) -> Path:
    """`source` plus exact copies of its reads under new ids, so that `fraction` of all reads are copies."""
    records = source.read_text().split(">")[1:]
    rng = random.Random(seed)
    copies = round(len(records) * fraction / (1 - fraction))
    extra = []
    for number in range(copies):
        header, _, body = rng.choice(records).partition("\n")
        extra.append(f"{header.split()[0]}_copy{number}\n{body}")
    shuffled = records + extra
    rng.shuffle(shuffled)
    target.write_text("".join(">" + record for record in shuffled))
    return target


# ---------------------------------------------------------------- the de-duplication step


@pytest.mark.parametrize("buckets", [1, 3, 16])
def test_distinct_frames_and_map_equal_the_first_occurrence_oracle(tmp_path, buckets):
    frames = random_frames(seed=buckets, distinct=60, total=900)
    write_prepared(tmp_path, frames)
    result = plan_dedup(tmp_path, buckets=buckets)
    firsts, ordinals = first_occurrences(frames)
    assert (result.frames, result.unique_frames, result.collisions) == (900, len(firsts), 0)
    view = unique_source(tmp_path)
    assert list(view.selection["frames"]) == firsts
    assert unique_of_frames(tmp_path).tolist() == ordinals
    got = view.read(0, len(view))
    assert [(f.nucleotide, f.protein) for f in got] == [frames[i] for i in firsts]
    assert [f.id for f in got] == [f"f{i}" for i in firsts]
    assert view.aa_lengths.tolist() == [len(frames[i][1]) for i in firsts]
    assert [f.id for f in view.read(5, 17)] == [f"f{i}" for i in firsts[5:17]]
    assert not list(tmp_path.glob(".*"))  # no temporaries left


@pytest.mark.parametrize("weak_hash", [lambda text: b"\0" * 16, lambda text: bytes([len(text) % 3]) * 16],
                         ids=["constant", "three-values"])
def test_hash_collisions_never_merge_frames_with_different_text(tmp_path, weak_hash):
    frames = random_frames(seed=7, distinct=40, total=400)
    write_prepared(tmp_path, frames)
    result = plan_dedup(tmp_path, hash_text=weak_hash, buckets=2)
    firsts, ordinals = first_occurrences(frames)
    assert result.unique_frames == len(firsts) and result.collisions > 0
    assert unique_of_frames(tmp_path).tolist() == ordinals


def test_the_key_is_nucleotides_and_protein_together(tmp_path):
    frames = [("ACGTTT", "TF"), ("ACGTTT", "T"), ("ACGTTT", "TF"), ("ACGTTA", "TF"), ("ACGTTT", "T")]
    write_prepared(tmp_path, frames)
    assert plan_dedup(tmp_path).unique_frames == 3
    assert unique_of_frames(tmp_path).tolist() == [0, 1, 0, 2, 1]


def test_no_frames_and_no_duplicates(tmp_path):
    write_prepared(tmp_path / "empty", [])
    assert plan_dedup(tmp_path / "empty").unique_frames == 0 and len(unique_source(tmp_path / "empty")) == 0
    frames = random_frames(seed=3, distinct=10_000, total=50)
    write_prepared(tmp_path / "distinct", frames)
    assert plan_dedup(tmp_path / "distinct").unique_frames == len(set(frames))


def test_selection_source_pickles_as_paths_and_reads_far_apart_frames(tmp_path):
    frames = [(f"ACG{'T' * (i % 7)}", "T") if i % 50 else ("GGG", "G") for i in range(400)]
    write_prepared(tmp_path, frames)
    plan_dedup(tmp_path)
    view = unique_source(tmp_path)
    blob = pickle.dumps(view)
    assert len(blob) < 1000  # paths only: workers reopen the memory maps
    again = pickle.loads(blob)
    assert again.read(0, len(again)) == view.read(0, len(view)) and len(view) == 8


# ---------------------------------------------------------------- whole runs


@pytest.fixture
def duplicated_input(tmp_path, golden_prep) -> Path:
    return with_duplicate_reads(golden_prep / "input.fasta", tmp_path / "dup.fasta", 0.3)


def run_with(tmp_path: Path, input_path: Path, name: str, dedup: bool, save_embeddings: bool = True):
    cfg = PredictConfig(input=input_path, outdir=tmp_path / name, models=fake_model_files(tmp_path / "models"),
                        engine=EngineConfig(device="cpu"), save_embeddings=save_embeddings, dedup=dedup)
    factory = ContentHashScorerFactory()
    predict_run(cfg, EnvConfig(models_dir=tmp_path / "store", cpus=1, no_progress=True),
                scorer_factory=factory, options=OPTIONS)
    return cfg.outdir, sum(scorer.stats.frames for scorer in factory.scorers)


def prepared_pairs(rundir: Path) -> list[tuple[str, str]]:
    source = FrameSource(rundir / "prep")
    return [(frame.nucleotide, frame.protein) for frame in source.read(0, len(source))]


def test_deduplicated_run_equals_the_full_run_byte_for_byte(tmp_path, duplicated_input):
    full, full_scored = run_with(tmp_path, duplicated_input, "full", dedup=False)
    dedup, dedup_scored = run_with(tmp_path, duplicated_input, "dedup", dedup=True)
    pairs = prepared_pairs(dedup)
    firsts, _ = first_occurrences(pairs)
    assert dedup_scored == len(firsts) < full_scored == len(pairs)  # each distinct frame computed once
    assert len(firsts) <= 0.75 * len(pairs)
    for name in (PREDICTIONS, HIGHEST_SCORE, SUMMARY):
        assert (dedup / name).read_bytes() == (full / name).read_bytes(), name
    with h5py.File(dedup / EMBEDDINGS) as got, h5py.File(full / EMBEDDINGS) as want:
        for name in ("ids", "dnabert", "esm"):
            assert np.array_equal(got[name][:], want[name][:]), name
    manifest = Manifest.load(RunDir(dedup).manifest)
    assert manifest.dedup and manifest.unique_frames == len(firsts) and manifest.frames == len(pairs)
    assert manifest.shards[-1][1] == len(firsts) and manifest.tokens < manifest.frame_tokens
    assert not Manifest.load(RunDir(full).manifest).dedup
    assert Manifest.load(RunDir(full).manifest).tokens == manifest.frame_tokens


def test_iter_scored_fans_out_every_frame_in_prep_order(tmp_path, duplicated_input, monkeypatch):
    import virnucpro.run.scored as scored

    monkeypatch.setattr(scored, "FANOUT_FRAMES", 7)  # many batches, each needing parts of several shards
    dedup, _ = run_with(tmp_path, duplicated_input, "dedup", dedup=True)
    run = RunDir(dedup)
    killed = scratch_array(dedup, scored._SCRATCH, np.int64, (4,))  # entered, never left: as a SIGKILL leaves it
    killed.__enter__()
    batches = list(iter_scored(run, Manifest.load(run.manifest), with_embeddings=True))
    ids = [frame_id for batch in batches for frame_id in batch.ids]
    assert ids == read_prediction_results(dedup / PREDICTIONS)[0] == FrameSource(run.prep).ids(0, len(ids))
    assert [batch.start for batch in batches] == list(range(0, len(ids), 7))
    pairs = prepared_pairs(dedup)
    scores = np.concatenate([batch.scores for batch in batches])
    by_text: dict = {}
    for pair, score in zip(pairs, scores):  # identical frames carry identical scores, distinct ones their own
        assert np.array_equal(by_text.setdefault(pair, score), score)
    assert not [path.name for path in dedup.iterdir() if path.name.endswith(".tmp")]


def test_calls_with_the_tiny_real_models_equal_a_run_without_dedup(tmp_path, duplicated_input):
    from virnucpro.run.multigpu import ScorerFactory
    from virnucpro.testing.demo import make_demo_models

    models = make_demo_models(tmp_path / "models")
    env = EnvConfig(models_dir=tmp_path / "store", cpus=1, no_progress=True)
    outputs = {}
    for dedup in (False, True):
        cfg = PredictConfig(input=duplicated_input, outdir=tmp_path / f"run-{dedup}", models=models,
                            engine=EngineConfig(device="cpu"), dedup=dedup)
        predict_run(cfg, env, scorer_factory=ScorerFactory(models, env), options=RunOptions(part_frames=16))
        outputs[dedup] = read_prediction_results(cfg.outdir / PREDICTIONS)
    (ids, scores, labels), (ids_d, scores_d, labels_d) = outputs[False], outputs[True]
    assert ids_d == ids and labels_d == labels
    np.testing.assert_allclose(scores_d, scores, rtol=0, atol=1e-5)  # other batches: last-bit differences only
    assert (tmp_path / "run-True" / HIGHEST_SCORE).read_text() == (tmp_path / "run-False" / HIGHEST_SCORE).read_text()
    summaries = [[line.split("\t") for line in (tmp_path / f"run-{d}" / SUMMARY).read_text().splitlines()]
                 for d in (True, False)]
    best = summaries[0][0].index("best_virus_score")
    for got, want in zip(*summaries, strict=True):  # every column but the best score, which may differ in its last bit
        assert got[:best] + got[best + 1:] == want[:best] + want[best + 1:]


# ---------------------------------------------------------------- interrupted


KNOBS = {"VIRNUCPRO_NO_PROGRESS": "1", "VIRNUCPRO_PART_FRAMES": "4", "VIRNUCPRO_BLOCK_FRAMES": "2",
         "VIRNUCPRO_SHARD_TOKENS": "2000", "VIRNUCPRO_PART_SECONDS": "1000"}
# planning: after the index, after hashing, after resolving the bucket, before the manifest; then scoring and the
# fanned-out aggregation
KILLS = ["index:1", "dedup:1", "dedup:2", "plan:1", "part:3", "aggregate:1", "aggregate:3"]


@pytest.mark.slow
def test_sigkill_in_dedup_planning_and_fanout_then_resume(tmp_path, duplicated_input):
    from virnucpro.testing.demo import make_demo_models

    models = make_demo_models(tmp_path / "models")
    flags = ["--device", "cpu", "--save-embeddings", "--esm-model", models.esm, "--dnabert-model", models.dnabert,
             "--classifier", models.classifier]

    def predict(rundir: Path, kill: str | None = None, *extra: str) -> subprocess.CompletedProcess:
        command = [sys.executable, str(FAULT_RUNNER), "--kill-at", kill, "--"] if kill else [sys.executable, "-m", "virnucpro"]
        return subprocess.run([*command, "predict", str(duplicated_input), "-o", str(rundir), *flags, *extra],
                              env={**os.environ, **KNOBS}, capture_output=True, text=True, timeout=300)

    reference = tmp_path / "reference"
    assert predict(reference, None, "--no-dedup").returncode == 0
    rundir = tmp_path / "run"
    for kill in KILLS:
        result = predict(rundir, kill)
        assert result.returncode == -signal.SIGKILL, (kill, result.stderr)
    assert predict(rundir).returncode == 0
    assert Manifest.load(RunDir(rundir).manifest).dedup
    ids, scores, labels = read_prediction_results(rundir / PREDICTIONS)
    ref_ids, ref_scores, ref_labels = read_prediction_results(reference / PREDICTIONS)
    assert ids == ref_ids and labels == ref_labels
    np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=1e-5)
    with h5py.File(rundir / EMBEDDINGS) as got, h5py.File(reference / EMBEDDINGS) as want:
        assert list(got["ids"].asstr()[:]) == ref_ids
        np.testing.assert_allclose(got["esm"][:], want["esm"][:], rtol=0, atol=1e-5)
    assert not list(rundir.glob("**/*.tmp")) and not list(rundir.glob("**/.dedup-work"))
