"""The one way virnucpro opens a torch pickle (.pt / .pth / pytorch_model.bin): `torch.load` restricted to
tensors and plain containers (weights_only), plus the few classes a caller allows by name, memory-mapped when the
file's format permits it.

Callers: the ESM-2, DNABERT-S and classifier loaders, `models convert`, and the fair-esm reference.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from typing import Iterator, Sequence

import torch

# fair-esm checkpoints keep their configuration as an argparse.Namespace ({"cfg": {"model": Namespace(...)}}).
FAIR_ESM_GLOBALS = (argparse.Namespace,)


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


def load_torch_file(path: str | os.PathLike, allowed: Sequence[type] = ()):
    """The unpickled object of a torch.save file, on the CPU, tensors memory-mapped where possible.

    Raises what torch raises (pickle.UnpicklingError for a global outside the allow-list): callers turn it into a
    ModelError naming their file.
    """
    with allowed_globals(allowed):
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            # torch's legacy (pre-zip) format cannot be memory-mapped: read it whole
            return torch.load(path, map_location="cpu", weights_only=True)
