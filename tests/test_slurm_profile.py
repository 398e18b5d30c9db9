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
