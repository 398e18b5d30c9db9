"""`virnucpro status` (issue 15.10): frames done between checkpoints from the scoring process's heartbeat, liveness
(running / stopped at T), tokens/s and ETA; never "complete" while a shard is not done. And the CPU engine hands
each block on as soon as it is computed, so progress moves block by block."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from doubles import HashScorer, fake_model_files
from virnucpro.cli import main
from virnucpro.config import EngineConfig, EnvConfig, PredictConfig
from virnucpro.errors import RunStateError
from virnucpro.run import aggregate, plan_run, run_shard
from virnucpro.run import telemetry
from virnucpro.run.options import RunOptions
from virnucpro.run.parts import list_parts
from virnucpro.run.rundir import HEARTBEAT, RunDir
from virnucpro.run.status import is_complete, run_status

# one shard; no part before the shard's end, so only the heartbeat knows how far scoring got
OPTIONS = RunOptions(part_frames=100_000, part_seconds=1000, block_frames=8, shard_tokens=10**9)


@pytest.fixture
def planned(tmp_path, golden_prep) -> PredictConfig:
    cfg = PredictConfig(input=golden_prep / "input.fasta", outdir=tmp_path / "run",
                        models=fake_model_files(tmp_path / "models"), engine=EngineConfig(device="cpu"))
    plan_run(cfg, EnvConfig(models_dir=tmp_path / "store", cpus=1, no_progress=True), gpus=1, options=OPTIONS)
    return cfg


class ProbingScorer:
    """The hash scorer, `delay_s` per block; after block `at` it records what `status` says meanwhile."""

    def __init__(self, rundir: Path, delay_s: float, at: int):
        self.rundir, self.delay_s, self.at = rundir, delay_s, at
        self.seen = None
        self.stats = HashScorer().stats

    def score_range(self, source, start, stop, **options):
        for number, block in enumerate(HashScorer().score_range(source, start, stop, **options), start=1):
            yield block
            time.sleep(self.delay_s)
            if number == self.at:
                time.sleep(0.2)  # two more heartbeats
                self.seen = run_status(self.rundir)


def test_status_while_scoring_counts_frames_before_the_first_part_and_estimates(planned, monkeypatch):
    """`status` said "pending 0/N" until the first part landed and had no ETA."""
    monkeypatch.setattr(telemetry, "HEARTBEAT_SECONDS", 0.05)
    scorer = ProbingScorer(planned.outdir, delay_s=0.05, at=5)
    run_shard(planned.outdir, 0, scorer, options=OPTIONS)
    seen = scorer.seen
    assert seen.state == "running" and "shard 0: pid" in seen.detail
    assert seen.frames_checkpointed == 0 and seen.frames_done == 5 * OPTIONS.block_frames
    assert seen.shards[0].state == "running"
    beat = seen.shards[0].heartbeat
    # ESM tokens of the frames scored, per second of scoring: bounded by the scorer's own pace
    assert 0 < beat["tokens_per_s"] <= seen.tokens * 40 / seen.frames / 0.05
    assert seen.eta_seconds == pytest.approx((seen.tokens - seen.tokens * seen.frames_done / seen.frames)
                                             / seen.tokens_per_s)
    after = run_status(planned.outdir)
    assert after.shards[0].state == "done" and after.frames_done == after.frames and after.eta_seconds is None


def test_a_run_whose_scoring_process_died_is_stopped_not_running(planned, capsys):
    """A killed run looked exactly like a running one."""
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    shard_dir = RunDir(planned.outdir).shard_dir(0)
    shard_dir.mkdir(parents=True, exist_ok=True)
    import socket

    (shard_dir / HEARTBEAT).write_text(json.dumps({
        "time": time.time() - 3, "host": socket.gethostname(), "pid": int(finished.stdout), "shard": 0,
        "state": "scoring", "frames_done": 40, "frames_checkpointed": 0, "tokens_per_s": 1000.0}))
    status = run_status(planned.outdir)
    assert status.state == "stopped" and "no live process; last activity" in status.detail
    assert status.frames_done == 0 and status.eta_seconds is None  # unsaved frames of a dead process are lost
    assert main(["status", str(planned.outdir)]) == 0
    text = capsys.readouterr().out
    assert "stopped (no live process; last activity" in text and "rerun the same command" in text


def test_status_is_never_complete_while_a_shard_is_not_done(planned, capsys):
    """After a failed aggregation, status said "complete" and "partial" at once."""
    run_shard(planned.outdir, 0, HashScorer(), options=OPTIONS)
    aggregate(planned.outdir, OPTIONS)
    assert is_complete(planned.outdir) and run_status(planned.outdir).state == "complete"
    victim = list_parts(RunDir(planned.outdir).shard_dir(0))[0].path
    victim.write_bytes(b"\0" * 64)
    with pytest.raises(RunStateError):
        aggregate(planned.outdir, OPTIONS)
    status = run_status(planned.outdir)
    assert not is_complete(planned.outdir) and status.state == "stopped" and not status.complete
    assert main(["status", str(planned.outdir)]) == 0
    text = capsys.readouterr().out
    assert "complete" not in text.replace(str(planned.outdir), "") and "stopped" in text
    assert main(["status", str(planned.outdir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["complete"] is False


def test_a_heartbeat_beats_while_a_long_block_computes(tmp_path, monkeypatch):
    monkeypatch.setattr(telemetry, "HEARTBEAT_SECONDS", 0.05)
    path = tmp_path / HEARTBEAT
    with telemetry.Heartbeat(path, 0, "cpu", frames_done=0):
        first = json.loads(path.read_text())["time"]
        time.sleep(0.4)  # no block finishes meanwhile
        assert json.loads(path.read_text())["time"] > first
    assert json.loads(path.read_text())["state"] == "done"


def test_the_cpu_engine_hands_each_block_on_before_computing_the_next(tmp_path, golden_prep):
    """On the CPU a finished block was handed on only after the next one was computed (one-block lookahead meant for
    the GPU's asynchronous queue): a kill in the first minutes lost everything."""
    from virnucpro.engine.scorer import Scorer
    from virnucpro.io.prep_files import FrameSource, build_index
    from virnucpro.prep.pipeline import run_prep

    run_prep(golden_prep / "input.fasta", tmp_path / "prep", 500)
    build_index(tmp_path / "prep")
    scorer = Scorer.load(fake_model_files(tmp_path / "models"), EngineConfig(device="cpu", workers=0),
                         EnvConfig(models_dir=tmp_path, cpus=1))
    blocks = scorer.score_range(FrameSource(tmp_path / "prep"), 0, 24, block_frames=4)
    first = next(blocks)
    assert len(first.ids) == 4 and scorer.stats.frames == 4  # nothing computed ahead
    assert sum(len(block.ids) for block in blocks) == 20


def test_status_while_the_input_is_still_being_prepared(tmp_path, capsys):
    from virnucpro.run.lock import hold_lock
    from virnucpro.run.rundir import claim

    run = RunDir(tmp_path / "run")
    claim(run)
    with hold_lock(run.lock, "predict", "run directory"):
        assert run_status(run.root).state == "preparing"
        assert main(["status", str(run.root)]) == 0
    assert "preparing (`predict` (pid" in capsys.readouterr().out
    assert run_status(run.root).state == "stopped"
