"""One process at a time per run directory (RUNDIR/.lock) and per shard (shards/shard-NNNN/.lock).

A lock is a file created with O_EXCL (atomic on local disks, NFS v3+ and Lustre) that names its holder: host, pid,
the process's start time and boot id, what it does and since when. Where the file system supports flock(2), the
holder also flocks it. It is released on every exit path (the `with` block ends, an exception, SIGTERM and Ctrl-C
through cli's handlers); after `kill -9`, a crash or a lost node the file stays, and the next process decides
that it is stale and takes it over (with a warning naming the old holder):

- same host: the holder's pid no longer runs, or runs another program (its start time differs: pid reuse), or
  the machine rebooted since (boot id); this decides even if the flock is still held (DataLoader workers forked
  by a killed holder keep its flock for a few seconds);
- another host: the holder refreshes the file's mtime every HEARTBEAT_SECONDS; a lock not refreshed for
  STALE_AFTER_SECONDS is stale, unless its flock is still held. On NFS the server drops a dead client's flock
  after its lease (~90 s); Lustre mounted `-o localflock` keeps flocks node-local, and `-o noflock` refuses them:
  the heartbeat is what works everywhere, the flock only proves life a little sooner where it works. Cluster
  clocks are NTP-synchronised; five minutes leave room for skew and attribute caching.

Locks are reentrant within a process (predict holds the run lock and calls plan and aggregate, which take it too).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from virnucpro.errors import RunLockedError

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 30.0
STALE_AFTER_SECONDS = 300.0
_FLOCK_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


def _boot_id() -> str | None:
    with contextlib.suppress(OSError):
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return None


def _process_start(pid: int) -> int | None:
    """Clock ticks after boot at which `pid` started (Linux), or None when unknown or not running."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    return None


def pid_running(pid: int) -> bool:
    """Whether a process with this pid exists on this host (any user's)."""
    try:
        fd = os.pidfd_open(pid)  # Linux >= 5.3
    except ProcessLookupError:
        return False
    except (AttributeError, OSError):
        return Path(f"/proc/{pid}").exists()
    os.close(fd)
    return True


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    purpose: str
    command: str
    since: str
    pid_start: int | None = None
    boot_id: str | None = None

    @classmethod
    def this_process(cls, purpose: str) -> "Holder":
        return cls(socket.gethostname(), os.getpid(), purpose, " ".join(sys.argv)[:300],
                   datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"),
                   _process_start(os.getpid()), _boot_id())

    @classmethod
    def parse(cls, text: str) -> "Holder | None":
        with contextlib.suppress(ValueError, TypeError, KeyError):
            data = json.loads(text)
            return cls(**{key: data[key] for key in ("host", "pid", "purpose", "command", "since")},
                       pid_start=data.get("pid_start"), boot_id=data.get("boot_id"))
        return None

    def describe(self) -> str:
        return f"`{self.purpose}` (pid {self.pid} on {self.host}, since {self.since}: {self.command})"

    def local_liveness(self) -> tuple[bool, str]:
        """(alive, why) for a holder on this host."""
        boot = _boot_id()
        if self.boot_id and boot and self.boot_id != boot:
            return False, "the machine rebooted since"
        if not pid_running(self.pid):
            return False, "that process no longer runs"
        start = _process_start(self.pid)
        if self.pid_start is not None and start is not None and start != self.pid_start:
            return False, "that process no longer runs (its pid now belongs to another program)"
        return True, "it is running"


@dataclass(frozen=True)
class LockState:
    """What a lock file says, as `status` and a process wanting the lock see it."""

    holder: Holder | None  # None: unreadable (being written, or torn)
    alive: bool
    why: str
    heartbeat_age: float
    inode: int


