"""SIGKILL `predict` at many moments, resume each time, and compare with an uninterrupted run; disk full;
refused resume with other models.

Runs the real `virnucpro predict` on CPU with tiny random-weight models in the real formats (killed through
tests/fault_runner.py, which hooks the run's event seam).
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest

from virnucpro.outputs.results import read_prediction_results
from virnucpro.run.rundir import EMBEDDINGS, HIGHEST_SCORE, PREDICTIONS, SUMMARY
from virnucpro.run.status import is_complete, pending_shards

FAULT_RUNNER = Path(__file__).resolve().parent / "fault_runner.py"
# Small parts and shards so a 124-frame input gives 8 shards, ~32 parts and ~62 blocks to be killed in.
KNOBS = {"VIRNUCPRO_NO_PROGRESS": "1", "VIRNUCPRO_PART_FRAMES": "4", "VIRNUCPRO_BLOCK_FRAMES": "2",
         "VIRNUCPRO_SHARD_TOKENS": "2000", "VIRNUCPRO_PART_SECONDS": "1000"}
# Kill points spread over planning and scoring (each resumed run dies at the next one)...
SCORING_KILLS = ["prep:1", "plan:1", "block:1", "part-write:1", "part:1", "block:3", "part-write:2",
                 "shard-done:1", "part:2", "block:2", "part-write:3", "part:1", "block:5", "part-write:1",
                 "shard-done:1", "part:3", "block:4", "part-write:2", "part:1", "block:1", "part-write:1",
                 "block:3"]
# ...then over aggregation (before each output file).
AGGREGATE_KILLS = ["aggregate:1", "aggregate:2", "aggregate:3", "aggregate:4"]


@dataclass
class Runner:
    input: Path
    models: Path

    def argv(self, rundir: Path, models_tag: str = "a") -> list[str]:
        base = self.models / "a"  # models_tag only swaps the ESM-2 checkpoint
        return ["predict", str(self.input), "-o", str(rundir), "--device", "cpu",
                "--save-embeddings", "--esm-model", str(self.models / models_tag / "esm2_t2_demo.pt"),
                "--dnabert-model", str(base / "dnabert-s-demo"), "--classifier", str(base / "500_model_demo.pth")]

    def run(self, rundir: Path, kill: str | None = None, file_size_limit: int | None = None,
            models_tag: str = "a", signal_name: str = "KILL",
            argv: list[str] | None = None) -> subprocess.CompletedProcess:
        """The real `python -m virnucpro predict` (or `argv`); with `kill`, through tests/fault_runner.py (SIGKILL, or
        `signal_name`, at EVENT:N)."""
        command = ([sys.executable, str(FAULT_RUNNER), "--kill-at", kill, "--signal", signal_name, "--"] if kill
                   else [sys.executable, "-m", "virnucpro"])
        return subprocess.run(command + (argv or self.argv(rundir, models_tag)), env={**os.environ, **KNOBS},
                              capture_output=True, text=True, timeout=120,
                              preexec_fn=_limit_file_size(file_size_limit) if file_size_limit else None)


def _limit_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def runner_and_reference(root: Path, input_path: Path) -> tuple[Runner, Path]:
    """A runner with models a and b under `root`, and its uninterrupted reference run."""
    from virnucpro.testing.demo import make_demo_models

    make_demo_models(root / "models" / "a", seed=0)
    make_demo_models(root / "models" / "b", seed=1)
    runner = Runner(input_path, root / "models")
    reference = root / "reference"
    result = runner.run(reference)
    assert result.returncode == 0, result.stderr
    return runner, reference


@pytest.fixture(scope="module")
def setup(tmp_path_factory, golden_prep):
    return runner_and_reference(tmp_path_factory.mktemp("kill"), golden_prep / "input.fasta")


def prepared_ids(rundir: Path) -> list[str]:
    return [line[1:].strip() for line in open(rundir / "prep" / "identified_protein.faa") if line.startswith(">")]


def assert_same_outputs(reference: Path, rundir: Path) -> None:
    ids, scores, labels = read_prediction_results(rundir / PREDICTIONS)
    ref_ids, ref_scores, ref_labels = read_prediction_results(reference / PREDICTIONS)
    assert ids == ref_ids == prepared_ids(rundir)  # every prepared frame exactly once, in prep order
    assert len(set(ids)) == len(ids)
    assert labels == ref_labels
    np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=1e-5)
    for name in (HIGHEST_SCORE, SUMMARY):
        assert (rundir / name).read_text() == (reference / name).read_text()
    with h5py.File(rundir / EMBEDDINGS) as got, h5py.File(reference / EMBEDDINGS) as want:
        assert list(got["ids"].asstr()[:]) == ids
        for name in ("dnabert", "esm"):
            np.testing.assert_allclose(got[name][:], want[name][:], rtol=0, atol=1e-5)


@pytest.mark.slow
def test_sigkill_at_many_moments_then_resume_gives_identical_outputs(setup, tmp_path):
    runner, reference = setup
    rundir = tmp_path / "run"
    killed, took_over = [], []
    for spec in SCORING_KILLS:
        if (rundir / "manifest.json").exists() and not pending_shards(rundir):
            break
        result = runner.run(rundir, kill=spec)
        assert result.returncode in (0, -signal.SIGKILL), result.stderr
        killed += [spec] if result.returncode == -signal.SIGKILL else []
        took_over.append("took over the lock of run directory" in result.stderr)
    assert not is_complete(rundir), "the scoring kills ran out of work: make the parts smaller"
    for spec in AGGREGATE_KILLS:
        result = runner.run(rundir, kill=spec)
        assert result.returncode == -signal.SIGKILL, result.stderr
        killed.append(spec)
    assert len(killed) >= 20, killed
    assert all(took_over[1:]), took_over  # each SIGKILL left the run's lock behind: stale, taken over
    final = runner.run(rundir)
    assert final.returncode == 0, final.stderr
    assert_same_outputs(reference, rundir)
    assert not list(rundir.glob("**/*.tmp"))


def test_disk_full_gives_one_line_error_and_a_resumable_run(setup, tmp_path):
    runner, reference = setup
    rundir = tmp_path / "run"
    assert runner.run(rundir, kill="block:1").returncode == -signal.SIGKILL  # planned, nothing scored yet
    full = runner.run(rundir, file_size_limit=4000)  # smaller than one checkpoint part
    assert full.returncode not in (0, -signal.SIGKILL, -signal.SIGXFSZ), full.stderr
    last = full.stderr.strip().splitlines()[-1]
    assert last.startswith("virnucpro: error: ") and "cannot write" in last and "resume" in last, full.stderr
    assert "Traceback" not in full.stderr
    assert not (rundir / PREDICTIONS).exists()
    resumed = runner.run(rundir)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_outputs(reference, rundir)


def test_resume_with_another_model_is_refused_naming_it(setup, tmp_path):
    runner, _reference = setup
    rundir = tmp_path / "run"
    assert runner.run(rundir, kill="part:2").returncode == -signal.SIGKILL
    before = sorted(p.name for p in rundir.glob("shards/*/*"))
    other = runner.run(rundir, models_tag="b")
    assert other.returncode == 4, other.stderr
    last = other.stderr.strip().splitlines()[-1]
    assert "cannot resume: " in last and "esm model differs: manifest has " in last, last
    assert "/a/esm2_t2_demo.pt" in last and "/b/esm2_t2_demo.pt" in last, last
    assert "--force-restart" in last
    assert sorted(p.name for p in rundir.glob("shards/*/*")) == before
