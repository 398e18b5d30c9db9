"""SLURM profile parsing, CLI overrides and the sbatch scripts submitit renders from them (no cluster needed)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from doubles import fake_model_files
from submitit.slurm.slurm import _make_sbatch_string

from virnucpro.cli import build_parser, main
from virnucpro.commands.submit import profile_from_args
from virnucpro.config import EngineConfig, EnvConfig, PredictConfig
from virnucpro.errors import InputError
from virnucpro.run.plan import plan_run
from virnucpro.slurm.pending import refuse_active_jobs
from virnucpro.slurm.profile import (SlurmProfile, load_profile, parse_flat_toml, parse_sbatch_flags,
                                     profile_from_dict, task_memory, time_to_minutes, with_overrides)
from virnucpro.slurm.status import _keyed, expand_task_ids
from virnucpro.slurm.submit import (SlurmError, Submission, _ranges, aggregate_parameters, array_parameters,
                                    python_command, record_submission)

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the flat parser is used, nothing to compare it with
    tomllib = None
needs_tomllib = pytest.mark.skipif(tomllib is None, reason="Python 3.10 has no tomllib to compare with")

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "slurm" / "profile.toml"


def sbatch_flags(params: dict, tmp_path: Path, map_count: int | None = None) -> dict[str, str]:
    """Render with submitit itself and read back the #SBATCH lines: {flag: value or ""}."""
    text = _make_sbatch_string(command="true", folder=tmp_path, map_count=map_count, **params)
    flags = {}
    for line in text.splitlines():
        if line.startswith("#SBATCH --"):
            name, _, value = line[len("#SBATCH --"):].partition("=")
            flags[name] = shlex.split(value)[0] if value else ""
    return flags


# ---------------------------------------------------------------- the file


@needs_tomllib
def test_example_profile_flat_parser_agrees_with_tomllib():
    text = EXAMPLE.read_text()
    assert parse_flat_toml(text, EXAMPLE) == tomllib.loads(text)


@needs_tomllib
def test_example_profile_loads_with_its_documented_values():
    raw = tomllib.loads(EXAMPLE.read_text())
    profile = load_profile(EXAMPLE)
    assert {key: getattr(profile, key) for key in raw if key != "sbatch_flags"} == \
        {key: value for key, value in raw.items() if key != "sbatch_flags"}
    assert profile.sbatch_flags == tuple(raw["sbatch_flags"])


@needs_tomllib
def test_flat_parser_handles_comments_quotes_and_arrays(tmp_path):
    text = ('partition = "gpu#1"  # a comment\n'
            "account = 'lit\\eral'\n"
            "cpus_per_task = 4\n"
            "sbatch_flags = [\"--mail-type=END\", \"--comment=a b\"]\n"
            "\n# only a comment\n")
    assert parse_flat_toml(text, tmp_path / "p.toml") == tomllib.loads(text)


@pytest.mark.parametrize("text, problem", [
    ("[slurm]\npartition = 'x'\n", "flat TOML"),
    ("partition = 'a'\npartition = 'b'\n", "set twice"),
    ("partition = gpu\n", "cannot read value"),
])
def test_flat_parser_rejects_what_it_cannot_read(tmp_path, text, problem):
    with pytest.raises(InputError, match=problem) as error:
        parse_flat_toml(text, tmp_path / "p.toml")
    assert "p.toml" in str(error.value)


@pytest.mark.parametrize("values, problem", [
    ({"partiton": "gpu"}, "unknown key 'partiton'"),
    ({"cpus_per_task": "8"}, "key 'cpus_per_task'"),
    ({"time": "soon"}, "key 'time'"),
    ({"mem": "lots"}, "key 'mem'"),
    ({"sbatch_flags": ["mail-type=END"]}, "sbatch_flags"),
    ({"cpus_per_task": 0}, "at least 1"),
])
def test_bad_profile_values_name_the_file_and_key(values, problem):
    with pytest.raises(InputError, match=problem) as error:
        profile_from_dict(values, "site.toml")
    assert str(error.value).startswith("site.toml")


def test_missing_profile_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="cannot read SLURM profile"):
        load_profile(tmp_path / "nope.toml")