def _flock_state(fd: int) -> str:
    """'held' when another open file holds the flock, 'free' (we got it and let it go), or 'unsupported'."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return "held"
    except OSError as error:
        if error.errno in _FLOCK_UNSUPPORTED:
            return "unsupported"
        raise
    fcntl.flock(fd, fcntl.LOCK_UN)
    return "free"


def inspect_lock(path: Path, probe_flock: bool = True) -> LockState | None:
    """The lock's holder and whether it still lives; None when there is no lock file."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        stat = os.fstat(fd)
        text = os.pread(fd, 65536, 0).decode("utf-8", errors="replace")
        kernel = _flock_state(fd) if probe_flock else "unknown"
    finally:
        os.close(fd)
    holder = Holder.parse(text)
    age = max(0.0, time.time() - stat.st_mtime)
    if holder is not None and holder.host == socket.gethostname():  # the pid decides (forked children may
        alive, why = holder.local_liveness()                          # still hold a dead holder's flock)
        return LockState(holder, alive, why, age, stat.st_ino)
    if kernel == "held":
        return LockState(holder, True, "its flock is held", age, stat.st_ino)
    alive = age < STALE_AFTER_SECONDS
    why = (f"its heartbeat is {age:.0f} s old" if alive
           else f"no heartbeat for {age:.0f} s (stale after {STALE_AFTER_SECONDS:.0f} s)")
    return LockState(holder, alive, why, age, stat.st_ino)


class FileLock:
    """An exclusive lock on `path` for this process (see the module docstring). Use `hold_lock`."""

    def __init__(self, path: Path, purpose: str, what: str):
        self.path, self.purpose, self.what = Path(path), purpose, what
        self.fd: int | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def acquire(self) -> "FileLock":
        for _attempt in range(5):
            if self._create():
                return self
            state = inspect_lock(self.path)
            if state is None:
                continue  # released meanwhile
            if state.alive:
                raise RunLockedError(self._busy_message(state))
            self._take_over(state)
        raise RunLockedError(f"{self.path}: could not take the lock of {self.what} (other processes keep taking it)")

    def _busy_message(self, state: LockState) -> str:
        who = state.holder.describe() if state.holder else "a process that is still writing the lock file"
        return (f"{self.what} is in use by {who}; {state.why}. Wait for it to finish or stop it "
                f"(a lock whose holder died is taken over automatically; lock file {self.path})")

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        except FileExistsError:
            return False
        self.fd = fd
        self._flock()
        os.write(fd, json.dumps(asdict(Holder.this_process(self.purpose))).encode())
        os.fsync(fd)
        self._beat = threading.Thread(target=self._heartbeat, name=f"lock-{self.path.parent.name}", daemon=True)
        self._beat.start()
        return True

    def _flock(self) -> None:
        for _ in range(50):  # another process may be probing it for a moment
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                time.sleep(0.02)
            except OSError as error:
                if error.errno in _FLOCK_UNSUPPORTED:
                    return  # the O_EXCL file and its heartbeat carry the lock alone
                raise

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            with contextlib.suppress(OSError):  # a full disk must not kill the thread
                os.utime(self.fd)

    def _take_over(self, state: LockState) -> None:
        """Move the stale lock aside (rename is atomic: of two processes only one succeeds), then delete it."""
        aside = self.path.with_name(f"{self.path.name}.stale-{socket.gethostname()}-{os.getpid()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        if os.stat(aside).st_ino != state.inode:  # a new holder took it between our look and the rename
            with contextlib.suppress(FileExistsError):
                os.link(aside, self.path)
            os.unlink(aside)
            return
        os.unlink(aside)
        who = state.holder.describe() if state.holder else "an unreadable lock file"
        log.warning("%s: took over the lock of %s from %s: %s", self.path.parent, self.what, who, state.why)

    def release(self) -> None:
        if self.fd is None:
            return
        self._stop.set()
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                os.unlink(self.path)
        os.close(self.fd)  # drops the flock
        self.fd = None


_HELD: dict[Path, list] = {}  # resolved lock path -> [FileLock, depth]


@contextlib.contextmanager
def hold_lock(path: Path, purpose: str, what: str) -> Iterator[FileLock]:
    """Hold the lock at `path` for the block (reentrant in this process); RunLockedError when a live process has it."""
    key = Path(path).resolve()
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield _HELD[key][0]
        finally:
            _HELD[key][1] -= 1
        return
    lock = FileLock(key, purpose, what).acquire()
    _HELD[key] = [lock, 1]
    try:
        yield lock
    finally:
        del _HELD[key]
        lock.release()


def holds_lock(path: Path) -> bool:
    return Path(path).resolve() in _HELD
