"""`virnucpro submit` on a real one-node SLURM (tests/slurm_cluster.py): array + dependent aggregation, requeue
mid-shard, hard kill + `submit --resume`, several arrays past the cluster's MaxArraySize (4 in CI), prep as a job
of its own (killed in de-duplication, bad input), `submit` killed between two arrays. Tiny random-weight models on
the CPU; the oracle is a local `predict` of the same input with the same shard plan, whose outputs must be
byte-identical.

Without SLURM (not root, no apt) these tests skip, unless VIRNUCPRO_REQUIRE_SLURM=1 (CI), where they fail.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from doubles import SlowScorerFactory
from fault_runner import KillAt
from slurm_cluster import CI_MAX_ARRAY_SIZE, SlurmUnavailable, start_cluster, stop_cluster
from virnucpro.config import EngineConfig, EnvConfig, PredictConfig
from virnucpro.run.manifest import Manifest
from virnucpro.run.multigpu import ScorerFactory
from virnucpro.run.options import RunOptions
from virnucpro.run.parts import list_parts
from virnucpro.run.plan import plan_run
from virnucpro.run.rundir import COMPLETE, HIGHEST_SCORE, PREDICTIONS, RunDir
from virnucpro.run.status import pending_shards
from virnucpro.run.telemetry import read_events
from virnucpro.run.pipeline import predict_run
from virnucpro.slurm.jobs import JobsFile, PlanRequest, SlurmError
from virnucpro.slurm.pending import submit_pending
from virnucpro.slurm.prep_job import submit_prep_job
from virnucpro.slurm.profile import load_profile, with_overrides
from virnucpro.slurm.sizing import UNLIMITED_TOKENS, shard_size
from virnucpro.slurm.status import job_states
from virnucpro.slurm.submit import submit_shards

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
FAULT_RUNNER = REPO / "tests" / "fault_runner.py"
MANY_SHARDS = 7  # more than CI_MAX_ARRAY_SIZE: two arrays
INPUT = REPO / "tests" / "data" / "golden" / "prep" / "input.fasta"
CI_PROFILE = REPO / "slurm" / "ci" / "profile.toml"
OUTPUTS = (PREDICTIONS, HIGHEST_SCORE)
FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"}
# Small parts and blocks: shards get several checkpoint parts, so a task can be interrupted between two of them.
# Small shards: the input (~15k tokens) is planned as 3 shards (array tasks) by every run, oracles included.
RUN_KNOBS = {"VIRNUCPRO_PART_FRAMES": "8", "VIRNUCPRO_BLOCK_FRAMES": "8", "VIRNUCPRO_SHARD_TOKENS": "6000",
             "VIRNUCPRO_NO_PROGRESS": "1"}
BLOCK_DELAY_S = 3.0  # per scored block in interrupted tasks (~6 blocks a shard): time to requeue / kill mid-shard
WAIT_S = 300  # per wait: generous, a 2-core CI machine runs two tasks at once next to the test process


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    required = os.environ.get("VIRNUCPRO_REQUIRE_SLURM") == "1"
    try:
        cluster = start_cluster(tmp_path_factory.mktemp("slurm"))
    except SlurmUnavailable as error:
        if required:
            pytest.fail(f"VIRNUCPRO_REQUIRE_SLURM=1 but no local SLURM could be started: {error}")
        pytest.skip(f"no local SLURM cluster: {error}")
    yield cluster
    stop_cluster(cluster.workdir)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    from virnucpro.testing.demo import make_demo_models

    return make_demo_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def local_predict(tmp_path_factory, tiny_models) -> Path:
    """The oracle of an uninterrupted submission: `virnucpro predict` of the same input here, same run knobs
    (in a process of its own: the environment is read once per process, by cli.main)."""
    outdir = tmp_path_factory.mktemp("local") / "run"
    virnucpro("predict", INPUT, "-o", outdir, *model_flags(tiny_models), env={**os.environ, **RUN_KNOBS})
    assert len(Manifest.load(RunDir(outdir).manifest).shards) >= 3, "the tests need several shards"
    return outdir


@pytest.fixture(scope="session")
def local_predict_small_blocks(tmp_path_factory, tiny_models) -> Path:
    """The oracle of the interrupted runs: an uninterrupted local run on their scoring grid (SlowScorer: blocks of
    VIRNUCPRO_BLOCK_FRAMES from each shard start, so a resume at a part boundary stays on the grid). Packed-batch
    scores differ in the last float32 bit when blocks are cut elsewhere, so the grid must be the same."""
    from virnucpro.run.pipeline import predict_run

    outdir = tmp_path_factory.mktemp("local-small-blocks") / "run"
    env = EnvConfig.from_environ({**os.environ, **RUN_KNOBS})
    cfg = PredictConfig(input=INPUT, outdir=outdir, models=tiny_models, engine=EngineConfig(device="cpu"))
    predict_run(cfg, env, scorer_factory=SlowScorerFactory(ScorerFactory(tiny_models, env), 0.0),
                options=RunOptions.from_env(env))
    return outdir


@pytest.fixture(scope="session")
def local_predict_many_shards(tmp_path_factory, tiny_models) -> Path:
    """The oracle of `submit --shards 7`: an uninterrupted local run with the same 7-shard plan."""
    outdir = tmp_path_factory.mktemp("local-many") / "run"
    env = EnvConfig.from_environ({**os.environ, **RUN_KNOBS})
    cfg = PredictConfig(input=INPUT, outdir=outdir, models=tiny_models, engine=EngineConfig(device="cpu"))
    options = replace(RunOptions.from_env(env), shard_tokens=UNLIMITED_TOKENS)
    assert len(plan_run(cfg, env, gpus=1, min_shards=MANY_SHARDS, options=options).shards) == MANY_SHARDS
    predict_run(cfg, env, options=options)
    return outdir


@pytest.fixture
def slurm_env(slurm_cluster, monkeypatch):
    """Environment of the submitting process; sbatch exports it to the jobs (tests/ on PYTHONPATH: the jobs unpickle
    the test doubles injected into their tasks)."""
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), str(REPO / "tests"),
                                                                   os.environ.get("PYTHONPATH")])))
    for name, value in RUN_KNOBS.items():
        monkeypatch.setenv(name, value)
    return slurm_cluster


def model_flags(models) -> list[str]:
    return ["--device", "cpu", "--esm-model", models.esm, "--dnabert-model", models.dnabert,
            "--classifier", models.classifier]


def gpu_flags(cluster) -> list[str]:
    """The CI profile asks for one (fake) GPU per task; without fake GPUs on this node the request is dropped."""
    return [] if cluster.gpus else ["--gpus-per-task", "0"]


def ci_profile(cluster):
    return with_overrides(load_profile(CI_PROFILE), gpus_per_task=None if cluster.gpus else 0)


# ---------------------------------------------------------------- helpers


def virnucpro(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m virnucpro ARGS` in a process of its own (environment: this one's, SLURM_CONF included)."""
    done = subprocess.run([sys.executable, "-m", "virnucpro", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, f"virnucpro {' '.join(map(str, args))}: {done.stderr}"
    return done


def job_logs(rundir: Path) -> str:
    tails = []
    for path in sorted((rundir / "slurm" / "logs").glob("*.err")):
        tails.append(f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-15:]))
    return "\n".join(tails)


