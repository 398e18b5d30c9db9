"""SIGKILL during the new aggregation steps (streaming a part, merging the sorted consensus, renaming the outputs)
and during `virnucpro call`; the next run of the same command gives exactly the uninterrupted outputs.

The real `virnucpro` command line in a subprocess, killed through tests/fault_runner.py at a named run event.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from finished_run import finished_run
from virnucpro.run import aggregate
from virnucpro.run.options import RunOptions

FAULT_RUNNER = Path(__file__).resolve().parent / "fault_runner.py"
OUTPUTS = ("prediction_results.txt", "prediction_results_highestscore.csv", "sequence_summary.tsv",
           "viral_sequences.fasta", "nonfinite_frames.tsv", "calls.json")
SORT_ROWS = "7"  # the consensus spills sorted runs to disk, so there is a merge to be killed in


def virnucpro(argv: list[str], kill: str | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, str(FAULT_RUNNER), "--kill-at", kill, "--"] if kill else [sys.executable, "-m", "virnucpro"]
    return subprocess.run(command + argv, env={**os.environ, "VIRNUCPRO_SORT_ROWS": SORT_ROWS},
                          capture_output=True, text=True, timeout=120)


def outputs(rundir: Path) -> dict[str, bytes]:
    texts = {name: (rundir / name).read_bytes() for name in OUTPUTS}
    texts["calls.json"] = b"\n".join(line for line in texts["calls.json"].splitlines() if b'"updated"' not in line)
    return texts


@pytest.fixture(scope="module")
def scored(tmp_path_factory, golden_prep) -> tuple[Path, Path]:
    """A run with every shard scored and nothing aggregated, and a copy aggregated without interruption."""
    root = tmp_path_factory.mktemp("aggregate-kill")
    rundir = finished_run(root, golden_prep / "input.fasta", chunk_length=300)
    reference = root / "reference"
    shutil.copytree(rundir, reference)
    aggregate(reference, RunOptions(sort_rows=int(SORT_ROWS)))
    return rundir, reference


@pytest.mark.parametrize("kills", [["aggregate-part:3", "aggregate-merge:1", "aggregate-commit:3"],
                                   ["aggregate:2", "aggregate-commit:1", "aggregate-part:1"]])
def test_killed_aggregation_resumes_to_identical_outputs(scored, tmp_path, kills):
    rundir, reference = scored
    run = tmp_path / "run"
    shutil.copytree(rundir, run)
    for kill in kills:
        result = virnucpro(["aggregate", str(run)], kill)
        assert result.returncode == -signal.SIGKILL, (kill, result.stderr)
        assert not (run / "complete.json").exists()
    assert virnucpro(["aggregate", str(run)]).returncode == 0
    assert outputs(run) == outputs(reference)
    assert not list(run.glob(".*.tmp")) and not (run / ".aggregate-sort").exists()


def test_killed_call_is_finished_by_calling_again(scored, tmp_path):
    _, reference = scored
    expected, run = tmp_path / "expected", tmp_path / "run"
    shutil.copytree(reference, expected)
    shutil.copytree(reference, run)
    argv = ["--min-score", "0.8", "--min-chunks", "2", "--consensus-format", "broad"]
    assert virnucpro(["call", str(expected), *argv]).returncode == 0
    for kill in ("aggregate-merge:1", "aggregate-commit:2"):
        assert virnucpro(["call", str(run), *argv], kill).returncode == -signal.SIGKILL
    assert not (run / "complete.json").exists()  # a half-renamed set of outputs does not look complete
    assert virnucpro(["call", str(run), *argv]).returncode == 0
    assert outputs(run) == outputs(expected) != outputs(reference)
    assert (run / "complete.json").exists()
