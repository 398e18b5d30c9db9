"""The commands that never compute (status, aggregate, call with the run's classifier) do not import torch: it cost
each of them ~1.5 s and ~590 MB of resident memory (an aggregation job at 10^7 frames peaked at ~600 MB, most of it
torch). Checked in fresh processes on a finished demo run."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import atexit, runpy, sys
atexit.register(lambda: print("TORCH" if "torch" in sys.modules else "NO-TORCH", file=sys.stderr))
sys.argv = ["virnucpro"] + sys.argv[1:]
runpy.run_module("virnucpro", run_name="__main__")
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("light") / "demo"
    done = subprocess.run([sys.executable, "-m", "virnucpro", "demo", "--out", str(out)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return out / "run"


@pytest.mark.parametrize("command", [["status"], ["aggregate"], ["call", "--min-score", "0.6"]])
def test_a_command_that_never_computes_does_not_import_torch(finished, command):
    done = subprocess.run([sys.executable, "-c", PROBE, command[0], str(finished), *command[1:]],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "NO-TORCH", done.stderr
