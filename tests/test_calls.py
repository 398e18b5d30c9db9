"""`virnucpro call`: every output derived again from the stored scores, checked against independent oracles —
pandas over prediction_results.txt for the thresholds, the input FASTA record by record for
viral_sequences.fasta, the Broad port's own pandas code path for `--consensus-format broad`, a plain torch MLP
for `--classifier` re-scoring."""

from __future__ import annotations

import io
import json
import random
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from Bio import SeqIO

from doubles import HashScorerFactory
from finished_run import finished_run, write_fasta
from virnucpro import cli
from virnucpro.prep.chunking import chunk_id, chunk_starts
from virnucpro.run import aggregate
from virnucpro.run.rundir import HIGHEST_SCORE, PREDICTIONS, SUMMARY, VIRAL_FASTA

OUTPUTS = (PREDICTIONS, HIGHEST_SCORE, SUMMARY, VIRAL_FASTA, "nonfinite_frames.tsv", "report.html", "calls.json",
           "complete.json")


@pytest.fixture(scope="module")
def mixed_input(tmp_path_factory) -> Path:
    """Short reads, multi-chunk contigs (lowercase stretches), a header with a tab and a backslash."""
    rng = random.Random(7)
    records = []
    for i in range(60):
        length = rng.choice([rng.randint(40, 290), rng.randint(500, 3200)])
        sequence = "".join(rng.choice("CGCGCGAT") for _ in range(length))
        if i % 7 == 0:
            sequence = sequence[:30] + sequence[30:90].lower() + sequence[90:]
        records.append((f"r{i} sample=A\tlane\\2" if i == 3 else f"r{i} contig {i}", sequence))
    return write_fasta(tmp_path_factory.mktemp("input") / "mixed.fasta", records)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, mixed_input) -> Path:
    root = tmp_path_factory.mktemp("calls")
    rundir = finished_run(root, mixed_input, chunk_length=300, save_embeddings=True)
    aggregate(rundir)
    return rundir