@pytest.mark.parametrize("text, minutes", [
    ("90", 90), ("1:30", 2), ("02:00:00", 120), ("2:00:30", 121), ("1-0", 1440), ("1-2:30", 1590),
    ("2-00:00:00", 2880),
])
def test_time_limits_in_every_slurm_form(text, minutes):
    assert time_to_minutes(text) == minutes


def test_overrides_win_and_sbatch_flags_add_up():
    base = SlurmProfile(partition="gpu", time="1:00:00", sbatch_flags=("--mail-type=END",))
    updated = with_overrides(base, partition="debug", time=None, sbatch_flags=["--reservation=r1"])
    assert (updated.partition, updated.time) == ("debug", "1:00:00")
    assert updated.sbatch_flags == ("--mail-type=END", "--reservation=r1")


def test_memory_defaults_from_cpus_unless_given():
    assert task_memory(SlurmProfile(mem="", cpus_per_task=8)) == "40G"
    assert task_memory(SlurmProfile(mem="100G")) == "100G"


# ---------------------------------------------------------------- rendered sbatch scripts


def test_array_script_asks_for_one_gpu_cpus_memory_and_throttles(tmp_path):
    profile = SlurmProfile(partition="gpu", account="proj", qos="high", time="12:00:00", gpus_per_task=1,
                           cpus_per_task=8, mem="64G", constraint="a100", max_running=3, signal_delay_s=300,
                           sbatch_flags=("--mail-type=END", "--exclusive"))
    flags = sbatch_flags(array_parameters(profile, "virnucpro-x", 10), tmp_path, map_count=10)
    assert flags["array"] == "0-9%3"
    assert flags["gres"] == "gpu:1" and flags["cpus-per-task"] == "8" and flags["mem"] == "64G"
    assert flags["time"] == "720" and flags["signal"] == "USR2@300"
    assert (flags["partition"], flags["account"], flags["qos"], flags["constraint"]) == ("gpu", "proj", "high", "a100")
    assert flags["mail-type"] == "END" and flags["exclusive"] == ""
    assert "dependency" not in flags


def test_array_without_throttle_runs_all_tasks_and_without_gpu_asks_none(tmp_path):
    profile = SlurmProfile(gpus_per_task=0, max_running=0, gpu_type="a100")
    flags = sbatch_flags(array_parameters(profile, "v", 7), tmp_path, map_count=7)
    assert flags["array"] == "0-6%7"
    assert "gres" not in flags and "partition" not in flags and "account" not in flags


def test_typed_gpu_request(tmp_path):
    flags = sbatch_flags(array_parameters(SlurmProfile(gpu_type="h100", gpus_per_task=2), "v", 2), tmp_path, 2)
    assert flags["gres"] == "gpu:h100:2"


def test_aggregation_script_waits_for_the_array_and_needs_no_gpu(tmp_path):
    profile = SlurmProfile(partition="gpu", aggregate_time="30", aggregate_cpus=2, aggregate_mem="8G",
                           sbatch_flags=("--mail-type=END",))
    flags = sbatch_flags(aggregate_parameters(profile, "v-aggregate", "4242"), tmp_path)
    assert flags["dependency"] == "afterok:4242" and flags["kill-on-invalid-dep"] == "yes"
    assert (flags["time"], flags["cpus-per-task"], flags["mem"]) == ("30", "2", "8G")
    assert "gres" not in flags and "array" not in flags and flags["mail-type"] == "END"
    assert "dependency" not in sbatch_flags(aggregate_parameters(profile, "v", ""), tmp_path)


def test_jobs_start_python_in_the_image_when_the_profile_names_one():
    assert python_command(SlurmProfile(image="/img/v p.sif")) == "apptainer exec --nv '/img/v p.sif' python"
    assert python_command(SlurmProfile()) == shlex.quote(sys.executable)


def test_sbatch_flag_list_forms():
    assert parse_sbatch_flags(["--mail-type=END", "--exclusive", "--comment", "a b"]) == \
        {"mail-type": "END", "exclusive": True, "comment": "a b"}


# ---------------------------------------------------------------- CLI


