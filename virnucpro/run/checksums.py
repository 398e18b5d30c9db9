"""Streamed sha256 of input and model files, cached by (path, size, mtime) so resumes never rehash a 6 GB model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from virnucpro.io.atomic import write_text_atomic
from virnucpro.store.lockfile import sha256_file

class ChecksumCache:
    """A JSON file mapping 'path|size|mtime_ns' to sha256; a changed file gets a new key and is rehashed."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.entries = self._load()
        self.dirty = False

    def _load(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return {}  # a missing or torn cache only costs a rehash

    def sha256(self, path: Path) -> str:
        path = Path(path).resolve()
        stat = path.stat()
        key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
        if key not in self.entries:
            self.entries[key] = sha256_file(path)
            self.dirty = True
        return self.entries[key]

    def file_identity(self, path: Path) -> dict:
        """{path, size, sha256} of a file, or of every file in a folder (a DNABERT-S checkpoint)."""
        path = Path(path).resolve()
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            parts = {p.name: self.sha256(p) for p in files}
            digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
            return {"path": str(path), "size": sum(p.stat().st_size for p in files), "sha256": digest}
        return {"path": str(path), "size": path.stat().st_size, "sha256": self.sha256(path)}

    def save(self) -> None:
        if self.dirty:
            write_text_atomic(self.path, json.dumps(self.entries, indent=1, sort_keys=True))
            self.dirty = False
