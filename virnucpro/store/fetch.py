"""Resumable, verified downloads with the standard library only (urllib).

A file is downloaded to `<name>.part` (continued with an HTTP Range request when a `.part` exists), hashed
while it is written, checked against the expected sha256 (pinned, published or recorded in the lock), then
fsynced and renamed to its final name. A reader never sees a half-downloaded model under its real name.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import logging
import os
import re
import shutil
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from virnucpro import __version__
from virnucpro.errors import ModelError
from virnucpro.io.atomic import fsync_dir
from virnucpro.store.catalog import CatalogFile, CatalogModel, StoreLocations, human_size
from virnucpro.store.lockfile import Lock, sha256_file, verify_file

log = logging.getLogger(__name__)

Progress = Callable[[int, int | None], None]  # (bytes done, total bytes or None)
_BLOCK = 1 << 20
_DISK_ERRORS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class _Transient(Exception):
    """A network failure worth retrying (the .part file keeps what arrived)."""


@dataclass
class _Response:
    handle: http.client.HTTPResponse
    offset: int  # where the body starts in the file
    total: int | None


def download(url: str, dest: str | os.PathLike, *, expected_sha256: str | None = None, attempts: int = 4,
             timeout: float = 60.0, retry_delay: float = 2.0, progress: Progress | None = None) -> str:
    """Download `url` to `dest` atomically and return its sha256; resume from `dest.part` when one exists."""
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = _download_with_retries(url, part, attempts, timeout, retry_delay, progress)
    if expected_sha256 and digest != expected_sha256.lower():
        part.unlink(missing_ok=True)
        raise ModelError(dest, f"sha256 {digest} of the download from {url} does not match the expected "
                               f"{expected_sha256}; the download was discarded")
    _commit(part, dest)
    return digest


def _download_with_retries(url, part: Path, attempts: int, timeout: float, retry_delay: float,
                           progress: Progress | None) -> str:
    last: Exception | None = None
    for attempt in range(1, max(1, attempts) + 1):
        try:
            return _transfer(url, part, timeout, progress)
        except _Transient as error:
            last = error.__cause__ or error
            kept = part.stat().st_size if part.exists() else 0
            log.warning("download of %s interrupted (%s), attempt %d/%d, %d bytes kept", url, last, attempt,
                        attempts, kept)
            if attempt < attempts:
                time.sleep(retry_delay * attempt)
    raise ModelError(part.with_suffix(""), f"download from {url} failed after {attempts} attempts ({last}); "
                                           f"the partial file {part.name} is kept: run the same command to resume")


def _transfer(url: str, part: Path, timeout: float, progress: Progress | None) -> str:
    """One request: continue `part` from its current size; return the sha256 of the complete file."""
    offset = part.stat().st_size if part.exists() else 0
    response = _open(url, offset, timeout)
    if response is None:  # 416: nothing left to send, the part is complete
        return sha256_file(part)
    digest = _hash_prefix(part, response.offset)
    with response.handle as body, open(part, "r+b" if part.exists() else "wb", buffering=0) as out:
        out.truncate(response.offset)  # a server that ignores Range restarts us from 0
        out.seek(response.offset)
        _check_space(part, response)
        done = response.offset
        try:
            while block := body.read(_BLOCK):
                _write_all(out, block, part)
                digest.update(block)
                done += len(block)
                if progress:
                    progress(done, response.total)
        except (http.client.HTTPException, OSError) as error:
            raise _Transient(str(error)) from error
        _fsync(out)
    if response.total is not None and done != response.total:
        raise _Transient(f"connection closed at {done} of {response.total} bytes")
    return digest.hexdigest()


def _open(url: str, offset: int, timeout: float) -> _Response | None:
    headers = {"User-Agent": f"virnucpro/{__version__}", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        handle = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as error:
        return _http_error(url, error, offset)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        raise _Transient(str(getattr(error, "reason", error))) from error
    length = handle.headers.get("Content-Length")
    if handle.status == 206:
        start, total = _content_range(url, handle.headers.get("Content-Range", ""), offset)
        return _Response(handle, start, total)
    return _Response(handle, 0, int(length) if length and length.isdigit() else None)


def _http_error(url: str, error: urllib.error.HTTPError, offset: int) -> None:
    if error.code == 416 and offset:
        match = re.fullmatch(r"bytes \*/(\d+)", error.headers.get("Content-Range", "") or "")
        if match and int(match.group(1)) == offset:
            return None
        raise _Transient("server refused to resume (416): restarting") from error
    if error.code >= 500 or error.code == 429:
        raise _Transient(f"HTTP {error.code} {error.reason}") from error
    raise ModelError(url, f"HTTP {error.code} {error.reason}: the file is not there "
                          "(check the URL or --mirror / VIRNUCPRO_MODELS_MIRROR)") from None


def _content_range(url: str, header: str, offset: int) -> tuple[int, int | None]:
    match = _CONTENT_RANGE.fullmatch(header.strip())
    if not match or int(match.group(1)) != offset:
        raise ModelError(url, f"server answered Range bytes={offset}- with Content-Range '{header}'")
    return offset, None if match.group(3) == "*" else int(match.group(3))


def _hash_prefix(part: Path, length: int):
    """sha256 state after the first `length` bytes already on disk (the part we resume from)."""
    digest = hashlib.sha256()
    if length:
        with open(part, "rb") as handle:
            remaining = length
            while remaining and (block := handle.read(min(_BLOCK, remaining))):
                digest.update(block)
                remaining -= len(block)
    return digest


def _check_space(part: Path, response: _Response) -> None:
    if response.total is None:
        return
    needed = response.total - response.offset
    free = shutil.disk_usage(part.parent).free
    if needed > free:
        raise ModelError(part, f"not enough disk space: {needed / 1e9:.2f} GB still to download, "
                               f"{free / 1e9:.2f} GB free in {part.parent}")


def _write_all(out, block: bytes, part: Path) -> None:
    view = memoryview(block)
    try:
        while view:
            written = out.write(view)
            view = view[written:]
    except OSError as error:
        if error.errno in _DISK_ERRORS:
            raise ModelError(part, f"disk full or file too large ({os.strerror(error.errno)}); the partial "
                                   "download is kept: free space and run the same command to resume") from None
        raise


def _fsync(out) -> None:
    try:
        os.fsync(out.fileno())
    except OSError as error:
        raise ModelError(out.name, f"could not flush the download to disk ({error})") from None


def _commit(part: Path, dest: Path) -> None:
    os.replace(part, dest)
    fsync_dir(dest.parent)


# ---------------------------------------------------------------------------------------------------------------
# Models: which files, already present or not, expected sums.


@dataclass
class FileOutcome:
    key: str  # lock key: <folder>/<name>
    path: Path
    status: str  # downloaded | present | in place | recorded


def expected_sum(model: CatalogModel, file: CatalogFile, pins: dict[str, str], lock: Lock) -> str | None:
    """A user pin wins, then the publisher's sum, then the sum recorded at the first download."""
    key = model.relpath(file)
    pinned = pins.get(key) or pins.get(file.name) or (pins.get(model.key) if file is model.weights else None)
    if pinned:
        return pinned.lower()
    if file.sha256:
        return file.sha256
    entry = lock.entries.get(key)
    return entry.sha256 if entry else None