def wait_for(predicate, what: str, rundir: Path, cluster, timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1)
    pytest.fail(f"timed out waiting for {what}\n{job_logs(rundir)}\n{cluster.logs()}")


def wait_aggregation(rundir: Path, cluster, on_poll=lambda states: None) -> str:
    """The final state of the newest submission's aggregation job (waiting for it to be submitted at all)."""
    def finished():
        states = job_states(rundir)
        on_poll(states)
        state = states["aggregate"]["state"] if states["aggregate"] else None
        return state if state in FINISHED else None

    return wait_for(finished, "the aggregation job to finish", rundir, cluster)


def assert_outputs_equal(rundir: Path, reference: Path) -> None:
    for name in OUTPUTS:
        assert (rundir / name).read_bytes() == (reference / name).read_bytes(), name


def shard_starts(rundir: Path, shard: int) -> list[dict]:
    return [e for e in read_events(RunDir(rundir).telemetry) if e.get("event") == "shard_start" and e["shard"] == shard]


def plan_locally(rundir: Path, models) -> EngineConfig:
    engine = EngineConfig(device="cpu")
    cfg = PredictConfig(input=INPUT, outdir=rundir, models=models, engine=engine)
    env = EnvConfig.from_environ()
    manifest = plan_run(cfg, env, gpus=1, options=RunOptions.from_env(env))
    assert len(manifest.shards) >= 3, "the test needs several shards"
    return engine


