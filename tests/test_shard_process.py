"""One shard in a process of its own (run.shard_process.score_shard): what `virnucpro shard` and a SLURM array
task run. Model files and precision come from the run's manifest, whatever the caller's engine says."""

from __future__ import annotations

from dataclasses import replace

import h5py
import numpy as np
import pytest

from doubles import HashScorer, fake_model_files
from virnucpro.cli import main
from virnucpro.config import EngineConfig, EnvConfig, PredictConfig
from virnucpro.run import pending_shards, plan_run
from virnucpro.run.options import RunOptions
from virnucpro.run.parts import list_parts
from virnucpro.run.rundir import RunDir
from virnucpro.run.shard_process import score_shard

OPTIONS = RunOptions(part_frames=8, block_frames=4, shard_tokens=3000)
RUN_PRECISION = "fp32"  # what a run planned on the CPU records


@pytest.fixture
def env(tmp_path) -> EnvConfig:
    return EnvConfig(models_dir=tmp_path / "store", cpus=1, no_progress=True)


@pytest.fixture
def planned(tmp_path, env, golden_prep) -> PredictConfig:
    cfg = PredictConfig(input=golden_prep / "input.fasta", outdir=tmp_path / "run",
                        models=fake_model_files(tmp_path / "models"), engine=EngineConfig(device="cpu"))
    assert plan_run(cfg, env, gpus=1, options=OPTIONS).identity.precision == RUN_PRECISION
    return cfg


class RecordingFactory:
    """Hash scorers; remembers the engine configuration each was asked for."""

    def __init__(self):
        self.engines: list[EngineConfig] = []

    def __call__(self, engine: EngineConfig) -> HashScorer:
        self.engines.append(engine)
        return HashScorer()


def test_a_submissions_engine_keeps_its_kernels_but_takes_the_runs_precision(planned, env):
    factory = RecordingFactory()
    submitted = EngineConfig(device="cpu", precision="bf16", workers=3, token_budget=777)
    result = score_shard(planned.outdir, 1, env, device="cpu", options=OPTIONS, engine=submitted,
                         scorer_factory=factory)
    cache = str(RunDir(planned.outdir).compile_cache)
    assert factory.engines == [replace(submitted, precision=RUN_PRECISION, compile_cache=cache)]
    assert not result.skipped and result.frames_scored > 0 and 1 not in pending_shards(planned.outdir)
    own_cache = replace(submitted, compile_cache="/elsewhere")  # a cache the submission chose is kept
    score_shard(planned.outdir, 2, env, device="cpu", options=OPTIONS, engine=own_cache, scorer_factory=factory)
    assert factory.engines[1] == replace(own_cache, precision=RUN_PRECISION)


def test_without_an_engine_the_manifests_defaults_are_used(planned, env):
    factory = RecordingFactory()
    score_shard(planned.outdir, 0, env, device="cpu", options=OPTIONS, scorer_factory=factory)
    cache = str(RunDir(planned.outdir).compile_cache)
    assert factory.engines == [EngineConfig(device="cpu", precision=RUN_PRECISION, compile_cache=cache)]
    assert score_shard(planned.outdir, 0, env, device="cpu", options=OPTIONS, scorer_factory=factory).skipped


def test_the_shard_command_scores_one_shard_with_the_real_engine(planned, capsys):
    assert main(["shard", str(planned.outdir), "--index", "0", "--device", "cpu"]) == 0
    assert "shard 0: " in capsys.readouterr().err and pending_shards(planned.outdir)[0] == 1
    parts = list_parts(RunDir(planned.outdir).shard_dir(0))
    assert parts and all(np.isfinite(part_scores(ref.path)).all() for ref in parts)
    assert main(["shard", str(planned.outdir), "--index", "0", "--device", "cpu"]) == 0
    assert "shard 0: already done" in capsys.readouterr().err


def part_scores(path) -> np.ndarray:
    with h5py.File(path, "r") as handle:
        return handle["scores"][:]
