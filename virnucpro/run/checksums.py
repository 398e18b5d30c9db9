"""Streamed sha256 of input, model and prepared files, cached so that resumes never rehash a 6 GB model.

The cache key is (path, device, inode, size, mtime, ctime). mtime alone can be set back by anyone (`touch -d`,
`cp -p`, rsync), so a file edited in place could keep its key; ctime cannot be set by a user: every write,
truncate, rename, chmod or replacement moves it to the current time, and a file replaced by another has a new
inode. Any change made through the file system therefore changes the key and the file is hashed again; an
unchanged 6 GB model is not. (Re-hashing everything on every resume would cost minutes for a large input.)

Model files are also looked up in, and added to, a cache shared by every run (`SHARED_NAME` in the model store),
under the same key: a new run directory with the same model files does not hash 6 GB again (~12 s on a 2-core VM).
Only model files go there (their number is bounded; inputs and prepared files are per run). The shared cache is
best effort: unreadable or unwritable, it costs a rehash, never an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from virnucpro.errors import RunStateError
from virnucpro.io.atomic import write_text_atomic
from virnucpro.store.lockfile import sha256_file

log = logging.getLogger(__name__)
SHARED_NAME = "virnucpro-checksums.json"  # in the model store folder: the model-file checksums every run shares


def shared_cache_path(models_dir: Path) -> Path:
    return Path(models_dir) / SHARED_NAME

def cache_key(path: Path) -> str:
    stat = path.stat()
    return f"{path}|{stat.st_dev}|{stat.st_ino}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ctime_ns}"


class ChecksumCache:
    """A JSON file mapping `cache_key` to sha256; a changed file gets a new key and is rehashed."""

    def __init__(self, path: Path, shared: Path | None = None):
        """`shared`: the user's cache of model-file checksums (`file_identity(..., shared=True)` reads and adds)."""
        self.path = Path(path)
        self.entries = self._load()
        self.dirty = False
        self.shared = ChecksumCache(shared) if shared is not None else None

    def _load(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}  # a missing, unreadable or torn cache only costs a rehash

    def sha256(self, path: Path, shared: bool = False) -> str:
        path = Path(path).resolve()
        key = cache_key(path)
        if key not in self.entries:
            layer = self.shared if shared else None
            known = layer.entries.get(key) if layer is not None else None
            self._put(path, key, known or sha256_file(path))
            if layer is not None and known is None:
                layer._put(path, key, self.entries[key])
        return self.entries[key]

    def _put(self, path: Path, key: str, sha: str) -> None:
        for old in [k for k in self.entries if k.startswith(f"{path}|")]:
            del self.entries[old]  # that file's earlier versions
        self.entries[key] = sha
        self.dirty = True

    def file_identity(self, path: Path, shared: bool = False) -> dict:
        """{path, size, sha256} of a file, or of every file in a folder (a DNABERT-S checkpoint); `shared`: also
        through the user's cache of model-file checksums."""
        path = Path(path).resolve()
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            parts = {p.name: self.sha256(p, shared) for p in files}
            digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
            return {"path": str(path), "size": sum(p.stat().st_size for p in files), "sha256": digest}
        return {"path": str(path), "size": path.stat().st_size, "sha256": self.sha256(path, shared)}

    def save(self) -> None:
        if self.dirty:
            write_text_atomic(self.path, json.dumps(self.entries, indent=1, sort_keys=True))
            self.dirty = False
        if self.shared is not None:
            try:
                self.shared.path.parent.mkdir(parents=True, exist_ok=True)
                self.shared.save()
            except OSError as error:  # a read-only home or a full disk: the next new run hashes again
                log.debug("shared checksum cache %s not saved: %s", self.shared.path, error)


def prepared_files_problems(prep_dir: Path, recorded: dict, cache: ChecksumCache) -> list[str]:
    """Prepared files that are missing or differ from the sha256 recorded when the run was planned."""
    problems = []
    for name, sha in sorted(recorded.items()):
        path = Path(prep_dir) / name
        if not path.is_file():
            problems.append(f"{path} is missing")
        elif (now := cache.sha256(path)) != sha:
            problems.append(f"{path} changed since planning (sha256 {sha[:12]}, now {now[:12]})")
    return problems


def check_prepared(prep_dir: Path, recorded: dict, cache: ChecksumCache) -> None:
    """The prepared files are those recorded when the run was planned: resume and aggregation trust nothing else."""
    problems = prepared_files_problems(prep_dir, recorded, cache)
    cache.save()
    if problems:
        raise RunStateError(f"{prep_dir}: the prepared files cannot be trusted: {'; '.join(problems)} "
                            "(use --force-restart to prepare the input again)")