def find_in_place(model: CatalogModel, file: CatalogFile, locations: StoreLocations) -> Path | None:
    """The file in the models directory, else in torch hub / the HF cache (one folder must hold the whole model)."""
    own = locations.models_dir / model.folder
    for folder in [own, *locations.in_place_dirs(model)]:
        if folder != own and not all(_present(folder, f) for f in model.files if not f.optional):
            continue
        found = _present(folder, file)
        if found:
            return found
    return None


def _present(folder: Path, file: CatalogFile) -> Path | None:
    for name in (file.name, *file.alternatives):
        if (folder / name).is_file():
            return folder / name
    return None


def fetch_file(model: CatalogModel, file: CatalogFile, locations: StoreLocations, lock: Lock,
               pins: dict[str, str], progress: Progress | None = None, **download_options) -> FileOutcome:
    expected = expected_sum(model, file, pins, lock)
    found = find_in_place(model, file, locations)
    if found is not None:
        key = model.relpath(file, found.name)
        status = verify_file(found, lock, key, expected=expected)
        in_models_dir = found.parent == locations.models_dir / model.folder
        label = "present" if in_models_dir else "in place"
        return FileOutcome(key, found, label if status in ("ok", "rehashed") else f"{label}, recorded")
    dest = locations.models_dir / model.folder / file.name
    url = locations.url(file)
    log.info("fetching %s (about %s) from %s", file.name, human_size(file.approx_bytes), url)
    digest = download(url, dest, expected_sha256=expected, progress=progress, **download_options)
    lock.record(model.relpath(file), dest, digest, url=url)
    lock.save()  # after every file: an interrupted multi-file fetch keeps the sums it already has
    return FileOutcome(model.relpath(file), dest, "downloaded")


