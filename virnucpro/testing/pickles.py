"""Pickle a class under any module name, as files saved by other people's scripts name it (tests, selftest)."""

from __future__ import annotations

import contextlib
import sys
import types
from typing import Iterator


@contextlib.contextmanager
def pickled_as(cls: type, module: str, name: str | None = None) -> Iterator[type]:
    """Within the context pickle writes `cls` as the global `module.name` (default: its own name); `module` need
    not exist: it (and its parents) are made resolvable in sys.modules for pickle's identity check, then removed.
    `cls` itself gets its names back afterwards."""
    name = name or cls.__name__
    saved_names = (cls.__module__, cls.__qualname__, cls.__name__)
    added = [prefix for prefix in _prefixes(module) if prefix not in sys.modules]
    for prefix in added:
        sys.modules[prefix] = types.ModuleType(prefix)
    holder = sys.modules[module]
    missing = object()
    previous = getattr(holder, name, missing)
    cls.__module__, cls.__qualname__, cls.__name__ = module, name, name
    setattr(holder, name, cls)
    try:
        yield cls
    finally:
        cls.__module__, cls.__qualname__, cls.__name__ = saved_names
        if previous is missing:
            delattr(holder, name)
        else:
            setattr(holder, name, previous)
        for prefix in added:
            del sys.modules[prefix]


def _prefixes(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