def test_submit_flags_override_the_profile_file():
    args = build_parser().parse_args(
        ["submit", "in.fa", "-o", "run", "--profile", str(EXAMPLE), "--partition", "debug", "--max-running", "2",
         "--gpus-per-task", "0", "--time", "30", "--image", "/x.sif", "--sbatch-flag=--mail-type=END",
         "--device", "cpu"])
    profile = profile_from_args(args)
    from_file = load_profile(EXAMPLE)
    assert (profile.partition, profile.max_running, profile.gpus_per_task, profile.time, profile.image) == \
        ("debug", 2, 0, "30", "/x.sif")
    assert profile.cpus_per_task == from_file.cpus_per_task and profile.mem == from_file.mem
    assert profile.sbatch_flags == from_file.sbatch_flags + ("--mail-type=END",)
    defaults = profile_from_args(build_parser().parse_args(["submit", "in.fa", "-o", "r"]))
    assert asdict(defaults) == asdict(SlurmProfile())


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_submit_runs_virnucpro_submit_with_its_real_flags():
    # Under `make test` the parent make's flags would make this one print "Entering/Leaving directory".
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    make = ["make", "--no-print-directory"]
    usage = subprocess.run([*make, "-s", "submit"], cwd=REPO, capture_output=True, text=True, timeout=60, env=env)
    assert usage.returncode == 2 and "usage: make submit INPUT=" in usage.stderr
    dry = subprocess.run([*make, "-n", "submit", "INPUT=/data/reads.fasta.gz", "PROFILE=slurm/ci/profile.toml",
                          "ARGS=--partition gpu --shards 4"], cwd=REPO, capture_output=True, text=True, timeout=60,
                         env=env)
    assert dry.returncode == 0, dry.stderr
    command = shlex.split(dry.stdout.splitlines()[-1])
    assert command[1:4] == ["-m", "virnucpro", "submit"]
    args = build_parser().parse_args(command[3:])
    assert (args.input, args.output, args.profile, args.partition, args.shards) == \
        ("/data/reads.fasta.gz", "reads-virnucpro", "slurm/ci/profile.toml", "gpu", 4)


# ---------------------------------------------------------------- status parsing