def slow_scorers(models) -> SlowScorerFactory:
    """Scorers for the tasks to interrupt: the real engine, BLOCK_DELAY_S after every block (pickled into the jobs)."""
    return SlowScorerFactory(ScorerFactory(models, EnvConfig.from_environ()), BLOCK_DELAY_S)


def largest_shard(rundir: Path) -> int:
    shards = Manifest.load(RunDir(rundir).manifest).shards
    return max(range(len(shards)), key=lambda index: shards[index][1] - shards[index][0])


def running_with_parts(rundir: Path, shard: int, job_id: str):
    """True once the shard's task runs and has recorded at least one part (but is not finished)."""
    info = job_states(rundir)["shards"][str(shard)]
    parts = list_parts(RunDir(rundir).shard_dir(shard))
    return info["state"] == "RUNNING" and bool(parts) and shard in pending_shards(rundir)


def interrupt(cluster, command: tuple[str, ...], rundir: Path, shard: int, job: str) -> None:
    """Run `command job` until the task has been requeued. scancel retries while SLURM requeues the job ("Job can
    not be altered now") and would signal the restarted task again, so it is stopped once its work is done."""
    process = subprocess.Popen([*command, job], env=cluster.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: (job_states(rundir)["shards"][str(shard)]["restarts"] or 0) >= 1,
                 f"{' '.join(command)} to requeue {job}", rundir, cluster)
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=30)


# ---------------------------------------------------------------- tests


def test_submit_runs_the_array_then_the_aggregation(slurm_env, tiny_models, local_predict, tmp_path):
    rundir = tmp_path / "run"
    done = virnucpro("submit", INPUT, "-o", rundir, "--profile", CI_PROFILE, *gpu_flags(slurm_env),
                     *model_flags(tiny_models))
    submission = JobsFile.load(rundir).submissions[-1]
    assert sorted(submission.tasks) == list(range(len(Manifest.load(RunDir(rundir).manifest).shards)))
    assert submission.array_job_id in done.stdout and submission.aggregate_job_id in done.stdout

    def aggregation_waits(states):  # job_states reads the aggregation's state first, so this is race-free
        if states["aggregate"]["state"] in ("RUNNING", "COMPLETING", "COMPLETED"):
            assert all(info["state"] == "COMPLETED" for info in states["shards"].values()), states

    assert wait_aggregation(rundir, slurm_env, aggregation_waits) == "COMPLETED", job_logs(rundir)
    events = read_events(RunDir(rundir).telemetry)
    last_shard_done = max(e["time"] for e in events if e["event"] == "shard_done")
    aggregate_stage = next(e for e in events if e["event"] == "stage" and e["stage"] == "aggregate")
    assert aggregate_stage["time"] - aggregate_stage["seconds"] >= last_shard_done
    assert len({e["shard"] for e in events if e["event"] == "shard_done"}) == len(submission.tasks)
    assert_outputs_equal(rundir, local_predict)
    report = json.loads(virnucpro("status", rundir, "--json").stdout)
    assert report["complete"] and report["slurm"]["aggregate"]["state"] == "COMPLETED"
    assert {info["state"] for info in report["slurm"]["shards"].values()} == {"COMPLETED"}