def fetch_models(models: list[CatalogModel], locations: StoreLocations, pins: dict[str, str] | None = None,
                 progress_factory: Callable[[CatalogFile], Progress | None] | None = None,
                 **download_options) -> list[FileOutcome]:
    """Fetch every file of `models` that is not already present; record or check every sum in the lock."""
    lock = Lock.load(locations.models_dir)
    outcomes = []
    try:
        for model in models:
            for file in model.files:
                progress = progress_factory(file) if progress_factory else None
                outcomes.append(fetch_file(model, file, locations, lock, pins or {}, progress, **download_options))
    finally:
        lock.save_if_dirty()
    return outcomes


def parse_pins(specs: list[str], pins_file: str | os.PathLike | None = None) -> dict[str, str]:
    """`NAME=HEX` options and a pins file in `sha256sum` format (`HEX  NAME` per line, # comments)."""
    pins: dict[str, str] = {}
    lines = Path(pins_file).read_text(encoding="utf-8").splitlines() if pins_file else []
    for number, line in enumerate(lines, 1):
        fields = line.split("#", 1)[0].split()
        if fields:
            pins[_pin_name(fields[-1])] = _pin_hex(fields[0], pins_file, number)
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep:
            raise ModelError(spec, "--sha256 expects NAME=HEX (file name, folder/name or model key)")
        pins[_pin_name(name)] = _pin_hex(value, "--sha256", None, name)
    return pins


def _pin_name(name: str) -> str:
    return name.lstrip("*")  # sha256sum marks binary mode with '*'


def _pin_hex(value: str, where, line: int | None, name: str | None = None) -> str:
    value = value.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ModelError(where if line is None else f"{where}:{line}",
                         f"'{value}' is not a sha256 (64 hex digits)", key=name)
    return value


def file_status(model: CatalogModel, file: CatalogFile, locations: StoreLocations, lock: Lock) -> tuple[str, str, str]:
    """(status, size, where) of one catalog file, as `models list` shows it."""
    found = find_in_place(model, file, locations)
    if found is None:
        part = locations.models_dir / model.folder / (file.name + ".part")
        if part.is_file():
            return "partial", f"{human_size(part.stat().st_size)} of ~{human_size(file.approx_bytes)}", str(part)
        return "missing", f"~{human_size(file.approx_bytes)}", ""
    recorded = model.relpath(file, found.name) in lock.entries
    status = "present" if found.parent == locations.models_dir / model.folder else "in place"
    return f"{status}{'' if recorded else ' (sum not recorded yet)'}", human_size(found.stat().st_size), str(found)
