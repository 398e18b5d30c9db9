import numpy as np
import pytest
import torch

from virnucpro.pack import OPEN_BATCHES, pack, plan_batches


def _lengths(seed=0, n=500, high=170):
    return np.random.default_rng(seed).integers(3, high, size=n).tolist()


@pytest.mark.parametrize("budget", [170, 512, 4096])
def test_every_index_once_and_budget_respected(budget):
    lengths = _lengths()
    batches = plan_batches(lengths, budget)
    flat = sorted(i for batch in batches for i in batch)
    assert flat == list(range(len(lengths)))
    for batch in batches:
        assert sum(lengths[i] for i in batch) <= budget


def test_longer_than_budget_goes_alone():
    lengths = [10, 900, 20, 30, 1000, 5]
    batches = plan_batches(lengths, 100)
    alone = [b for b in batches if any(lengths[i] > 100 for i in b)]
    assert sorted(map(tuple, alone)) == [(1,), (4,)]
    assert sorted(i for b in batches for i in b) == list(range(6))


def test_first_fit_decreasing_order():
    # FFD by hand, budget 10: 7 -> A (room 3); 6 -> B (room 4); 4 -> B (A too full); 3 -> A; 2 -> new C; 1 -> C
    lengths = [3, 7, 1, 6, 4, 2]
    assert plan_batches(lengths, 10) == [[1, 0], [3, 4], [5, 2]]


def test_matches_unbounded_ffd_when_few_batches():
    """With fewer batches than the open window, the plan is exactly textbook first-fit-decreasing."""
    lengths = _lengths(seed=3, n=60, high=40)
    budget = 400
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    bins, rooms = [], []
    for i in order:
        slot = next((s for s, r in enumerate(rooms) if r >= lengths[i]), None)
        if slot is None:
            bins.append([]), rooms.append(budget)
            slot = len(bins) - 1
        bins[slot].append(i)
        rooms[slot] -= lengths[i]
    assert len(bins) <= OPEN_BATCHES
    assert plan_batches(lengths, budget) == bins


def test_efficiency_high_for_protein_frames():
    lengths = _lengths(seed=1, n=20000)
    batches = plan_batches(lengths, 8192)
    assert sorted(i for members in batches for i in members) == list(range(len(lengths)))
    assert sum(lengths) / (8192 * len(batches)) > 0.97  # real tokens / token capacity


def test_pack_concatenates_with_cu_seqlens():
    arrays = [np.array([0, 5, 2]), np.array([0, 2]), np.array([0, 4, 4, 4, 2])]
    batch = pack(arrays)
    assert batch.input_ids.dtype == torch.int64
    assert batch.input_ids.tolist() == [0, 5, 2, 0, 2, 0, 4, 4, 4, 2]
    assert batch.cu_seqlens.dtype == torch.int32
    assert batch.cu_seqlens.tolist() == [0, 3, 5, 10]
    assert batch.max_len == 5


def test_pack_single_and_empty():
    batch = pack([np.array([0, 2])])
    assert batch.cu_seqlens.tolist() == [0, 2] and batch.max_len == 2
    with pytest.raises(ValueError):
        pack([])
    with pytest.raises(ValueError):
        plan_batches([1, 2], 0)