INTERRUPTIONS = {
    # SLURM requeues the task itself (admin, node failure)
    "scontrol-requeue": ("scontrol", "requeue"),
    # preemption / time-limit warning: submitit catches USR2, calls ShardTask.checkpoint() and requeues the task
    "usr2-checkpoint": ("scancel", "--signal=USR2"),
}


@pytest.mark.parametrize("interruption", sorted(INTERRUPTIONS))
def test_requeued_task_resumes_from_its_recorded_parts(slurm_env, tiny_models, local_predict_small_blocks, tmp_path,
                                                       interruption):
    rundir = tmp_path / "run"
    engine = plan_locally(rundir, tiny_models)
    submission = submit_pending(rundir, engine, ci_profile(slurm_env), scorer_factory=slow_scorers(tiny_models))
    shard = largest_shard(rundir)
    job = submission.tasks[shard]
    wait_for(lambda: running_with_parts(rundir, shard, job), f"shard {shard} to record a part", rundir, slurm_env)
    with pytest.raises(SlurmError, match="still queued or running"):  # never two writers on one shard
        submit_pending(rundir, engine, ci_profile(slurm_env))
    recorded = {ref.path: ref.path.stat().st_ino for ref in list_parts(RunDir(rundir).shard_dir(shard))}
    interrupt(slurm_env, INTERRUPTIONS[interruption], rundir, shard, job)

    def release_requeue_hold(states):
        info = states["shards"][str(shard)]
        if info["state"] == "PENDING" and info["reason"] == "BeginTime":  # requeue hold (cred_expire)
            slurm_env.run("scontrol", "update", f"jobid={job}", "StartTime=now", check=False)

    assert wait_aggregation(rundir, slurm_env, release_requeue_hold) == "COMPLETED", job_logs(rundir)
    assert job_states(rundir)["shards"][str(shard)]["restarts"] == 1
    starts = shard_starts(rundir, shard)
    frames = RunDir(rundir).shard_dir(shard)
    assert len(starts) == 2 and starts[1]["resumed"], starts
    assert starts[1]["frames_missing"] < starts[0]["frames_missing"], starts
    assert {path: path.stat().st_ino for path in recorded} == recorded, f"recorded parts were rewritten in {frames}"
    assert_outputs_equal(rundir, local_predict_small_blocks)


def test_killed_task_is_rerun_alone_by_submit_resume(slurm_env, tiny_models, local_predict_small_blocks, tmp_path):
    rundir = tmp_path / "run"
    engine = plan_locally(rundir, tiny_models)
    profile = ci_profile(slurm_env)
    submission = submit_pending(rundir, engine, profile, scorer_factory=slow_scorers(tiny_models))
    shard = largest_shard(rundir)
    job = submission.tasks[shard]
    wait_for(lambda: running_with_parts(rundir, shard, job), f"shard {shard} to record a part", rundir, slurm_env)
    # Killed hard, as by the OOM killer: SIGKILL to the task's Python process (pid from its shard_start event).
    # (`scancel --signal=KILL` cancels the job instead: SIGTERM, which submitit ignores, then SIGKILL after KillWait.)
    os.kill(shard_starts(rundir, shard)[-1]["pid"], signal.SIGKILL)

    # the array fails, so the aggregation can never start: SLURM drops it (kill-on-invalid-dep)
    assert wait_aggregation(rundir, slurm_env) == "CANCELLED"
    wait_for(lambda: all(info["state"] in FINISHED for info in job_states(rundir)["shards"].values()),
             "every shard task to end", rundir, slurm_env)
    assert job_states(rundir)["shards"][str(shard)]["state"] == "FAILED"
    assert pending_shards(rundir) == [shard], "the killed task finished its shard within KillWait"

    # an aggregation forced to run now refuses: no results while a shard is incomplete
    submit_shards(rundir, [], engine, profile)
    assert wait_aggregation(rundir, slurm_env) == "FAILED"
    assert not any((rundir / name).exists() for name in (*OUTPUTS, COMPLETE))

    starts_before = {s: len(shard_starts(rundir, s)) for s in range(len(submission.tasks))}
    virnucpro("submit", "--resume", rundir)
    assert list(JobsFile.load(rundir).submissions[-1].tasks) == [shard]
    assert wait_aggregation(rundir, slurm_env) == "COMPLETED", job_logs(rundir)
    starts_after = {s: len(shard_starts(rundir, s)) for s in range(len(submission.tasks))}
    assert starts_after == {**starts_before, shard: starts_before[shard] + 1}
    assert shard_starts(rundir, shard)[-1]["resumed"]
    assert_outputs_equal(rundir, local_predict_small_blocks)


