"""Run directory machinery with a deterministic hash scorer: plan, checkpoints, verification, aggregation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from doubles import HashScorer, HashScorerFactory, fake_model_files, hash_vector
from virnucpro.config import EngineConfig, EnvConfig, PredictConfig
from virnucpro.errors import RunStateError
from virnucpro.io.prep_files import FrameSource
from virnucpro.outputs.results import read_prediction_results
from virnucpro.run import aggregate, pending_shards, plan_run, plan_shards, run_shard, shard_status
from virnucpro.run.multigpu import run_shards
from virnucpro.run.options import RunOptions
from virnucpro.run.parts import list_parts
from virnucpro.run.rundir import PREDICTIONS, RunDir

OPTIONS = RunOptions(part_frames=8, block_frames=4, shard_tokens=3000)


@pytest.fixture
def env(tmp_path) -> EnvConfig:
    return EnvConfig(models_dir=tmp_path / "store", cpus=1, no_progress=True)


def config(tmp_path: Path, input_path: Path, models_tag: str = "a", **changes) -> PredictConfig:
    models = fake_model_files(tmp_path / f"models-{models_tag}", models_tag)
    base = dict(input=input_path, outdir=tmp_path / "run", models=models, engine=EngineConfig(device="cpu"))
    return PredictConfig(**{**base, **changes})


@pytest.fixture
def planned(tmp_path, env, golden_prep):
    cfg = config(tmp_path, golden_prep / "input.fasta")
    return cfg, plan_run(cfg, env, gpus=1, options=OPTIONS)


def run_all(cfg: PredictConfig) -> None:
    scorer = HashScorer()
    for index in pending_shards(cfg.outdir):
        run_shard(cfg.outdir, index, scorer, options=OPTIONS)


def prepared_ids(rundir: Path) -> list[str]:
    return [line[1:].strip() for line in open(rundir / "prep" / "identified_protein.faa") if line.startswith(">")]


def check_predictions(rundir: Path) -> None:
    """Every prepared frame exactly once, in prep order, with its own (hash) score: an independent oracle."""
    ids, scores, _labels = read_prediction_results(rundir / PREDICTIONS)
    assert ids == prepared_ids(rundir)
    assert len(set(ids)) == len(ids)
    expected = np.array([hash_vector(i, "score", 1)[0] for i in ids], dtype=np.float32)
    np.testing.assert_allclose(scores[:, 1], expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_plan_shards_cover_frames_once_and_balance_tokens(seed):
    costs = np.random.default_rng(seed).integers(20, 400, size=500)
    for min_shards, target in ((4, 10**9), (3, 5000), (600, 10**9)):
        shards = plan_shards(costs, min_shards, target)
        bounds = [(a, b) for a, b, _ in shards]
        assert bounds[0][0] == 0 and bounds[-1][1] == len(costs)
        assert all(a < b for a, b in bounds) and all(x[1] == y[0] for x, y in zip(bounds, bounds[1:]))
        assert [t for _, _, t in shards] == [int(costs[a:b].sum()) for a, b in bounds]
        expected = min(len(costs), max(min_shards, -(-int(costs.sum()) // target)))
        assert len(shards) == expected
        ideal = costs.sum() / len(shards)
        assert max(t for _, _, t in shards) <= ideal + costs.max()


def test_run_scores_every_frame_once_and_resumes_with_other_gpu_count(planned, env):
    cfg, manifest = planned
    assert len(manifest.shards) >= 4 and manifest.frames == len(FrameSource(cfg.outdir / "prep"))
    assert plan_run(cfg, env, gpus=8, options=OPTIONS) == manifest  # idempotent, plan fixed at creation
    run_all(cfg)
    report = aggregate(cfg.outdir, OPTIONS)
    assert report.frames == manifest.frames
    check_predictions(cfg.outdir)
    assert all(s.done and s.frames_done == s.frames for s in shard_status(cfg.outdir))
    assert (cfg.outdir / "complete.json").exists()


def test_torn_part_wrong_part_and_stale_temp_are_redone(planned):
    cfg, manifest = planned
    run_all(cfg)
    shard_dir = RunDir(cfg.outdir).shard_dir(1)
    parts = list_parts(shard_dir)
    assert len(parts) >= 2
    torn, renamed = parts[0], parts[1]
    torn.path.write_bytes(torn.path.read_bytes()[: torn.path.stat().st_size // 2])
    # a complete, readable part under another range's name: ids do not match the prepared frames
    renamed.path.rename(shard_dir / "part-{:012d}-{:012d}.h5".format(torn.start + 1, torn.start + 1 + renamed.stop - renamed.start))
    (shard_dir / ".part-000000000000-000000000008.h5.abc.tmp").write_bytes(b"half")
    (shard_dir / ".done").unlink()
    result = run_shard(cfg.outdir, 1, HashScorer(), options=OPTIONS)
    assert result.frames_scored == renamed.stop - torn.start
    assert not list(shard_dir.glob("*.tmp"))
    aggregate(cfg.outdir, OPTIONS)
    check_predictions(cfg.outdir)


def test_aggregate_refuses_incomplete_run_and_writes_nothing(planned):
    cfg, manifest = planned
    run_shard(cfg.outdir, 0, HashScorer(), options=OPTIONS)
    with pytest.raises(RunStateError, match=r"shards are not done \(1, 2"):
        aggregate(cfg.outdir, OPTIONS)
    assert not (cfg.outdir / PREDICTIONS).exists()
    assert pending_shards(cfg.outdir) == list(range(1, len(manifest.shards)))


def test_aggregate_finds_corrupt_part_in_done_shard_and_resume_fixes_it(planned):
    cfg, _ = planned
    run_all(cfg)
    victim = list_parts(RunDir(cfg.outdir).shard_dir(2))[0].path
    victim.write_bytes(b"\0" * 100)
    with pytest.raises(RunStateError, match="shard-0002"):
        aggregate(cfg.outdir, OPTIONS)
    assert not (cfg.outdir / PREDICTIONS).exists()
    assert pending_shards(cfg.outdir) == [2]
    run_all(cfg)
    aggregate(cfg.outdir, OPTIONS)
    check_predictions(cfg.outdir)


@pytest.mark.parametrize("change, message", [
    (dict(models_tag="b"), "esm model differs: manifest has .*models-a/a/esm.bin.*now .*models-b/b/esm.bin"),
    (dict(chunk_length=300), "chunk length differs: manifest has 500, now 300"),
    (dict(save_embeddings=True), "--save-embeddings differs"),
    (dict(input="other"), "input differs"),
])
def test_resume_with_other_settings_is_refused_unless_forced(planned, env, tmp_path, change, message):
    cfg, manifest = planned
    run_all(cfg)
    change = dict(change)
    tag = change.pop("models_tag", "a")
    if change.get("input") == "other":
        change["input"] = tmp_path / "other.fasta"
        change["input"].write_text(Path(cfg.input).read_text().replace("A", "C", 1))
    other = config(tmp_path, change.pop("input", cfg.input), tag, **change)
    with pytest.raises(RunStateError, match=message):
        plan_run(other, env, gpus=1, options=OPTIONS)
    assert pending_shards(cfg.outdir) == []  # nothing was touched
    forced = config(tmp_path, other.input, tag, **{**change, "force_restart": True})
    plan_run(forced, env, gpus=1, options=OPTIONS)
    assert pending_shards(cfg.outdir) == list(range(len(plan_run(other, env, options=OPTIONS).shards)))


def test_spawned_workers_share_the_shard_queue(planned, env):
    cfg, manifest = planned
    run_shard(cfg.outdir, 0, HashScorer(), options=OPTIONS)  # one shard already done before the launch
    scored = run_shards(cfg.outdir, cfg, env, devices=["cuda:0", "cuda:1"], scorer_factory=HashScorerFactory(),
                        options=OPTIONS)
    assert scored == list(range(1, len(manifest.shards)))
    aggregate(cfg.outdir, OPTIONS)
    check_predictions(cfg.outdir)
    events = [json.loads(line) for line in open(cfg.outdir / "telemetry.jsonl")]
    assert len({e["pid"] for e in events if e["event"] == "shard_done"}) >= 1
    assert all(e["frames_per_s"] > 0 for e in events if e["event"] == "part")
