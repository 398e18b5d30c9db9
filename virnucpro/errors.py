"""Errors that end a run with one clear line (file, record or key, problem) and a non-zero exit.

One exit code per kind of failure (README "Exit codes" lists them; `cli.main` maps what is not one of these):

    0  success                         5  SLURM (virnucpro.slurm.jobs.SlurmError)
    1  internal error (a bug)          6  disk full, quota or file size limit (rerun to resume)
    2  bad input or command line       7  run directory in use by another live process
    3  model files                     8  other system error (permission, I/O error, vanished file)
    4  run directory cannot be used as asked          130 interrupted (Ctrl-C), 143 terminated (SIGTERM)
"""

from __future__ import annotations

import errno
import re

EXIT_INTERNAL = 1
EXIT_SYSTEM = 8
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class VirNucProError(Exception):
    """Base class: the CLI prints str(error) on one line and exits with `exit_code`."""

    exit_code = EXIT_INTERNAL

    def __str__(self) -> str:
        return plain_line(super().__str__())


class InputError(VirNucProError):
    """Bad input data: names the file, the record (when known) and the problem."""

    exit_code = 2

    def __init__(self, path, problem: str, record: str | None = None, line: int | None = None):
        self.path = str(path)
        self.problem = problem
        self.record = record
        self.line = line
        where = self.path
        if line is not None:
            where += f":{line}"
        if record is not None:
            where += f": record '{record}'"
        super().__init__(f"{where}: {problem}")


class ModelError(VirNucProError):
    """A missing, unreadable or wrongly shaped model file: names the file and the key."""

    exit_code = 3

    def __init__(self, path, problem: str, key: str | None = None):
        self.path = str(path)
        self.key = key
        where = self.path if key is None else f"{self.path}: key '{key}'"
        super().__init__(f"{where}: {problem}")


class RunStateError(VirNucProError):
    """A run directory that cannot be used as asked (not a run directory, other models, input, chunk length...)."""

    exit_code = 4


class DiskFullError(VirNucProError):
    """No space left, quota exceeded or file size limit reached: the run directory stays resumable."""

    exit_code = 6


class RunLockedError(VirNucProError):
    """Another live process holds the run directory (or the shard): names it (host, pid, command, since when)."""

    exit_code = 7


# Third-party readers (torch above all) put paragraphs, advice and terminal colours into their messages. A line we
# print must name the problem only, never repeat torch's hint to retry with `weights_only=False` (it would run
# whatever the file contains).
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_NOISE = [re.compile(pattern, re.DOTALL) for pattern in (
    r"In PyTorch 2\.6, we changed the default value.*?trusted source\.",
    r"Re-running `torch\.load` with `weights_only` set to `False`.*?trusted source\.",
    r"Please file an issue with the following so that we can make `weights_only=True` compatible with your use "
    r"case:",
    r"Check the documentation of torch\.load to learn more.*?\.html\.?",
    r"Please use `torch\.serialization\.add_safe_globals.*?(\.(?=\s)|$)",
    r"[^.]*(weights_only\S* (set to )?`?False|allowlist this global)[^.]*\.?",
    r"please torch\.save your checkpoint with this option in order to use mmap\.",
)]
_REWRITES = (
    (re.compile(r"mmap can only be used with files saved with `torch\.save\([^`]*\)`?,?"),
     "not a torch zip checkpoint (corrupt, truncated or another format)"),
    (re.compile(r"Weights only load failed\.?"), "refused by the safe (weights-only) unpickler:"),
    (re.compile(r"WeightsUnpickler error:"), ""),
    (re.compile(r"\bEOFError\b:?\s*(?=$|\))"), "EOFError (the file is empty or truncated)"),
    (re.compile(r"\(\s*\)"), "(no details)"),
)


def plain_line(text: str) -> str:
    """One printable line: no terminal escape codes, no line breaks, no torch advice, no empty reasons."""
    text = _ANSI.sub("", text)
    for pattern in _NOISE:
        text = pattern.sub(" ", text)
    for pattern, replacement in _REWRITES:
        text = pattern.sub(replacement, text)
    text = " ".join(text.split())
    text = re.sub(r"\s+([,.;)])", r"\1", text)
    text = re.sub(r":(\s*:)+", ":", text)
    return text.rstrip(" :") or "unknown error"


_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
_DISK_FULL_TEXT = ("No space left", "File too large", "quota exceeded",  # h5py reports them only as text
                   *(f"errno = {code}" for code in _DISK_FULL_ERRNOS))


def is_disk_full(error: BaseException) -> bool:
    if getattr(error, "errno", None) in _DISK_FULL_ERRNOS:
        return True
    return isinstance(error, (OSError, RuntimeError)) and any(
        text.lower() in str(error).lower() for text in _DISK_FULL_TEXT)


def disk_full_error(error: BaseException, where) -> DiskFullError:
    """The one line for a full disk, quota or file size limit, naming the file being written."""
    where = getattr(error, "filename", None) or where
    reason = getattr(error, "strerror", None) or "disk full, quota exceeded or file size limit reached"
    return DiskFullError(f"{where}: cannot write ({reason}); free space and rerun the same command to resume")


class Terminated(BaseException):
    """SIGTERM (scancel, kill, a time limit) turned into an exception so that locks and logs are released."""


def failure(error: BaseException) -> tuple[int, str]:
    """(exit code, one line) for anything that ends a command: the CLI prints the line, the run's log records it."""
    if isinstance(error, VirNucProError):
        return error.exit_code, str(error)
    if is_disk_full(error):
        return failure(disk_full_error(error, "output"))
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted"
    if isinstance(error, Terminated):
        return EXIT_TERMINATED, "terminated (SIGTERM)"
    if isinstance(error, OSError):
        where = f"{error.filename}: " if error.filename else ""
        return EXIT_SYSTEM, plain_line(f"{where}{error.strerror or error}")
    return EXIT_INTERNAL, plain_line(f"internal error (a bug; please report it): {type(error).__name__}: {error}")
