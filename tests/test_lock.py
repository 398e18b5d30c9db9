"""Run-directory locks (issue 15.4): held for the whole run, released on any exit, stale after the holder dies,
refused with a line naming the holder. Holders are real processes; their death is a real SIGKILL."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from virnucpro.errors import RunLockedError
from virnucpro.run import lock as lock_module
from virnucpro.run.lock import hold_lock, inspect_lock

HOLDER = """
import sys
from virnucpro.run.lock import hold_lock
with hold_lock(sys.argv[1], "holder-purpose", "the test lock"):
    print("held", flush=True)
    sys.stdin.read()
"""


def start_holder(path: Path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_live_holder_refuses_others_naming_it(tmp_path):
    path = tmp_path / ".lock"
    holder = start_holder(path)
    try:
        with pytest.raises(RunLockedError) as refused:
            with hold_lock(path, "second", "run directory X"):
                pass
        message = str(refused.value)
        assert "run directory X is in use by `holder-purpose`" in message
        assert f"pid {holder.pid} on {socket.gethostname()}" in message and "\n" not in message
        assert RunLockedError.exit_code == 7
    finally:
        holder.stdin.close()
        holder.wait(10)
    assert not path.exists()  # released by a normal exit
    with hold_lock(path, "second", "run directory X"):
        assert path.exists()


def test_the_lock_of_a_killed_holder_is_taken_over_with_a_warning(tmp_path, caplog):
    path = tmp_path / ".lock"
    holder = start_holder(path)
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    assert path.exists()  # nobody could remove it
    state = inspect_lock(path)
    assert not state.alive and "no longer runs" in state.why
    with caplog.at_level(logging.WARNING), hold_lock(path, "next", "run directory X"):
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert f"took over the lock of run directory X from `holder-purpose` (pid {holder.pid}" in caplog.text
    assert not path.exists()


def test_reentrant_in_one_process_and_released_on_an_exception(tmp_path):
    path = tmp_path / ".lock"
    with pytest.raises(ValueError):
        with hold_lock(path, "outer", "X"):
            with hold_lock(path, "inner", "X"):  # predict -> plan -> aggregate
                assert json.loads(path.read_text())["purpose"] == "outer"
            assert path.exists()
            raise ValueError("boom")
    assert not path.exists()


def write_foreign_lock(path: Path, host: str, pid: int, age_s: float, **extra) -> None:
    record = {"host": host, "pid": pid, "purpose": "predict", "command": "virnucpro predict x", "since": "then",
              **extra}
    path.write_text(json.dumps(record))
    past = time.time() - age_s
    os.utime(path, (past, past))


def test_a_dead_pid_or_a_reused_pid_on_this_host_is_stale(tmp_path):
    path = tmp_path / ".lock"
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    write_foreign_lock(path, socket.gethostname(), int(finished.stdout), age_s=0)
    assert not inspect_lock(path).alive
    # our own pid, but started at another time: the pid was reused by another program
    write_foreign_lock(path, socket.gethostname(), os.getpid(), age_s=0, pid_start=1)
    state = inspect_lock(path)
    assert not state.alive and "pid now belongs to another program" in state.why
    with hold_lock(path, "me", "X"):
        pass


def test_another_hosts_lock_lives_while_its_heartbeat_is_fresh(tmp_path, monkeypatch):
    path = tmp_path / ".lock"
    write_foreign_lock(path, "node-b", 4242, age_s=30)
    with pytest.raises(RunLockedError, match=r"pid 4242 on node-b.*heartbeat is \d+ s old"):
        with hold_lock(path, "me", "X"):
            pass
    write_foreign_lock(path, "node-b", 4242, age_s=lock_module.STALE_AFTER_SECONDS + 60)
    assert not inspect_lock(path).alive
    with hold_lock(path, "me", "X"):
        assert json.loads(path.read_text())["host"] == socket.gethostname()


def test_the_holder_refreshes_its_heartbeat(tmp_path, monkeypatch):
    monkeypatch.setattr(lock_module, "HEARTBEAT_SECONDS", 0.05)
    path = tmp_path / ".lock"
    with hold_lock(path, "me", "X"):
        past = time.time() - 1000
        os.utime(path, (past, past))
        time.sleep(0.5)
        assert time.time() - path.stat().st_mtime < 5
