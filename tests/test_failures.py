"""Failures that end cleanly (issue 15): the real `virnucpro predict` on the CPU with tiny models in the real
formats, as a hostile user would run it. Every error is one plain line naming the file and the problem, in the
terminal and in the run's log, with its documented exit code; a bad model or input never poisons a run directory;
disk full never gives a traceback or a crash; the run lock holds against a live process and SIGTERM releases it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from test_kill_resume import KNOBS, Runner, assert_same_outputs, runner_and_reference
from virnucpro.errors import DiskFullError, InputError, ModelError, RunLockedError, RunStateError
from virnucpro.run.lock import hold_lock

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, golden_prep):
    """A runner, its reference run, and a run directory whose shards are all scored (aggregation next)."""
    root = tmp_path_factory.mktemp("failures")
    runner, reference = runner_and_reference(root, golden_prep / "input.fasta")
    scored = root / "scored"
    assert runner.run(scored, kill="aggregate:1").returncode == -signal.SIGKILL
    return runner, reference, scored


def last_line(result: subprocess.CompletedProcess) -> str:
    return result.stderr.strip().splitlines()[-1]


def assert_one_clean_line(result: subprocess.CompletedProcess, code: int, *fragments: str) -> str:
    line = last_line(result)
    assert result.returncode == code, result.stderr
    assert line.startswith("virnucpro: error: "), result.stderr
    for fragment in fragments:
        assert fragment in line, line
    for noise in ("Traceback", "Logging error", "\x1b[", "weights_only", "Please file an issue", "()"):
        assert noise not in result.stderr, result.stderr
    return line


def with_model(runner: Runner, rundir: Path, role: str, path: Path) -> list[str]:
    argv = runner.argv(rundir)
    flag = {"esm": "--esm-model", "classifier": "--classifier"}[role]
    argv[argv.index(flag) + 1] = str(path)
    return argv


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def write_bad_model(folder: Path, kind: str, role: str) -> Path:
    path = folder / f"{role}-{kind}.pt"
    if kind == "random":
        path.write_bytes(os.urandom(4096))
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        import torch

        torch.save({"model": Evil(), "cfg": Evil()}, path)
    return path


@pytest.mark.parametrize("role", ["esm", "classifier"])
@pytest.mark.parametrize("kind", ["random", "empty", "malicious"])
def test_a_bad_model_is_refused_before_anything_is_written(setup, tmp_path, role, kind):
    """Issue 15.8: a bad model was found after the manifest (the corrected command was then refused as "model
    differs"), with torch internals as the reason (mmap hints, `weights_only=False` advice, empty reasons)."""
    runner, reference, _ = setup
    bad = write_bad_model(tmp_path, kind, role)
    rundir = tmp_path / "run"
    result = runner.run(rundir, argv=with_model(runner, rundir, role, bad))
    line = assert_one_clean_line(result, ModelError.exit_code, str(bad))
    assert not re.search(r"[:(]\s*$", line), line  # never an empty reason
    assert not rundir.exists()  # no manifest, no skeleton
    assert not (tmp_path / "pwned.txt").exists() and not Path("pwned.txt").exists()
    if kind == "random":
        fixed = runner.run(rundir)  # the corrected command is not refused
        assert fixed.returncode == 0, fixed.stderr
        assert_same_outputs(reference, rundir)


def test_an_error_on_an_existing_run_reaches_its_log(setup, tmp_path):
    """Issue 15.9: errors never reached logs/*.log."""
    runner, _, _ = setup
    rundir = tmp_path / "run"
    assert runner.run(rundir, kill="block:1").returncode == -signal.SIGKILL
    refused = runner.run(rundir, models_tag="b")
    line = assert_one_clean_line(refused, RunStateError.exit_code, "cannot resume: esm model differs")
    logged = "".join(path.read_text() for path in (rundir / "logs").glob("predict-*.log"))
    assert f"exit 4: {line.removeprefix('virnucpro: error: ')}" in logged


def test_a_failed_first_attempt_leaves_no_run_directory(setup, tmp_path):
    """Issue 15.9: failed runs left a run-directory skeleton (prep/, shards/, logs/, checksums.json)."""
    runner, _, _ = setup
    bad_input = tmp_path / "bad.fasta"
    bad_input.write_text(runner.input.read_text() + ">prot\nMEFILPQKWMEFILPQKW\n")  # fails at the end of prep
    rundir = tmp_path / "new" / "run"
    argv = runner.argv(rundir)
    argv[1] = str(bad_input)
    failed = runner.run(rundir, argv=argv)
    assert_one_clean_line(failed, InputError.exit_code, str(bad_input), "record 'prot'", "not a nucleotide")
    assert not rundir.exists() and (tmp_path / "new").exists()
    empty = tmp_path / "empty-dir"
    empty.mkdir()
    argv[argv.index("-o") + 1] = str(empty)
    assert runner.run(empty, argv=argv).returncode == InputError.exit_code
    assert empty.exists() and list(empty.iterdir()) == []  # the user's folder stays, empty as it was


def test_a_directory_or_a_missing_file_as_input(setup, tmp_path):
    runner, _, _ = setup
    rundir = tmp_path / "run"
    for given, problem in ((tmp_path, "is a directory, not a FASTA/FASTQ file"),
                           (tmp_path / "missing.fasta", "input file not found")):
        argv = runner.argv(rundir)
        argv[1] = str(given)
        result = runner.run(rundir, argv=argv)
        assert_one_clean_line(result, InputError.exit_code, f"{given}: {problem}")
        assert not rundir.exists()


def test_warnings_are_printed_once(setup, tmp_path):
    """Issue 15.9: warnings printed twice."""
    runner, _, _ = setup
    source = tmp_path / "in.fasta"
    source.write_text(runner.input.read_text() + ">empty_one\n\n")
    rundir = tmp_path / "run"
    argv = runner.argv(rundir)
    argv[1] = str(source)
    result = runner.run(rundir, argv=argv)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("record 'empty_one' is empty") == 1, result.stderr


@pytest.mark.parametrize("limit", [500, 6000, 25000, 90000, 300000])
def test_disk_full_while_aggregating_is_one_line_and_resumable(setup, tmp_path, limit):
    """Issue 15.6: disk full while writing embeddings.h5 gave h5py tracebacks and a segmentation fault (exit 139), or
    a "--- Logging error ---" traceback; disk-full exits were 4, 5 or 139 depending on the stage."""
    runner, reference, scored = setup
    rundir = tmp_path / "run"
    shutil.copytree(scored, rundir)
    full = runner.run(rundir, file_size_limit=limit)
    assert_one_clean_line(full, DiskFullError.exit_code, f"{rundir}/", "cannot write (File too large)",
                          "rerun the same command to resume")
    assert not list(rundir.glob("**/*.tmp"))
    resumed = runner.run(rundir)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_outputs(reference, rundir)


def test_a_second_predict_on_a_held_run_directory_is_refused_naming_the_holder(setup, tmp_path):
    """Issue 15.4: two `predict` runs on one directory both did all the work; a second one with --force-restart and
    another input broke the first and left stray parts."""
    runner, reference, _ = setup
    rundir = tmp_path / "run"
    assert runner.run(rundir, kill="part:2").returncode == -signal.SIGKILL
    listing = lambda: sorted(str(p.relative_to(rundir)) for p in rundir.rglob("*")  # noqa: E731
                             if "logs" not in p.parts and p.name != ".lock")  # the killed run's lock is stale
    before = listing()
    other_input = tmp_path / "other.fasta"
    other_input.write_text(">x\n" + "ACGT" * 200 + "\n")
    with hold_lock(rundir / ".lock", "predict", f"run directory {rundir}"):  # a live `predict`: this process
        second = runner.run(rundir)
        forced_argv = runner.argv(rundir) + ["--force-restart"]
        forced_argv[1] = str(other_input)
        forced = runner.run(rundir, argv=forced_argv)
    for result in (second, forced):
        assert_one_clean_line(result, RunLockedError.exit_code, f"run directory {rundir} is in use by `predict`",
                              f"pid {os.getpid()} on {socket.gethostname()}")
    assert listing() == before
    resumed = runner.run(rundir)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_outputs(reference, rundir)


def test_sigterm_releases_the_lock_and_says_so(setup, tmp_path):
    runner, reference, _ = setup
    rundir = tmp_path / "run"
    terminated = runner.run(rundir, kill="block:2", signal_name="TERM")
    assert terminated.returncode == 143, terminated.stderr
    assert last_line(terminated) == "virnucpro: error: terminated (SIGTERM)"
    assert not (rundir / ".lock").exists() and not list(rundir.glob("shards/*/.lock"))
    assert "exit 143: terminated (SIGTERM)" in "".join(p.read_text() for p in (rundir / "logs").glob("*.log"))
    resumed = runner.run(rundir)
    assert resumed.returncode == 0 and "took over" not in resumed.stderr, resumed.stderr
    assert_same_outputs(reference, rundir)


def test_help_speaks_to_users_and_lists_the_exit_codes():
    """Issue 15.11: `virnucpro --help` showed developer text."""
    shown = subprocess.run([sys.executable, "-m", "virnucpro", "--help"], capture_output=True, text=True, cwd=REPO)
    assert shown.returncode == 0
    assert "Command-line front end" not in shown.stdout and "register(subparsers)" not in shown.stdout
    assert "virnucpro predict reads.fasta -o run/" in shown.stdout and "exit codes:" in shown.stdout


def test_every_exit_code_is_documented_in_the_readme():
    import virnucpro.errors as errors
    from virnucpro.slurm.submit import SlurmError

    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("## Exit codes"):]
    classes = [errors.InputError, errors.ModelError, errors.RunStateError, errors.DiskFullError,
               errors.RunLockedError, SlurmError]
    codes = {c.exit_code for c in classes} | {0, errors.EXIT_INTERNAL, errors.EXIT_SYSTEM, errors.EXIT_INTERRUPTED,
                                              errors.EXIT_TERMINATED}
    documented = {int(code) for code in re.findall(r"^\| `(\d+)` \|", table, flags=re.M)}
    assert documented == codes
    assert len({c.exit_code for c in classes}) == len(classes)  # one code per kind of failure


def test_make_demo_prints_a_predict_command_that_runs(tmp_path):
    """Issue 15.11: `make demo` did not print how to run predict with its models."""
    out = tmp_path / "demo"
    demo = subprocess.run([sys.executable, "-m", "virnucpro", "demo", "--out", str(out)], capture_output=True,
                          text=True, cwd=tmp_path, env={**os.environ, **KNOBS})
    assert demo.returncode == 0, demo.stderr
    [command] = [line.strip() for line in demo.stderr.splitlines() if " predict " in line and "--esm-model" in line]
    argv = command.split()
    assert Path(argv[0]).name == "virnucpro" and argv[1] == "predict"
    ran = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, env={**os.environ, **KNOBS})
    assert ran.returncode == 0, ran.stderr
    results = [out / name / "prediction_results.txt" for name in ("my-run", "run")]
    assert results[0].read_text() == results[1].read_text()