def assert_aggregation_after_every_shard(rundir: Path) -> None:
    events = read_events(RunDir(rundir).telemetry)
    last_shard_done = max(e["time"] for e in events if e["event"] == "shard_done")
    aggregate_stage = next(e for e in events if e["event"] == "stage" and e["stage"] == "aggregate")
    assert aggregate_stage["time"] - aggregate_stage["seconds"] >= last_shard_done


def test_arrays_past_max_array_size_run_as_one_run(slurm_env, tiny_models, local_predict_many_shards, tmp_path):
    rundir = tmp_path / "run"
    done = virnucpro("submit", INPUT, "-o", rundir, "--profile", CI_PROFILE, "--shards", MANY_SHARDS,
                     *gpu_flags(slurm_env), *model_flags(tiny_models))
    submission = JobsFile.load(rundir).submissions[-1]
    assert sorted(submission.tasks) == list(range(MANY_SHARDS)) and len(submission.array_job_ids) == 2
    per_array = Counter(job.split("_")[0] for job in submission.tasks.values())
    assert sorted(per_array.values()) == [MANY_SHARDS - CI_MAX_ARRAY_SIZE, CI_MAX_ARRAY_SIZE]
    assert submission.sizing["array_limit"] == CI_MAX_ARRAY_SIZE
    assert f"MaxArraySize={CI_MAX_ARRAY_SIZE}" in submission.sizing["array_limit_source"]
    assert "2 arrays" in done.stdout and f"{MANY_SHARDS} shards (--shards)" in done.stdout

    def aggregation_waits_for_both_arrays(states):
        if states["aggregate"]["state"] in ("RUNNING", "COMPLETING", "COMPLETED"):
            assert all(info["state"] == "COMPLETED" for info in states["shards"].values()), states

    assert wait_aggregation(rundir, slurm_env, aggregation_waits_for_both_arrays) == "COMPLETED", job_logs(rundir)
    assert_aggregation_after_every_shard(rundir)
    assert_outputs_equal(rundir, local_predict_many_shards)
    report = json.loads(virnucpro("status", rundir, "--json").stdout)
    assert report["complete"] and len(report["slurm"]["shards"]) == MANY_SHARDS


def test_submit_killed_between_two_arrays_resumes_as_one_run(slurm_env, tiny_models, local_predict_many_shards,
                                                             tmp_path):
    rundir = tmp_path / "run"
    killed = subprocess.run([sys.executable, str(FAULT_RUNNER), "--kill-at", "submit:1", "--", "submit", str(INPUT),
                             "-o", str(rundir), "--profile", str(CI_PROFILE), "--shards", str(MANY_SHARDS),
                             *gpu_flags(slurm_env), *map(str, model_flags(tiny_models))],
                            capture_output=True, text=True, timeout=600, cwd=REPO)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    first = JobsFile.load(rundir).submissions[-1]  # the array sbatch accepted is on record, nothing else
    assert sorted(first.tasks) == list(range(CI_MAX_ARRAY_SIZE)) and not first.aggregate_job_id
    assert job_states(rundir)["aggregate"] is None
    wait_for(lambda: all(info["state"] in FINISHED for info in job_states(rundir)["shards"].values()),
             "the first array to end", rundir, slurm_env)
    assert pending_shards(rundir) == list(range(CI_MAX_ARRAY_SIZE, MANY_SHARDS))
    virnucpro("submit", "--resume", rundir)
    assert sorted(JobsFile.load(rundir).submissions[-1].tasks) == list(range(CI_MAX_ARRAY_SIZE, MANY_SHARDS))
    assert wait_aggregation(rundir, slurm_env) == "COMPLETED", job_logs(rundir)
    assert_outputs_equal(rundir, local_predict_many_shards)


