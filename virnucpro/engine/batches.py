"""CPU side of the engine: DataLoader workers read prepared frames, tokenize both modalities and pack them.

Workers never touch CUDA. Each yields `Block`s of consecutive frames; worker w takes blocks w, w+W, ... and the
DataLoader's round-robin over workers hands them to the GPU loop in frame order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from virnucpro.io.prep_files import FrameSource
from virnucpro.pack import PackedBatch, pack, plan_batches


@dataclass
class PackedGroup:
    """Packed micro-batches of one modality for a block, plus where each sequence sits in the block."""

    batches: list[PackedBatch]
    orders: list[torch.Tensor]  # position in the block of each packed sequence, per batch (pack keeps the order)

    @property
    def tokens(self) -> int:
        return sum(int(batch.input_ids.numel()) for batch in self.batches)

    def pin_memory(self) -> "PackedGroup":
        for batch in self.batches:
            batch.input_ids = batch.input_ids.pin_memory()
            batch.cu_seqlens = batch.cu_seqlens.pin_memory()
        self.orders = [order.pin_memory() for order in self.orders]
        return self


@dataclass
class Block:
    start: int
    ids: list[str]
    protein: PackedGroup
    dna: PackedGroup

    def pin_memory(self) -> "Block":  # called by DataLoader(pin_memory=True)
        self.protein.pin_memory()
        self.dna.pin_memory()
        return self

    def __len__(self) -> int:
        return len(self.ids)


def unpacked(group: PackedGroup, rows: list[int]) -> list[np.ndarray]:
    """The token arrays of the block's sequences at positions `rows`, in that order (pack_group's inverse)."""
    wanted, arrays = set(rows), {}
    for batch, order in zip(group.batches, group.orders):
        positions = order.tolist()
        if wanted.isdisjoint(positions):
            continue
        bounds, tokens = batch.cu_seqlens.tolist(), batch.input_ids.numpy()
        for position, row in enumerate(positions):
            if row in wanted:
                arrays[row] = tokens[bounds[position]:bounds[position + 1]]
    return [arrays[row] for row in rows]


def select_rows(block: Block, rows: np.ndarray, esm_budget: int, dna_budget: int) -> Block:
    """A block of only `rows` (positions in `block`, ascending), packed afresh; its `start` is the parent's."""
    rows = [int(row) for row in rows]
    return Block(start=block.start, ids=[block.ids[row] for row in rows],
                 protein=pack_group(unpacked(block.protein, rows), esm_budget),
                 dna=pack_group(unpacked(block.dna, rows), dna_budget))


def pack_group(arrays: list[np.ndarray], token_budget: int) -> PackedGroup:
    lengths = [len(array) for array in arrays]
    batches, orders = [], []
    for members in plan_batches(lengths, token_budget):
        batches.append(pack([arrays[i] for i in members]))
        orders.append(torch.from_numpy(np.asarray(members, dtype=np.int64)))
    return PackedGroup(batches, orders)


@dataclass(frozen=True)
class BlockPlan:
    """Frames [start, stop) cut into blocks on a grid fixed at `anchor` (the shard's first frame).

    A resumed shard starts at a part boundary, which is a block boundary of this grid, so it packs its frames into
    the same blocks, and the GPU computes them in the same batches, as an uninterrupted run: bf16 results do not
    depend on where a run was killed. The first block is small so the GPU starts while workers fill the queue.
    """

    start: int
    stop: int
    block_frames: int
    anchor: int | None = None
    first_block_frames: int = 256

    def ranges(self) -> list[tuple[int, int]]:
        anchor = self.start if self.anchor is None else self.anchor
        if anchor > self.start:
            raise ValueError(f"block grid anchor {anchor} is after the first frame {self.start}")
        step = self.block_frames
        edge = anchor + min(self.first_block_frames, step)
        if edge <= self.start:
            edge += ((self.start - edge) // step + 1) * step
        edges = [self.start]
        while edge < self.stop:
            edges.append(edge)
            edge += step
        edges.append(self.stop)
        return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


class TokenizedBlocks(IterableDataset):
    """Frames [start, stop) of a FrameSource as tokenized, packed Blocks."""

    def __init__(self, source: FrameSource, plan: BlockPlan, dna_tokenizer, protein_tokenizer, esm_budget: int, dna_budget: int):
        super().__init__()
        self.source = source
        self.plan = plan
        self.dna_tokenizer = dna_tokenizer
        self.protein_tokenizer = protein_tokenizer
        self.esm_budget = esm_budget
        self.dna_budget = dna_budget

    def make_block(self, start: int, stop: int) -> Block:
        frames = self.source.read(start, stop)
        proteins = [self.protein_tokenizer.encode(frame.protein) for frame in frames]
        dna = self.dna_tokenizer.encode_batch([frame.nucleotide for frame in frames])
        return Block(
            start=start,
            ids=[frame.id for frame in frames],
            protein=pack_group(proteins, self.esm_budget),
            dna=pack_group(dna, self.dna_budget),
        )

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        if info is not None:
            torch.set_num_threads(1)
        for start, stop in self.plan.ranges()[worker::workers]:
            yield self.make_block(start, stop)
