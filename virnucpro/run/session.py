"""Hold a run directory for one command: claim it, lock it, log into it, and record how the command ended.

    with run_session(root, "predict") as run:
        ...

- claim: a new, empty or already-marked folder only (run.rundir.claim); nothing else is ever touched;
- the run lock (run.lock) for the whole block, released on any exit; reentrant (plan and aggregate inside predict);
- this process's log records mirrored into RUNDIR/logs/<name>-<host>-<pid>.log;
- on failure the same one line the terminal shows (errors.failure) goes into that log, with the traceback when it
  is a bug; a first attempt that fails before its manifest exists removes what it wrote (no skeleton is left).
"""

from __future__ import annotations

import contextlib
import logging
import traceback
from pathlib import Path
from typing import Iterator

from virnucpro.errors import EXIT_INTERNAL, RunStateError, failure
from virnucpro.run.lock import hold_lock, holds_lock
from virnucpro.run.rundir import RunDir, attach_log_file, claim, detach_log_file, remove_skeleton

log = logging.getLogger(__name__)


@contextlib.contextmanager
def run_session(root, name: str, *, create: bool = True) -> Iterator[RunDir]:
    """Hold RUNDIR (see the module docstring). create=False: the run directory must already hold a manifest."""
    run = RunDir(Path(root))
    if holds_lock(run.lock):
        yield run
        return
    existed = run.root.exists()
    if create:
        fresh = claim(run)
    elif not run.manifest.exists():
        raise RunStateError(f"{run.manifest}: no manifest; run `virnucpro predict INPUT -o RUNDIR` first")
    else:
        fresh = False
    removed = False
    try:
        with hold_lock(run.lock, name, f"run directory {run.root}"):
            try:
                with run_log(run, name):
                    yield run
            except BaseException:
                if fresh and not run.manifest.exists():  # nothing worth keeping was done: leave no skeleton
                    with contextlib.suppress(OSError):
                        remove_skeleton(run)
                        removed = True
                raise
    finally:
        if removed and not existed:  # a folder this command created; the lock file went with the lock
            with contextlib.suppress(OSError):
                run.root.rmdir()


@contextlib.contextmanager
def run_log(run: RunDir, name: str) -> Iterator[None]:
    """This process's log records mirrored into RUNDIR/logs/<name>-<host>-<pid>.log, ending with how it ended."""
    handler = attach_log_file(run, name)
    try:
        yield
    except BaseException as error:
        record_failure(handler, error)
        raise
    finally:
        detach_log_file(handler)


def record_failure(handler: logging.Handler, error: BaseException) -> None:
    """The terminal's one line into the run's log (and the traceback, when the error is a bug)."""
    code, line = failure(error)
    text = f"exit {code}: {line}"
    if code == EXIT_INTERNAL:
        text += "\n" + "".join(traceback.format_exception(error))
    record = logging.LogRecord("virnucpro", logging.ERROR, __file__, 0, text, None, None)
    handler.handle(record)
