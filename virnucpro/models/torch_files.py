"""The one way virnucpro opens a torch pickle (.pt / .pth / pytorch_model.bin), without running code from it.

1. The file's layout is checked first (torch zip archive or legacy pickle; a TorchScript archive, an empty,
   truncated or foreign file is refused with a plain line).
2. Fast path: `torch.load(weights_only=True)`, memory-mapped for zip archives, accepting tensors, plain
   containers and the few classes a caller names (`allowed`).
3. If weights_only refuses the file, it is read again with `restricted_pickle` under the caller's
   `PicklePolicy`: expected classes (a fairseq/omegaconf config, the published MLPClassifier under any module
   name) become inert stand-ins, anything else is refused. This second read is memory-mapped too: the tensors'
   bytes are paged in only when used, so a 5.7 GB checkpoint is never read twice into memory.

Every failure is a ModelError: one plain line naming the file (no torch advice, no ANSI codes).
Callers: the ESM-2, DNABERT-S and classifier loaders, `models convert`, and the DNABERT-S reference.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Iterator, Sequence

import torch

from virnucpro.errors import ModelError
from virnucpro.models.restricted_pickle import TENSORS_ONLY, PicklePolicy, RefusedGlobal, pickle_module

# fair-esm checkpoints keep their configuration as an argparse.Namespace ({"cfg": {"model": Namespace(...)}}).
FAIR_ESM_GLOBALS = (argparse.Namespace,)

# A legacy (pre-zip) torch file starts with torch's magic number pickled with protocol 2.
_LEGACY_MAGIC = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)[2:-1]
_ZIP_MAGIC = b"PK\x03\x04"


@contextlib.contextmanager
def allowed_globals(classes: Sequence[type]) -> Iterator[None]:
    """Context in which weights_only unpickling also accepts `classes` (and nothing else new)."""
    if not classes:
        yield
    elif hasattr(torch.serialization, "safe_globals"):  # torch >= 2.5
        with torch.serialization.safe_globals(list(classes)):
            yield
    else:  # torch 2.4 has only the process-wide allow-list; callers allow inert classes only
        torch.serialization.add_safe_globals(list(classes))
        yield


def load_torch_file(path: str | os.PathLike, *, policy: PicklePolicy = TENSORS_ONLY, allowed: Sequence[type] = ()):
    """The unpickled object of a torch.save file, on the CPU (tensors saved on a GPU included), tensors
    memory-mapped for zip archives. `allowed`: extra classes for the weights_only fast path; `policy`: what the
    restricted second read accepts when weights_only refuses. Raises ModelError naming `path`."""
    path = Path(path)
    layout = torch_file_layout(path)
    try:
        try:
            with allowed_globals(allowed):
                return torch.load(path, map_location="cpu", weights_only=True, mmap=layout == "zip")
        except pickle.UnpicklingError:
            pass  # something beyond plain tensors: the restricted reader accepts it or names what it refuses
        return _load_restricted(path, layout, policy)
    except RefusedGlobal as refusal:
        raise ModelError(path, f"refused to unpickle: {refusal}; no code from the file is run") from None
    except Exception as error:  # noqa: BLE001 - torch and pickle raise many types for a damaged file
        raise ModelError(path, f"corrupt torch file ({plain_reason(error)})") from None


def torch_file_layout(path: Path) -> str:
    """'zip' or 'legacy'; ModelError for anything torch.load should not be given."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
    except FileNotFoundError:
        raise ModelError(path, "file not found") from None
    except OSError as error:
        raise ModelError(path, f"cannot read: {error.strerror or plain_reason(error)}") from None
    if not head:
        raise ModelError(path, "empty file, not a torch checkpoint")
    if head.startswith(_ZIP_MAGIC):
        _check_zip_archive(path)
        return "zip"
    if head[:1] == b"\x80" and head[2:2 + len(_LEGACY_MAGIC)] == _LEGACY_MAGIC:
        return "legacy"
    raise ModelError(path, "not a torch checkpoint (neither a torch zip archive nor a legacy torch file)")


def _check_zip_archive(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as error:
        raise ModelError(path, f"truncated or corrupt torch zip archive ({plain_reason(error)})") from None
    if any(name.endswith("/constants.pkl") or name == "constants.pkl" for name in names):
        raise ModelError(path, "a TorchScript archive (it holds code), not a checkpoint of weights")
    if not any(name.endswith("/data.pkl") or name == "data.pkl" for name in names):
        raise ModelError(path, "a zip archive without data.pkl, not a torch checkpoint")


def _load_restricted(path: Path, layout: str, policy: PicklePolicy):
    # torch.load uses a custom pickle_module only with weights_only=False; that module's unpickler is the
    # restricted one, so no global outside its allowlist and the policy's inert stand-ins is ever resolved.
    # The layout check above already excluded TorchScript archives, which torch.load would hand to torch.jit.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy files: torch's "source of class ... has changed" notices
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=pickle_module(policy),
                          mmap=layout == "zip")


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def plain_reason(error: BaseException) -> str:
    """One plain line from an exception: its first non-empty line, ANSI codes removed, never empty, cut at torch's
    boilerplate ("This is an internal miniz error...")."""
    lines = [_ANSI.sub("", line).strip() for line in str(error).splitlines()]
    first = next((line for line in lines if line), "")
    first = re.split(r"\. (?:This is an internal|If you are seeing|Re-running|Check the documentation)", first)[0]
    return first[:300] or type(error).__name__
