"""Pack variable-length token arrays into batches under a token budget (no padding).

Planning is first-fit-decreasing with a bounded window of open batches: sequences are taken longest first and
each goes into the first of the last `OPEN_BATCHES` batches that still has room, else into a new batch (the
oldest open batch is closed once the window is full). Full FFD scans every batch ever opened (O(n * batches));
the window keeps it O(n * OPEN_BATCHES) for millions of sequences. Because items arrive in descending order,
a batch is only closed after an item no smaller than every later one failed to fit in it, so each closed batch
wastes less than one sequence's length: with protein frames of <= ~170 tokens and budgets of >= 8192 tokens,
every batch but the last few open ones is > 97% full.
A sequence longer than the budget gets a batch of its own.

Positions restart at 0 for every sequence: models derive them from `cu_seqlens`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

OPEN_BATCHES = 8


@dataclass
class PackedBatch:
    input_ids: torch.Tensor  # int64 [total_tokens]
    cu_seqlens: torch.Tensor  # int32 [n + 1], starts at 0
    max_len: int


def plan_batches(lengths: Sequence[int], token_budget: int) -> list[list[int]]:
    """Group sequence indices into batches whose total length is <= token_budget (longest first)."""
    if token_budget <= 0:
        raise ValueError(f"token_budget must be positive, got {token_budget}")
    lengths = np.asarray(lengths, dtype=np.int64)
    descending = np.argsort(-lengths, kind="stable")
    closed: list[list[int]] = []
    open_members: list[list[int]] = []
    open_room: list[int] = []
    for index, length in zip(descending.tolist(), lengths[descending].tolist()):
        if length > token_budget:
            closed.append([index])
            continue
        slot = next((s for s, room in enumerate(open_room) if room >= length), None)
        if slot is None:
            if len(open_members) == OPEN_BATCHES:
                closed.append(open_members.pop(0))
                open_room.pop(0)
            open_members.append([])
            open_room.append(token_budget)
            slot = len(open_members) - 1
        open_members[slot].append(index)
        open_room[slot] -= length
    return closed + open_members


def pack(arrays: Sequence[np.ndarray]) -> PackedBatch:
    """Concatenate per-sequence token arrays (in the given order) into one packed batch."""
    if len(arrays) == 0:
        raise ValueError("cannot pack an empty list of sequences")
    lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
    cu_seqlens = np.zeros(len(arrays) + 1, dtype=np.int32)
    np.cumsum(lengths, out=cu_seqlens[1:])
    input_ids = torch.from_numpy(np.concatenate(arrays).astype(np.int64, copy=False))
    return PackedBatch(input_ids=input_ids, cu_seqlens=torch.from_numpy(cu_seqlens), max_len=int(lengths.max()))
