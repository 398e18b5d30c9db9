"""virnucpro-models.lock.json: the sha256 of every model file, recorded at its first download (or first use
when the file was placed by hand), then checked on every later use.

A quick check trusts a file whose path, size and mtime are those recorded with its sum; anything else is
re-hashed. `virnucpro models verify` re-hashes everything.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from virnucpro.errors import ModelError
from virnucpro.io.atomic import write_text_atomic

log = logging.getLogger(__name__)

LOCK_NAME = "virnucpro-models.lock.json"
LOCK_VERSION = 1
_HASH_BLOCK = 8 << 20


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class LockEntry:
    sha256: str
    size: int
    mtime_ns: int
    path: str  # where the file was when hashed (models dir, torch hub, HF cache)
    url: str = ""
    recorded: str = ""


@dataclass
class Lock:
    path: Path
    entries: dict[str, LockEntry] = field(default_factory=dict)
    dirty: bool = False

    @classmethod
    def load(cls, models_dir: str | os.PathLike) -> "Lock":
        path = Path(models_dir) / LOCK_NAME
        if not path.exists():
            return cls(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            entries = {key: LockEntry(**value) for key, value in raw["files"].items()}
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ModelError(path, f"unreadable lock file ({error}); fix or delete it to re-record the sums") from None
        return cls(path, entries)

    def key_for(self, path: str | os.PathLike) -> str:
        """Files inside the models directory are keyed by their relative path, others by their absolute path."""
        path = Path(path).absolute()
        try:
            return path.relative_to(self.path.parent.absolute()).as_posix()
        except ValueError:
            return str(path)

    def record(self, key: str, path: Path, sha256: str, url: str = "") -> None:
        stat = path.stat()
        self.entries[key] = LockEntry(sha256=sha256, size=stat.st_size, mtime_ns=stat.st_mtime_ns,
                                      path=str(path.absolute()), url=url or self._old_url(key),
                                      recorded=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        self.dirty = True

    def _old_url(self, key: str) -> str:
        old = self.entries.get(key)
        return old.url if old else ""

    def save(self) -> None:
        body = {"version": LOCK_VERSION, "files": {k: asdict(v) for k, v in sorted(self.entries.items())}}
        write_text_atomic(self.path, json.dumps(body, indent=2) + "\n")
        self.dirty = False

    def save_if_dirty(self) -> None:
        """Best effort: a read-only models directory (a SIF, a read-only bind mount) still runs."""
        if not self.dirty:
            return
        try:
            self.save()
        except OSError as error:
            log.warning("could not update %s (%s); sums will be recomputed next time", self.path, error)


def verify_file(path: str | os.PathLike, lock: Lock, key: str | None = None, *, expected: str | None = None,
                full: bool = False) -> str:
    """Check `path` against its lock record (and `expected`, a pinned or published sum).

    Returns "ok" (matches), "rehashed" (stat changed, content matches) or "recorded" (first sight: sum recorded).
    Raises ModelError naming the file on a mismatch or when it is missing. The caller saves the lock.
    """
    path = Path(path)
    key = key or lock.key_for(path)
    if not path.is_file():
        raise ModelError(path, "model file missing")
    entry = lock.entries.get(key)
    stat = path.stat()
    if entry and entry.size != stat.st_size:
        raise ModelError(path, f"size {stat.st_size} differs from the {entry.size} bytes recorded in {lock.path.name}; "
                               "the file is truncated or was replaced (delete it and fetch again)")
    want = expected.lower() if expected else (entry.sha256 if entry else None)
    if not full and entry and want == entry.sha256 and _stat_unchanged(entry, path, stat):
        return "ok"
    digest = sha256_file(path)
    if want and digest != want:
        origin = "the pinned/published sum" if expected else f"the sum recorded in {lock.path.name}"
        raise ModelError(path, f"sha256 {digest} does not match {origin} {want}; the file is corrupt or was "
                               "replaced (delete it and fetch again, or pin the new sum with --sha256)")
    if entry and entry.sha256 == digest and _stat_unchanged(entry, path, stat):
        return "ok"
    lock.record(key, path, digest)
    return "rehashed" if entry else "recorded"


def _stat_unchanged(entry: LockEntry, path: Path, stat: os.stat_result) -> bool:
    return entry.path == str(path.absolute()) and entry.size == stat.st_size and entry.mtime_ns == stat.st_mtime_ns