@pytest.fixture
def run(base_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(base_run, copy)
    return copy


def call(*argv) -> int:
    return cli.main(["call", *map(str, argv)])


def snapshot(rundir: Path) -> dict:
    return {name: (rundir / name).read_bytes() for name in OUTPUTS if (rundir / name).exists()}


def chunk_owner(input_path: Path, chunk_length: int) -> dict[str, str]:
    """chunk id -> input id, from the input and the published chunk rule (not from virnucpro's tables)."""
    return {chunk_id(record.id, n): record.id for record in SeqIO.parse(input_path, "fasta")
            for n in range(1, len(chunk_starts(len(record.seq), chunk_length)) + 1)}


def pandas_calls(rundir: Path, input_path: Path, min_score, fraction, min_chunks) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per chunk, per sequence) recomputed from prediction_results.txt with pandas."""
    frames = pd.read_csv(rundir / PREDICTIONS, sep="\t")
    frames["chunk"] = frames["Sequence_ID"].str[:-2]
    chunks = frames.groupby("chunk", sort=True).agg(best1=("score1", "max"), best2=("score2", "max"))
    threshold = chunks["best1"] if min_score is None else min_score
    chunks["viral"] = chunks["best2"].astype(np.float32) >= np.float32(threshold) if min_score is not None \
        else chunks["best2"] >= chunks["best1"]
    chunks["sequence"] = chunks.index.map(chunk_owner(input_path, 300))
    per = chunks.groupby("sequence").agg(scored=("viral", "size"), viral=("viral", "sum"), best=("best2", "max"),
                                         mean=("best2", "mean"))
    ids = [r.id for r in SeqIO.parse(input_path, "fasta")]
    per = per.reindex(ids)
    per["scored"] = per["scored"].fillna(0).astype(int)
    per["viral"] = per["viral"].fillna(0).astype(int)
    per["fraction"] = np.where(per["scored"] > 0, per["viral"] / per["scored"].clip(lower=1), 0.0)
    per["call"] = np.select([per["scored"] == 0, per["scored"] < min_chunks, per["fraction"] >= fraction],
                            ["unscored", "few_chunks", "virus"], "others")
    return chunks, per


@pytest.mark.parametrize("min_score, fraction, min_chunks", [(None, 0.5, 1), (0.7, 0.3, 1), (0.55, 0.5, 3),
                                                             (0.0, 1.0, 1), (1.0, 0.0, 2)])
def test_call_thresholds_equal_a_pandas_recomputation(run, mixed_input, min_score, fraction, min_chunks):
    args = [run, "--min-viral-fraction", fraction, "--min-chunks", min_chunks]
    args += ["--min-score", "published" if min_score is None else min_score]
    assert call(*args) == 0
    chunks, per = pandas_calls(run, mixed_input, min_score, fraction, min_chunks)
    consensus = pd.read_csv(run / HIGHEST_SCORE, sep="\t", keep_default_na=False)
    assert list(consensus["Modified_ID"]) == sorted(chunks.index) == list(chunks.index)
    assert list(consensus["Is_Virus"]) == list(chunks["viral"])
    summary = pd.read_csv(run / SUMMARY, sep="\t", keep_default_na=False, na_values=[""])
    assert list(summary["Sequence_ID"]) == list(per.index)
    assert list(summary["scored_chunks"]) == list(per["scored"])
    assert list(summary["viral_chunks"]) == list(per["viral"])
    assert list(summary["call"]) == list(per["call"])
    np.testing.assert_allclose(summary["viral_fraction"], per["fraction"], rtol=1e-5)
    np.testing.assert_allclose(summary["best_virus_score"], per["best"], rtol=1e-6)
    np.testing.assert_allclose(summary["mean_virus_score"], per["mean"], rtol=1e-5)  # printed to 6 digits
    expected_rule = "published" if min_score is None else repr(float(min_score))
    assert set(summary["min_score"].astype(str)) == {expected_rule}
    assert set(summary["min_viral_fraction"]) == {fraction} and set(summary["min_chunks"]) == {min_chunks}
    frames = pd.read_csv(run / PREDICTIONS, sep="\t")
    virus = frames["score2"] > frames["score1"] if min_score is None else frames["score2"].astype(np.float32) >= np.float32(min_score)
    assert list(frames["Prediction"]) == list(np.where(virus, "virus", "others"))
    recorded = json.loads((run / "calls.json").read_text())
    assert (recorded["min_score"], recorded["min_viral_fraction"], recorded["min_chunks"]) == (min_score, fraction, min_chunks)
    assert json.loads((run / "manifest.json").read_text())["call_settings"] == "calls.json"


def test_call_with_the_published_defaults_gives_back_the_original_outputs(run, base_run):
    assert call(run, "--min-score", "0.9", "--min-chunks", "2", "--consensus-format", "broad") == 0
    assert (run / HIGHEST_SCORE).read_bytes() != (base_run / HIGHEST_SCORE).read_bytes()
    assert call(run, "--min-score", "published", "--min-chunks", "1", "--consensus-format", "published") == 0
    for name in (PREDICTIONS, HIGHEST_SCORE, SUMMARY, VIRAL_FASTA):
        assert (run / name).read_bytes() == (base_run / name).read_bytes(), name


def test_recorded_settings_are_kept_by_a_later_call_and_aggregate(run):
    assert call(run, "--min-score", "0.8") == 0
    assert call(run, "--min-chunks", "2") == 0
    settings = json.loads((run / "calls.json").read_text())
    assert settings["min_score"] == 0.8 and settings["min_chunks"] == 2
    before = (run / SUMMARY).read_bytes()
    aggregate(run)
    assert (run / SUMMARY).read_bytes() == before


@pytest.mark.parametrize("argv, message", [
    (["--min-score", "1.5"], "--min-score: must be a number from 0 to 1"),
    (["--min-score", "abc"], "--min-score: must be a number from 0 to 1"),
    (["--min-score", "nan"], "--min-score: must be a number from 0 to 1"),
    (["--min-viral-fraction", "-0.1"], "--min-viral-fraction: must be a number from 0 to 1"),
    (["--min-chunks", "0"], "--min-chunks: must be a whole number of at least 1"),
    (["--min-chunks", "1.5"], "--min-chunks: must be a whole number"),
    (["--min-viral-fraction", "half"], "--min-viral-fraction: must be a number"),
])
def test_bad_thresholds_are_one_line_errors_that_change_nothing(run, capsys, argv, message):
    before = snapshot(run)
    assert call(run, *argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("virnucpro: error: ") and message in err[0]
    assert snapshot(run) == before


def test_an_incomplete_run_is_refused_and_nothing_changes(run, capsys):
    (run / "shards" / "shard-0001" / ".done").unlink()
    before = snapshot(run)
    assert call(run, "--min-score", "0.9") == 4
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "cannot aggregate" in last and "not done (1)" in last
    assert snapshot(run) == before


def test_viral_fasta_holds_exactly_the_viral_input_records(run, mixed_input):
    for min_score in ("published", "0.6"):
        assert call(run, "--min-score", min_score, "--min-viral-fraction", "0.4") == 0
        summary = pd.read_csv(run / SUMMARY, sep="\t", keep_default_na=False)
        viral = list(summary.loc[summary["call"] == "virus", "Sequence_ID"])
        assert viral, "the test needs some viral sequences"
        originals = {record.id: record for record in SeqIO.parse(mixed_input, "fasta")}
        written = list(SeqIO.parse(run / VIRAL_FASTA, "fasta"))
        assert [record.id for record in written] == viral
        for record in written:
            assert record.description == originals[record.id].description  # the original header, tab included
            assert str(record.seq) == str(originals[record.id].seq)  # stitched chunks, original case


def port_consensus(frame_ids: list[str], scores: np.ndarray) -> bytes:
    """What the Broad port writes: its prediction_results.txt (`.item()` floats), pandas read, dict grouping in
    order of first appearance, a DataFrame to_csv (virnucpro-broad, virnucpro/pipeline/prediction.py)."""
    text = "Sequence_ID\tPrediction\tscore1\tscore2\n" + "".join(
        f"{i}\t{'virus' if s2 > s1 else 'others'}\t{float(s1)}\t{float(s2)}\n" for i, (s1, s2) in zip(frame_ids, scores))
    df = pd.read_csv(io.StringIO(text), sep="\t")
    grouped: dict[str, list] = {}
    for seq_id, s0, s1 in zip(df["Sequence_ID"], df["score1"], df["score2"]):
        key = seq_id[:-2] if seq_id.endswith(("F1", "F2", "F3", "R1", "R2", "R3")) else seq_id
        grouped.setdefault(key, []).append((s0, s1))
    rows = [{"Modified_ID": key, "Is_Virus": max(s[1] for s in v) >= max(s[0] for s in v),
             "max_score_0": max(s[0] for s in v), "max_score_1": max(s[1] for s in v)} for key, v in grouped.items()]
    return pd.DataFrame(rows).to_csv(sep="\t", index=False).encode()


def stored_scores(rundir: Path) -> tuple[list[str], np.ndarray]:
    ids, scores = [], []
    for part in sorted(rundir.glob("shards/*/part-*.h5")):
        with h5py.File(part) as handle:
            ids += list(handle["ids"].asstr()[:])
            scores.append(handle["scores"][:])
    return ids, np.concatenate(scores)


def test_broad_consensus_equals_the_ports_pandas_groupby(run):
    assert call(run, "--consensus-format", "broad") == 0
    ids, scores = stored_scores(run)
    assert (run / HIGHEST_SCORE).read_bytes() == port_consensus(ids, scores)
    first = (run / HIGHEST_SCORE).read_text().splitlines()[:2]
    assert first[0] == "Modified_ID\tIs_Virus\tmax_score_0\tmax_score_1"
    assert first[1].split("\t")[1] in ("True", "False") and len(first[1].split("\t")[2]) > 10  # repr of a float


def test_broad_consensus_of_a_run_without_frames_is_what_pandas_writes(tmp_path):
    rundir = finished_run(tmp_path, write_fasta(tmp_path / "tiny.fasta", [("a", "AC"), ("b", "G")]))
    aggregate(rundir)
    assert call(rundir, "--consensus-format", "broad") == 0
    assert (rundir / HIGHEST_SCORE).read_bytes() == port_consensus([], np.zeros((0, 2), np.float32)) == b"\n"


def mlp_scores(path: Path, features: np.ndarray) -> np.ndarray:
    """The published MLP in plain torch ops from the saved module's weights (eval mode), softmax in fp32."""
    from virnucpro.testing.classifier_checkpoint import random_published_classifier

    model = random_published_classifier(features.shape[1], 16, seed=5)
    x = torch.from_numpy(features)
    hidden = x @ model.hidden_layer.weight.T + model.hidden_layer.bias
    bn = model.bn1
    hidden = (hidden - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    logits = torch.relu(hidden) @ model.output_layer.weight.T + model.output_layer.bias
    return torch.softmax(logits, dim=1).detach().numpy().astype(np.float32)


def test_classifier_rescoring_from_stored_embeddings(run, base_run, tmp_path):
    from doubles import DNA_DIM, PROTEIN_DIM
    from virnucpro.outputs.embeddings import read_embeddings_h5
    from virnucpro.testing.classifier_checkpoint import write_tiny_classifier

    classifier = write_tiny_classifier(tmp_path / "other.pth", DNA_DIM + PROTEIN_DIM, hidden_dim=16, seed=5)
    assert call(run, "--classifier", classifier) == 0
    stored = read_embeddings_h5(run / "embeddings.h5")
    expected = mlp_scores(classifier, np.concatenate([stored.dna, stored.protein], axis=1))
    frames = pd.read_csv(run / PREDICTIONS, sep="\t")
    assert list(frames["Sequence_ID"]) == stored.ids
    np.testing.assert_allclose(frames[["score1", "score2"]].to_numpy(), expected, rtol=0, atol=2e-6)
    settings = json.loads((run / "calls.json").read_text())
    assert settings["classifier"]["path"] == str(classifier.resolve()) and len(settings["classifier"]["sha256"]) == 64
    assert call(run, "--classifier", "run") == 0
    assert (run / PREDICTIONS).read_bytes() == (base_run / PREDICTIONS).read_bytes()


def test_bad_classifiers_are_refused_and_nothing_changes(run, tmp_path, capsys):
    from virnucpro.testing.classifier_checkpoint import write_tiny_classifier

    wrong = write_tiny_classifier(tmp_path / "wide.pth", 99, seed=1)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a model")
    before = snapshot(run)
    for path, code, message in [(wrong, 3, "takes 99 features"), (garbage, 3, "garbage.pth"),
                                (tmp_path / "missing.pth", 3, "not found")]:
        assert call(run, "--classifier", path) == code
        assert message in capsys.readouterr().err.strip().splitlines()[-1]
        assert snapshot(run) == before


def test_classifier_needs_a_run_with_embeddings(tmp_path, golden_prep, capsys):
    rundir = finished_run(tmp_path, golden_prep / "input.fasta")
    aggregate(rundir)
    assert call(rundir, "--classifier", tmp_path / "any.pth") == 4
    assert "--save-embeddings" in capsys.readouterr().err.strip().splitlines()[-1]


def test_min_length_drops_short_sequences_at_prep_and_counts_them(tmp_path, mixed_input, caplog):
    rundir = finished_run(tmp_path, mixed_input, chunk_length=300, min_length=300)
    report = aggregate(rundir)
    lengths = {r.id: len(r.seq) for r in SeqIO.parse(mixed_input, "fasta")}
    summary = pd.read_csv(rundir / SUMMARY, sep="\t", keep_default_na=False)
    short = summary["length"] < 300
    assert list(summary["Sequence_ID"]) == list(lengths) and list(summary["length"]) == list(lengths.values())
    assert set(summary.loc[short, "call"]) == {"too_short"} and (summary.loc[short, "chunks"] == 0).all()
    assert "too_short" not in set(summary.loc[~short, "call"])
    assert report.dropped_sequences == short.sum() > 0
    assert json.loads((rundir / "complete.json").read_text())["dropped_sequences"] == short.sum()
    frames = pd.read_csv(rundir / PREDICTIONS, sep="\t")
    assert not set(frames["Sequence_ID"].str.rsplit("_chunk_", n=1).str[0]) & set(summary.loc[short, "Sequence_ID"])
    assert "shorter than --min-length 300 bp and were dropped" in (rundir / "report.html").read_text()


def test_predict_records_the_consensus_format(tmp_path, golden_prep):
    from doubles import fake_model_files
    from virnucpro.config import EngineConfig, EnvConfig, PredictConfig
    from virnucpro.run import predict_run

    env = EnvConfig(models_dir=tmp_path / "store", cpus=1, no_progress=True)
    cfg = PredictConfig(input=golden_prep / "input.fasta", outdir=tmp_path / "run",
                        models=fake_model_files(tmp_path / "models"), engine=EngineConfig(device="cpu"))
    predict_run(cfg, env, scorer_factory=HashScorerFactory(), consensus_format="broad")
    assert (cfg.outdir / HIGHEST_SCORE).read_text().startswith("Modified_ID\tIs_Virus\tmax_score_0\tmax_score_1\n")
    predict_run(cfg, env, scorer_factory=HashScorerFactory())  # resumed without the option: the recorded format
    assert json.loads((cfg.outdir / "calls.json").read_text())["consensus_format"] == "broad"
    assert (cfg.outdir / "report.html").exists()


def test_resume_with_another_min_length_is_refused(tmp_path, golden_prep):
    from doubles import fake_model_files
    from virnucpro.config import EngineConfig, EnvConfig, PredictConfig
    from virnucpro.errors import RunStateError
    from virnucpro.run import plan_run

    env = EnvConfig(models_dir=tmp_path / "store", cpus=1, no_progress=True)
    cfg = PredictConfig(input=golden_prep / "input.fasta", outdir=tmp_path / "run",
                        models=fake_model_files(tmp_path / "models"), engine=EngineConfig(device="cpu"), min_length=100)
    plan_run(cfg, env, gpus=1)
    with pytest.raises(RunStateError, match="--min-length differs: manifest has 100, now 0"):
        plan_run(PredictConfig(**{**cfg.__dict__, "min_length": 0}), env, gpus=1)


def test_a_run_prepared_without_the_sequence_table_is_refused_with_one_line(run, capsys):
    (run / "prep" / "sequences.tsv").unlink()
    before = snapshot(run)
    assert call(run, "--min-score", "0.9") == 4
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "sequences.tsv" in line and "missing" in line and "--force-restart" in line, line
    assert snapshot(run) == before
