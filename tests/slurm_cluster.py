"""A real one-node SLURM cluster for tests: install (apt, as root), munge, slurmctld + slurmd, teardown.

Used by tests/test_slurm.py through the session fixture `slurm_cluster`, and by slurm/ci/start.sh and stop.sh:

    python tests/slurm_cluster.py start DIR     # prints `export SLURM_CONF=DIR/slurm.conf`
    python tests/slurm_cluster.py stop DIR

Everything lives in one work directory and is reached through SLURM_CONF; daemons are stopped by their pid files.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parents[1] / "slurm" / "ci"
FAKE_GPU_FILES = ("/dev/tty0", "/dev/tty1")  # any existing device files will do: SLURM only counts them
MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_PID = Path("/run/munge/munged.pid")
MUNGE_STARTED_MARK = "munged.started-by-harness"


class SlurmUnavailable(RuntimeError):
    """SLURM could not be installed or started here (the caller skips, or fails when SLURM is required)."""


@dataclass
class SlurmCluster:
    workdir: Path
    host: str
    cpus: int
    gpus: int  # fake GPUs declared as GRES (0 when this node has no device files to use)
    env: dict = field(repr=False, default_factory=dict)  # os.environ + SLURM_CONF: pass to every slurm command

    @property
    def conf(self) -> Path:
        return self.workdir / "slurm.conf"

    def run(self, *command: str, check: bool = True, timeout: float = 60) -> str:
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def logs(self) -> str:
        """The daemons' log tails, for failure messages."""
        parts = []
        for name in ("slurmctld.log", "slurmd.log"):
            path = self.workdir / name
            if path.exists():
                parts.append(f"--- {name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-40:]))
        return "\n".join(parts)


# ---------------------------------------------------------------- installation


def ensure_installed() -> None:
    """apt-get install slurm-wlm and munge when slurmctld is missing and we are root."""
    if shutil.which("slurmctld") and shutil.which("munged"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SlurmUnavailable("slurmctld is not installed and this is not a root Debian/Ubuntu machine")
    apt_env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    wait_for_lock = ["-o", "DPkg::Lock::Timeout=300"]  # e.g. unattended-upgrades holding dpkg at boot
    for command in (["apt-get", *wait_for_lock, "update", "-q"],
                    ["apt-get", *wait_for_lock, "install", "-y", "-q", "slurm-wlm", "munge"]):
        done = subprocess.run(command, env=apt_env, capture_output=True, text=True, timeout=1200)
        if done.returncode != 0:
            raise SlurmUnavailable(f"{' '.join(command)} failed: {done.stderr.strip()[-500:]}")
    if not shutil.which("slurmctld"):
        raise SlurmUnavailable("slurm-wlm was installed but slurmctld is not on PATH")


# ---------------------------------------------------------------- munge


def _munge_works() -> bool:
    try:
        token = subprocess.run(["munge", "-n"], capture_output=True, timeout=10)
        if token.returncode != 0:
            return False
        return subprocess.run(["unmunge"], input=token.stdout, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def start_munge(workdir: Path) -> None:
    """Start munged with a key (created when missing) unless a working one is already running."""
    if _munge_works():
        return
    for folder in ("/etc/munge", "/run/munge", "/var/log/munge", "/var/lib/munge"):
        Path(folder).mkdir(parents=True, exist_ok=True)
    if not MUNGE_KEY.exists():
        MUNGE_KEY.write_bytes(os.urandom(1024))
        MUNGE_KEY.chmod(0o400)
    done = subprocess.run(["munged", "--force"], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise SlurmUnavailable(f"munged failed to start: {done.stderr.strip()}")
    (workdir / MUNGE_STARTED_MARK).write_text("1")
    _wait_until(_munge_works, 20, "munged to answer")


# ---------------------------------------------------------------- configuration


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def _memory_mb() -> int:
    with open("/proc/meminfo") as meminfo:
        total_kb = int(next(line for line in meminfo if line.startswith("MemTotal")).split()[1])
    return max(1000, int(total_kb / 1024 * 0.8))


def fake_gpu_files() -> list[str]:
    return [path for path in FAKE_GPU_FILES if os.path.exists(path)]


CI_MAX_ARRAY_SIZE = 4  # arrays of at most 4 tasks: a 7-shard run needs two


def write_config(workdir: Path, host: str, cpus: int, cred_expire: int = 10,
                 max_array_size: int = CI_MAX_ARRAY_SIZE) -> int:
    """Render slurm.conf (and gres.conf when device files exist) into workdir; returns the GPU count."""
    gpu_files = fake_gpu_files()
    gpus = len(gpu_files)
    values = dict(
        workdir=workdir, host=host, cpus=cpus, memory_mb=_memory_mb(), cred_expire=cred_expire,
        max_array_size=max_array_size,
        ctld_port=_free_port(), slurmd_port=_free_port(), gres=f"Gres=gpu:{gpus}" if gpus else "",
        gpu_files=",".join(gpu_files),
    )
    for folder in ("state", "spool"):
        (workdir / folder).mkdir(parents=True, exist_ok=True)
    _render(TEMPLATES / "slurm.conf.in", workdir / "slurm.conf", values)
    if gpus:
        _render(TEMPLATES / "gres.conf.in", workdir / "gres.conf", values)
    return gpus


def _render(template: Path, target: Path, values: dict) -> None:
    target.write_text(string.Template(template.read_text()).substitute(values))


# ---------------------------------------------------------------- daemons


def _wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise SlurmUnavailable(f"timed out after {timeout:.0f} s waiting for {what}")


def _node_state(cluster: SlurmCluster) -> str:
    done = subprocess.run(["sinfo", "-h", "-n", cluster.host, "-o", "%T"], env=cluster.env,
                          capture_output=True, text=True, timeout=20)
    return done.stdout.strip() if done.returncode == 0 else ""


def start_daemons(cluster: SlurmCluster) -> None:
    for daemon in ("slurmctld", "slurmd"):
        done = subprocess.run([daemon, "-f", str(cluster.conf)], env=cluster.env, capture_output=True, text=True,
                              timeout=60)
        if done.returncode != 0:
            raise SlurmUnavailable(f"{daemon} failed to start: {done.stderr.strip()}\n{cluster.logs()}")
    try:
        _wait_until(lambda: _node_state(cluster) == "idle", 90, "the node to be idle")
    except SlurmUnavailable as error:
        raise SlurmUnavailable(f"{error} (state {_node_state(cluster)!r})\n{cluster.logs()}") from None


def start_cluster(workdir: str | os.PathLike) -> SlurmCluster:
    """Install when needed, start munge, slurmctld and slurmd; returns once the node is idle."""
    ensure_installed()
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname().split(".")[0]
    cpus = os.cpu_count() or 1
    start_munge(workdir)
    gpus = write_config(workdir, host, cpus)
    cluster = SlurmCluster(workdir, host, cpus, gpus, env=dict(os.environ, SLURM_CONF=str(workdir / "slurm.conf")))
    try:
        start_daemons(cluster)
    except BaseException:
        stop_cluster(workdir)
        raise
    return cluster


def _kill_by_pid_file(pid_file: Path, timeout: float = 15) -> None:
    with contextlib.suppress(FileNotFoundError, ValueError):
        pid = int(pid_file.read_text().strip())
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                os.kill(pid, 0)  # raises ProcessLookupError once it is gone
                time.sleep(0.2)
            os.kill(pid, signal.SIGKILL)


def stop_cluster(workdir: str | os.PathLike) -> None:
    """Cancel this cluster's jobs, then stop slurmd, slurmctld (and munged when this harness started it)."""
    workdir = Path(workdir)
    env = dict(os.environ, SLURM_CONF=str(workdir / "slurm.conf"))
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run(["scancel", "--full", "--user", getpass.getuser()], env=env, capture_output=True, timeout=20)
        time.sleep(1)
    _kill_by_pid_file(workdir / "slurmd.pid")
    _kill_by_pid_file(workdir / "slurmctld.pid")
    if (workdir / MUNGE_STARTED_MARK).exists():
        _kill_by_pid_file(MUNGE_PID)
        (workdir / MUNGE_STARTED_MARK).unlink()


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print("usage: slurm_cluster.py start|stop WORKDIR", file=sys.stderr)
        return 2
    if argv[0] == "stop":
        stop_cluster(argv[1])
        return 0
    cluster = start_cluster(argv[1])
    print(f"export SLURM_CONF={cluster.conf}  # node {cluster.host}: {cluster.cpus} CPUs, {cluster.gpus} fake GPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
