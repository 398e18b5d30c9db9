"""Modules as shapes only, for checkpoint tensors to be assigned into: parameters on the meta device and no
initialisation code run.

`torch.device("meta")` alone still runs each module's `reset_parameters`; nn.Embedding's `normal_` has no meta
kernel and goes through torch's Python decompositions, whose first use imports torch._dynamo (with sympy and
triton: ~1.4 s of a process's start-up, spent before the first weight is read even where nothing is compiled).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, TypeVar

import torch
from torch.nn import init

# every torch.nn.init function the modules of virnucpro (Linear, Embedding, LayerNorm) call from reset_parameters
_INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "kaiming_uniform_",
                   "kaiming_normal_", "xavier_uniform_", "xavier_normal_")

Module = TypeVar("Module", bound=torch.nn.Module)


def _keep(tensor: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    return tensor


@contextlib.contextmanager
def _no_init() -> Iterator[None]:
    """torch.nn.init disabled process-wide for the duration: checkpoints are read one at a time on one thread, and
    nothing else builds modules then (a module built by another thread meanwhile would go uninitialised)."""
    saved = {name: getattr(init, name) for name in _INIT_FUNCTIONS if hasattr(init, name)}
    try:
        for name in saved:
            setattr(init, name, _keep)
        yield
    finally:
        for name, function in saved.items():
            setattr(init, name, function)


def skeleton(build: Callable[[], Module]) -> Module:
    """`build()` run with parameters on the meta device and torch.nn.init disabled; load with assign=True."""
    with torch.device("meta"), _no_init():
        return build()