def prep_job_request(rundir: Path, models, input_path: Path = INPUT) -> PlanRequest:
    cfg = PredictConfig(input=input_path, outdir=rundir, models=models, engine=EngineConfig(device="cpu"))
    return PlanRequest(cfg, shard_size(load_profile(CI_PROFILE), 0, int(RUN_KNOBS["VIRNUCPRO_SHARD_TOKENS"])))


def wait_prep_job(rundir: Path, cluster) -> dict:
    return wait_for(lambda: (prep := job_states(rundir)["prep"]) and prep["state"] in FINISHED and prep,
                    "the prep job to end", rundir, cluster)


def test_prep_job_killed_in_dedup_is_resubmitted_then_plans_and_submits(slurm_env, tiny_models, local_predict,
                                                                        tmp_path):
    rundir = tmp_path / "run"
    profile = replace(ci_profile(slurm_env), prep_job="always")
    RunDir(rundir).create()
    first = submit_prep_job(rundir, prep_job_request(rundir, tiny_models), EngineConfig(device="cpu"), profile,
                            on_event=KillAt("dedup", 1))
    assert wait_prep_job(rundir, slurm_env)["state"] == "FAILED", job_logs(rundir)
    assert not RunDir(rundir).manifest.exists()
    text = virnucpro("status", rundir).stdout  # a run its prep job has not planned yet
    assert f"SLURM prep job: job {first.prep_job_id} FAILED" in text

    resumed = virnucpro("submit", "--resume", rundir)
    second = JobsFile.load(rundir).submissions[-1]
    assert second.prep_job_id and second.prep_job_id != first.prep_job_id and second.prep_job_id in resumed.stdout
    assert wait_aggregation(rundir, slurm_env) == "COMPLETED", job_logs(rundir)
    submissions = JobsFile.load(rundir).submissions
    assert [s.prep_job_id for s in submissions[:2]] == [first.prep_job_id, second.prep_job_id]
    assert submissions[-1].parent_job_id == second.prep_job_id  # the shards were submitted by the prep job
    assert sorted(submissions[-1].tasks) == list(range(len(Manifest.load(RunDir(rundir).manifest).shards)))
    assert_aggregation_after_every_shard(rundir)
    assert_outputs_equal(rundir, local_predict)
    report = json.loads(virnucpro("status", rundir, "--json").stdout)
    assert report["complete"] and report["slurm"]["prep"]["state"] == "COMPLETED"


def test_prep_job_on_bad_input_fails_with_one_line_and_writes_nothing(slurm_env, tiny_models, tmp_path):
    bad = tmp_path / "bad.fasta"
    text = INPUT.read_text()
    bad.write_text(text + ">" + text.split(">")[5])  # record 5 again, at the end: found late in the prep
    rundir = tmp_path / "run"
    done = virnucpro("submit", bad, "-o", rundir, "--profile", CI_PROFILE, "--prep-job", "always",
                     *gpu_flags(slurm_env), *model_flags(tiny_models))
    assert "prep job" in done.stdout
    prep = wait_prep_job(rundir, slurm_env)
    assert prep["state"] == "FAILED" and "duplicate record id" in prep["error"] and "\n" not in prep["error"]
    assert str(bad) in prep["error"]
    assert not RunDir(rundir).manifest.exists()
    assert not [p for p in (rundir / "prep").iterdir()], "prep files written by a failed prep"
    status = virnucpro("status", rundir).stdout
    assert "duplicate record id" in status