def test_array_records_expand_to_task_ids():
    pending = "JobId=3 ArrayJobId=3 ArrayTaskId=1-3%1 JobState=PENDING Reason=JobArrayTaskLimit Restarts=0"
    running = "JobId=4 ArrayJobId=3 ArrayTaskId=0 JobState=RUNNING Reason=None Restarts=1"
    single = "JobId=9 JobName=agg JobState=PENDING Reason=Dependency Restarts=0"
    fields = lambda line: dict(re.findall(r"(\S+?)=(\S*)", line))  # noqa: E731
    assert sorted(_keyed(fields(pending))) == ["3_1", "3_2", "3_3"]
    assert list(_keyed(fields(running))) == ["3_0"]
    assert list(_keyed(fields(single))) == ["9"]
    assert expand_task_ids("0,2-4%2") == [0, 2, 3, 4]
    assert _ranges([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"


# ---------------------------------------------------------------- `virnucpro status` of a submitted run

FAKE_SCONTROL = """#!/bin/sh
# fake `scontrol show job -o ID`: array 100 (task 0 done, task 1 running after a requeue), aggregation 101 waits
case "$4" in
  100) echo "JobId=100 ArrayJobId=100 ArrayTaskId=0 JobState=COMPLETED Reason=None Restarts=0 ExitCode=0:0"
       echo "JobId=102 ArrayJobId=100 ArrayTaskId=1 JobState=RUNNING Reason=None Restarts=1 ExitCode=0:0" ;;
  101) echo "JobId=101 JobName=agg JobState=PENDING Reason=Dependency Restarts=0 ExitCode=0:0" ;;
  *) echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1 ;;
esac
"""


@pytest.fixture
def planned_run(tmp_path, golden_prep) -> Path:
    """A planned run directory (no shard scored yet), as `virnucpro submit` leaves it before its jobs start."""
    cfg = PredictConfig(input=golden_prep / "input.fasta", outdir=tmp_path / "run",
                        models=fake_model_files(tmp_path / "models", "a"), engine=EngineConfig(device="cpu"))
    plan_run(cfg, EnvConfig(models_dir=tmp_path / "store", cpus=1, no_progress=True), gpus=1, min_shards=2)
    return cfg.outdir


def record_jobs(rundir: Path, submission: Submission) -> None:
    """RUNDIR/slurm/jobs.json as `virnucpro submit` leaves it."""
    record_submission(rundir, EngineConfig(device="cpu"), SlurmProfile(), submission)


def status_json(rundir: Path, capsys) -> dict:
    assert main(["status", str(rundir), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def with_fake_scontrol(monkeypatch, folder: Path, script: str | None) -> None:
    """PATH = only `folder`, holding a fake scontrol (or none: SLURM is not installed here)."""
    folder.mkdir()
    if script is not None:
        (folder / "scontrol").write_text(script)
        (folder / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", str(folder))


def test_status_of_a_local_run_has_no_slurm_section(planned_run, capsys, monkeypatch, tmp_path):
    with_fake_scontrol(monkeypatch, tmp_path / "bin", None)
    report = status_json(planned_run, capsys)
    assert report["slurm"] is None and report["complete"] is False and len(report["shards"]) >= 2
    assert main(["status", str(planned_run)]) == 0
    assert "SLURM" not in capsys.readouterr().out


def test_status_shows_the_recorded_jobs_states(planned_run, capsys, monkeypatch, tmp_path):
    record_jobs(planned_run, Submission("100", {0: "100_0", 1: "100_1"}, "101"))
    with_fake_scontrol(monkeypatch, tmp_path / "bin", FAKE_SCONTROL)
    slurm = status_json(planned_run, capsys)["slurm"]
    assert slurm["scontrol"] is True
    assert {shard: (info["job_id"], info["state"], info["restarts"]) for shard, info in slurm["shards"].items()} == \
        {"0": ("100_0", "COMPLETED", 0), "1": ("100_1", "RUNNING", 1)}
    assert (slurm["aggregate"]["state"], slurm["aggregate"]["reason"]) == ("PENDING", "Dependency")
    assert main(["status", str(planned_run)]) == 0
    text = capsys.readouterr().out
    assert "SLURM shard jobs: 1 completed, 1 running" in text
    assert "shard 1: job 100_1 RUNNING" in text and "SLURM aggregation: job 101 PENDING (Dependency)" in text


UNREACHABLE = """#!/bin/sh
echo "slurm_load_jobs error: Unable to contact slurm controller (connect failure)" >&2
exit 1
"""


@pytest.mark.parametrize("script, shown", [
    (None, "SLURM: scontrol not found on this machine"),
    (UNREACHABLE, "SLURM: cannot ask slurmctld (slurm_load_jobs error: Unable to contact slurm controller"),
])
def test_status_without_slurmctld_shows_the_progress_and_why(planned_run, capsys, monkeypatch, tmp_path, script,
                                                              shown):
    record_jobs(planned_run, Submission("100", {0: "100_0"}, "101"))
    with_fake_scontrol(monkeypatch, tmp_path / "bin", script)
    slurm = status_json(planned_run, capsys)["slurm"]
    assert slurm["scontrol"] is (script is not None) and slurm["shards"]["0"]["state"] == "UNKNOWN"
    assert main(["status", str(planned_run)]) == 0
    text = capsys.readouterr().out
    assert "frames done" in text and shown in text
    with pytest.raises(SlurmError, match="cannot check whether jobs of an earlier submission still run"):
        refuse_active_jobs(planned_run)  # `submit --resume` / `--force-restart` never guess


# ---------------------------------------------------------------- shard size, arrays, prep job (no cluster)


def startup_share(profile: SlurmProfile, tokens: int) -> float:
    """The published definition: start-up time over the whole task's time at the measured throughput."""
    return profile.startup_s / (profile.startup_s + tokens / profile.tokens_per_s)


def test_shard_size_keeps_start_up_under_its_share_and_says_why():
    from virnucpro.run.plan import plan_shards
    from virnucpro.slurm.sizing import describe_shards, shard_size

    profile = SlurmProfile()
    size = shard_size(profile)
    assert (size.tokens, size.rounding, size.min_shards) == (57_600_000, "down", 1)  # ceil(96,000 x 18 / 0.03)
    for words in ("57,600,000", "96,000 tokens/s", "18 s start-up", "3%"):
        assert words in size.why
    profile = SlurmProfile(tokens_per_s=1000.0, startup_s=3.0)  # the same rule at a size the test can plan
    size = shard_size(profile)
    assert size.tokens == 100_000
    rng = np.random.default_rng(0)
    for total_shards in (0.5, 1.0, 2.7, 40.3):  # inputs of this many minimum-size shards
        costs = rng.integers(40, 60, size=int(total_shards * size.tokens / 50))
        shards = plan_shards(costs, size.min_shards, size.tokens, size.rounding)
        assert len(shards) == max(1, int(costs.sum() // size.tokens))
        if costs.sum() >= size.tokens:  # an input smaller than one shard is one task whatever its start-up
            assert max(startup_share(profile, tokens) for _, _, tokens in shards) <= profile.startup_share
    text = describe_shards(size, int(costs.sum()), shards, profile)
    assert f"-> {len(shards)} shard(s)" in text and "% of a task" in text


def test_shards_flag_and_environment_override_the_measured_sizing():
    from virnucpro.run.plan import plan_shards
    from virnucpro.slurm.sizing import shard_size

    costs = np.full(1000, 100)
    exact = shard_size(SlurmProfile(), shards=7)
    assert len(plan_shards(costs, exact.min_shards, exact.tokens, exact.rounding)) == 7 and "--shards" in exact.why
    ceiling = shard_size(SlurmProfile(), env_shard_tokens=30_000)
    assert len(plan_shards(costs, ceiling.min_shards, ceiling.tokens, ceiling.rounding)) == 4  # ceil(100k / 30k)
    halved_start_up = shard_size(SlurmProfile(startup_s=9.0))
    assert halved_start_up.tokens == 28_800_000  # ceil(96,000 x 9 / 0.03)


FAKE_CONFIG = """#!/bin/sh
[ "$1 $2" = "show config" ] || exit 1
echo "Configuration data as of 2026-12-02T10:00:00"
echo "MaxArraySize            = 5"
echo "MaxJobCount             = 10000"
"""


@pytest.mark.parametrize("script, profile_limit, expected", [
    (FAKE_CONFIG, 0, (5, "MaxArraySize=5 (scontrol show config)")),
    (FAKE_CONFIG, 3, (3, "profile max_array_size")),
    (FAKE_CONFIG, 9, (5, "MaxArraySize=5 (scontrol show config)")),  # the cluster's limit wins when smaller
    (None, 0, (1001, "SLURM's default MaxArraySize (scontrol not found)")),
    (None, 200, (200, "profile max_array_size")),
])
def test_array_limit_comes_from_the_cluster_or_the_profile(monkeypatch, tmp_path, script, profile_limit, expected):
    from virnucpro.slurm.sizing import array_limit

    with_fake_scontrol(monkeypatch, tmp_path / "bin", script)
    assert array_limit(SlurmProfile(max_array_size=profile_limit)) == expected


def test_shards_split_into_arrays_and_the_throttle_is_shared():
    from virnucpro.slurm.sizing import array_throttle, split_arrays

    assert split_arrays(list(range(10)), 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert split_arrays([3, 8], 1) == [[3], [8]] and split_arrays([], 4) == []
    assert array_throttle(SlurmProfile(max_running=8), 3) == 2 and array_throttle(SlurmProfile(max_running=2), 3) == 1
    assert array_throttle(SlurmProfile(), 3) == 0


def test_aggregation_waits_for_every_array_and_the_prep_job_is_held_cpu_only(tmp_path):
    from virnucpro.slurm.submit import prep_parameters

    profile = SlurmProfile(prep_cpus=4, prep_mem="32G", prep_time="1:00:00", partition="cpu")
    assert sbatch_flags(aggregate_parameters(profile, "v", ("11", "12")), tmp_path)["dependency"] == "afterok:11:12"
    flags = sbatch_flags(prep_parameters(profile, "v-prep"), tmp_path)
    assert (flags["cpus-per-task"], flags["mem"], flags["time"], flags["partition"]) == ("4", "32G", "60", "cpu")
    assert "hold" in flags and "no-requeue" in flags and "gres" not in flags
    text = _make_sbatch_string(command="python -m x", folder=tmp_path, **prep_parameters(profile, "v-prep"))
    assert "srun" not in text  # the prep job calls sbatch itself: no job step around it


@pytest.mark.parametrize("values, problem", [
    ({"startup_share": 1.5}, "startup_share"),
    ({"tokens_per_s": 0}, "key 'tokens_per_s'"),
    ({"startup_s": "38"}, "key 'startup_s'"),
    ({"prep_job": "sometimes"}, "key 'prep_job'"),
    ({"prep_job_min_input": "lots"}, "key 'prep_job_min_input'"),
    ({"max_array_size": -1}, "key 'max_array_size'"),
])
def test_bad_sizing_and_prep_values_name_the_key(values, problem):
    with pytest.raises(InputError, match=problem):
        profile_from_dict(values, "site.toml")


def test_jobs_file_of_an_older_submission_still_loads(planned_run):
    from virnucpro.slurm.jobs import JobsFile, PlanRequest
    from virnucpro.slurm.sizing import shard_size

    old = {"engine": asdict(EngineConfig(device="cpu")), "profile": asdict(SlurmProfile()),
           "submissions": [{"array_job_id": "100", "tasks": {"0": "100_0"}, "aggregate_job_id": "101",
                            "submitted": "", "resume": False}]}
    (planned_run / "slurm").mkdir()
    (planned_run / "slurm" / "jobs.json").write_text(json.dumps(old))
    jobs = JobsFile.load(planned_run)
    assert jobs.submissions[0].array_job_ids == ("100",) and jobs.plan is None and jobs.latest_prep() is None
    cfg = PredictConfig(input=Path("in.fa"), outdir=planned_run, engine=EngineConfig(device="cpu"), dedup=False)
    request = PlanRequest(cfg, shard_size(SlurmProfile(), shards=3))
    assert PlanRequest.from_dict(json.loads(json.dumps(request.to_dict()))) == request


FAKE_PREP_RUNNING = """#!/bin/sh
case "$4" in
  200) echo "JobId=200 JobName=virnucpro-run-prep JobState=RUNNING Reason=None Restarts=0 ExitCode=0:0" ;;
  *) echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1 ;;
esac
"""


def test_status_and_resume_see_a_prep_job_still_planning(tmp_path, capsys, monkeypatch):
    rundir = tmp_path / "run"  # not planned yet: the prep job is doing it
    record_jobs(rundir, Submission("", {}, "", prep_job_id="200"))
    with_fake_scontrol(monkeypatch, tmp_path / "bin", FAKE_PREP_RUNNING)
    report = status_json(rundir, capsys)
    assert report["shards"] == [] and report["slurm"]["aggregate"] is None
    assert (report["slurm"]["prep"]["job_id"], report["slurm"]["prep"]["state"]) == ("200", "RUNNING")
    assert main(["status", str(rundir)]) == 0
    assert "SLURM prep job: job 200 RUNNING" in capsys.readouterr().out
    with pytest.raises(SlurmError, match=r"still queued or running: the prep job \(200\)"):
        refuse_active_jobs(rundir)


FAKE_AGGREGATE_PENDING = """#!/bin/sh
case "$4" in
  300) echo "JobId=300 JobName=virnucpro-run-aggregate JobState=PENDING Reason=Dependency Restarts=0 ExitCode=0:0" ;;
  *) echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1 ;;
esac
"""


def test_a_stale_aggregation_job_is_cancelled_before_a_resubmission(tmp_path, monkeypatch):
    rundir = tmp_path / "run"
    record_jobs(rundir, Submission("", {}, "300"))
    with_fake_scontrol(monkeypatch, tmp_path / "bin", FAKE_AGGREGATE_PENDING)
    scancel = tmp_path / "bin" / "scancel"
    scancel.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scancel.log"}\n')
    scancel.chmod(0o755)
    refuse_active_jobs(rundir)  # only the aggregation of the earlier submission is waiting: not a refusal
    assert (tmp_path / "scancel.log").read_text() == "300\n"


@pytest.mark.parametrize("prep_job, size, planned, expected", [
    ("auto", 10, False, False), ("auto", 2048, False, True), ("always", 10, False, True),
    ("never", 4096, False, False), ("auto", 4096, True, False),
])
def test_prep_runs_in_a_job_for_large_inputs_unless_already_planned(tmp_path, prep_job, size, planned, expected):
    from virnucpro.commands.submit import prep_in_a_job

    reads = tmp_path / "reads.fasta"
    reads.write_bytes(b">r\n" + b"A" * size + b"\n")
    cfg = PredictConfig(input=reads, outdir=tmp_path / "run")
    if planned:
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / "manifest.json").write_text("{}")
    assert prep_in_a_job(cfg, SlurmProfile(prep_job=prep_job, prep_job_min_input="1K")) is expected
