"""The engine's block grid: contiguous cover, a small first block, and the same blocks after a resume."""

from __future__ import annotations

import pytest

from virnucpro.engine.batches import BlockPlan


@pytest.mark.parametrize("start,stop,step,first", [(0, 10_000, 4096, 256), (17, 9000, 1000, 256), (5, 6, 4, 256),
                                                   (0, 100, 8, 2), (3, 3, 8, 2)])
def test_blocks_cover_the_range_contiguously_and_start_small(start, stop, step, first):
    ranges = BlockPlan(start, stop, step, first_block_frames=first).ranges()
    assert [a for a, _ in ranges[1:]] == [b for _, b in ranges[:-1]]
    if stop > start:
        assert ranges[0][0] == start and ranges[-1][1] == stop
        assert ranges[0][1] - ranges[0][0] == min(first, step, stop - start)
        assert all(0 < b - a <= step for a, b in ranges)
    else:
        assert ranges == []


@pytest.mark.parametrize("step,first", [(4096, 256), (7, 3), (5, 9)])
def test_a_resume_from_any_block_boundary_gives_the_uninterrupted_blocks(step, first):
    anchor, stop = 100, 100 + 20 * step + 3
    whole = BlockPlan(anchor, stop, step, anchor=anchor, first_block_frames=first).ranges()
    for k, (resume_at, _) in enumerate(whole):
        assert BlockPlan(resume_at, stop, step, anchor=anchor, first_block_frames=first).ranges() == whole[k:]


def test_a_gap_inside_the_shard_is_cut_on_the_shard_grid():
    plan = BlockPlan(300, 700, 100, anchor=0, first_block_frames=50)  # grid: 0, 50, 150, 250, 350, ...
    assert plan.ranges() == [(300, 350), (350, 450), (450, 550), (550, 650), (650, 700)]


def test_an_anchor_after_the_first_frame_is_refused():
    with pytest.raises(ValueError, match="anchor"):
        BlockPlan(10, 20, 4, anchor=11).ranges()
