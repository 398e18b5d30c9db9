"""GPU side of the engine: embed packed blocks with ESM-2 and DNABERT-S, pool, classify.

One host sync per block (its scores are copied back while the next block is already queued on the GPU); no
Python loop over sequences and no `.item()` per sequence.

Non-finite guard: with each block's scores comes one flag per frame (all of its features and scores finite?).
A block's non-finite frames are computed again with fp32 copies of the encoders (built on first need); frames
still not finite get NaN scores and are reported in `ScoredBlock.nonfinite`, never passed off as scores.
With a recheck margin (`--precision accurate`), the frames whose calls sit that close to a boundary are computed
again with the fp32 models the same way (engine.recheck).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader

from virnucpro.config import EngineConfig, EnvConfig, ModelPaths
from virnucpro.engine.batches import Block, BlockPlan, PackedGroup, TokenizedBlocks, select_rows
from virnucpro.engine.loading import HostModels, LoadedModels, fp32_fallback, load_models, place_models, read_models
from virnucpro.engine.recheck import rows_to_recheck
from virnucpro.io.prep_files import FrameSource
from virnucpro.models.classifier import score as classifier_score
from virnucpro.models.dnabert import mean_pool_all_tokens
from virnucpro.models.esm2 import mean_pool_residues

log = logging.getLogger(__name__)


@dataclass
class ScoredBlock:
    start: int
    ids: list[str]
    scores: np.ndarray  # [n, 2] float32: score1 = others, score2 = virus
    dna: np.ndarray | None = None
    protein: np.ndarray | None = None
    nonfinite: list[str] = field(default_factory=list)  # frames still not finite in fp32: their scores are NaN


@dataclass
class EngineStats:
    """Counters for telemetry; updated per block on the host, never read from the GPU."""

    frames: int = 0
    esm_tokens: int = 0
    dna_tokens: int = 0
    esm_capacity: int = 0
    recomputed_blocks: int = 0  # blocks the non-finite guard computed again in fp32
    rechecked_frames: int = 0  # frames near a boundary computed again in fp32 (a recheck margin)
    nonfinite_frames: int = 0  # frames not finite even in fp32
    started: float = field(default_factory=time.perf_counter)

    @property
    def packing_efficiency(self) -> float:
        return self.esm_tokens / self.esm_capacity if self.esm_capacity else 1.0

    def as_dict(self) -> dict:
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        return {
            "frames": self.frames,
            "esm_tokens": self.esm_tokens,
            "dna_tokens": self.dna_tokens,
            "seconds": elapsed,
            "frames_per_s": self.frames / elapsed,
            "esm_tokens_per_s": self.esm_tokens / elapsed,
            "packing_efficiency": self.packing_efficiency,
            "recomputed_blocks": self.recomputed_blocks,
            "rechecked_frames": self.rechecked_frames,
            "nonfinite_frames": self.nonfinite_frames,
        }


@dataclass
class _InFlight:
    block: Block
    scores: torch.Tensor
    dna: torch.Tensor | None
    protein: torch.Tensor | None
    finite: torch.Tensor  # [rows] bool, on the host once `done`
    done: torch.cuda.Event | None


class Scorer:
    """Holds the three models on one device and scores ranges of prepared frames."""

    def __init__(self, models: LoadedModels | HostModels, engine: EngineConfig, env: EnvConfig,
                 fallback: Callable[[], LoadedModels | None] | None = None):
        """`fallback` builds the models the non-finite guard and the recheck recompute with (default: the fp32
        models loaded for the recheck, else fp32 copies; None when the models already compute in fp32).
        HostModels are placed on the device by the first score_range."""
        self.models = models
        self.recheck_margin = models.numerics.recheck_margin
        self._fallback_factory = fallback or (lambda: self.models.reference or fp32_fallback(self.models))
        self._fallback: list[LoadedModels | None] = []  # built on first need
        self.device = models.device
        self.identity = models.identity
        self.workers = _worker_count(engine, env, self.device)
        self.esm_budget, self.dna_budget = models.token_budgets
        self.stats = EngineStats()
        self.placed_seconds: float | None = None  # how long `open`'s deferred weight copy took (telemetry)

    @classmethod
    def load(cls, files: ModelPaths, engine: EngineConfig, env: EnvConfig) -> "Scorer":
        """Load the three model files (already resolved: see run.models) onto engine.device."""
        return cls(load_models(files, engine), engine, env)

    @classmethod
    def open(cls, files: ModelPaths, engine: EngineConfig, env: EnvConfig) -> "Scorer":
        """Like `load`, but the weights go to the device only when the first range is scored, once its DataLoader
        workers have started: tokenizing the first blocks overlaps the copy (an array task's start-up)."""
        return cls(read_models(files, engine), engine, env)

    def score_range(self, source: FrameSource, start: int, stop: int, *, keep_embeddings: bool = False,
                    block_frames: int = 4096, grid_start: int | None = None) -> Iterator[ScoredBlock]:
        """Scored blocks of frames [start, stop), in order; blocks are cut on a grid anchored at `grid_start`."""
        dataset = TokenizedBlocks(source, BlockPlan(start, stop, block_frames, anchor=grid_start), self.models.dna_tokenizer,
                                  self.models.protein_tokenizer, self.esm_budget, self.dna_budget)
        loader = DataLoader(dataset, batch_size=None, num_workers=self.workers,
                            pin_memory=self.device.type == "cuda",
                            prefetch_factor=4 if self.workers else None)
        blocks = iter(loader)  # starts the workers: they tokenize the first blocks while the weights are placed
        self._place()
        pending = None
        with torch.inference_mode():
            for block in blocks:
                launched = self._launch(block, keep_embeddings)
                if pending is not None:
                    yield self._finish(pending)
                pending = launched
                if self.device.type != "cuda":  # computed already (no async queue): hand it on before the next
                    yield self._finish(pending)
                    pending = None
            if pending is not None:
                yield self._finish(pending)

    def _place(self) -> None:
        if isinstance(self.models, HostModels):
            started = time.perf_counter()
            self.models = place_models(self.models)
            self.placed_seconds = time.perf_counter() - started

    def _embed(self, model, group: PackedGroup, rows: int, dim: int, pool) -> torch.Tensor:
        out = torch.zeros(rows, dim, device=self.device, dtype=torch.float32)
        for batch, order in zip(group.batches, group.orders):
            input_ids = batch.input_ids.to(self.device, non_blocking=True)
            cu_seqlens = batch.cu_seqlens.to(self.device, non_blocking=True)
            hidden = model(input_ids, cu_seqlens, batch.max_len)
            out.index_copy_(0, order.to(self.device, non_blocking=True), pool(hidden, cu_seqlens).float())
        return out

    def _compute(self, models: LoadedModels, block: Block):
        """(scores, dna, protein, finite) of a block on the device; finite: [rows] all features and scores finite."""
        rows = len(block)
        protein = self._embed(models.esm, block.protein, rows, models.esm.embed_dim, mean_pool_residues)
        dna = self._embed(models.dnabert, block.dna, rows, models.dnabert.hidden_size, mean_pool_all_tokens)
        features = torch.cat([dna, protein], dim=1)
        scores = classifier_score(models.classifier, features)
        finite = torch.isfinite(features).all(1) & torch.isfinite(scores).all(1)
        return scores, dna, protein, finite

    def _launch(self, block: Block, keep_embeddings: bool) -> _InFlight:
        scores, dna, protein, finite = self._compute(self.models, block)
        self._count(block)
        host = lambda t: t.to("cpu", non_blocking=self.device.type == "cuda")  # noqa: E731
        result = _InFlight(block, host(scores), host(dna) if keep_embeddings else None,
                           host(protein) if keep_embeddings else None, host(finite), None)
        if self.device.type == "cuda":
            result.done = torch.cuda.Event()
            result.done.record()
        return result

    def _finish(self, flight: _InFlight) -> ScoredBlock:
        if flight.done is not None:
            flight.done.synchronize()
        as_np = lambda t: None if t is None else t.numpy()  # noqa: E731
        scored = ScoredBlock(flight.block.start, flight.block.ids,
                             flight.scores.numpy().astype(np.float32, copy=False), as_np(flight.dna),
                             as_np(flight.protein))
        bad = np.flatnonzero(~flight.finite.numpy())
        near = rows_to_recheck(scored.ids, scored.scores, self.recheck_margin) if self.recheck_margin else bad[:0]
        if bad.size:
            log.warning("%d frame(s) of the block at frame %d are not finite (first: %s); recomputing in fp32",
                        bad.size, flight.block.start, flight.block.ids[bad[0]])
            self.stats.recomputed_blocks += 1
        self.stats.rechecked_frames += near.size
        return self._recompute(flight.block, scored, bad, near) if bad.size or near.size else scored

    def _recompute(self, block: Block, scored: ScoredBlock, bad: np.ndarray, near: np.ndarray) -> ScoredBlock:
        """Compute the non-finite and near-boundary rows of a block again with the fp32 models; NaN scores for
        frames still not finite."""
        fallback = self._fallback_models()
        rows = np.union1d(bad, near)
        if fallback is None:  # the models are fp32 already: nothing would change
            still = bad
        else:
            part = select_rows(block, rows, self.esm_budget, self.dna_budget)
            scores, dna, protein, finite = (t.cpu().numpy() for t in self._compute(fallback, part))
            scored.scores[rows] = scores
            for name, values in (("dna", dna), ("protein", protein)):
                if getattr(scored, name) is not None:
                    getattr(scored, name)[rows] = values
            still = rows[~finite]
        if still.size:
            self._give_up(scored, still)
        return scored

    def _give_up(self, scored: ScoredBlock, bad: np.ndarray) -> None:
        scored.scores[bad] = np.nan
        for name in ("dna", "protein"):
            if getattr(scored, name) is not None:
                getattr(scored, name)[bad] = np.nan
        scored.nonfinite = [scored.ids[i] for i in bad]
        self.stats.nonfinite_frames += bad.size
        log.error("%d frame(s) are not finite even in fp32 and get no score: %s%s", bad.size,
                  ", ".join(scored.nonfinite[:10]), " ..." if bad.size > 10 else "")

    def _fallback_models(self) -> LoadedModels | None:
        if not self._fallback:
            self._fallback.append(self._fallback_factory())
        return self._fallback[0]

    def _count(self, block: Block) -> None:
        self.stats.frames += len(block)
        self.stats.esm_tokens += block.protein.tokens
        self.stats.dna_tokens += block.dna.tokens
        self.stats.esm_capacity += len(block.protein.batches) * self.esm_budget


def _worker_count(engine: EngineConfig, env: EnvConfig, device: torch.device) -> int:
    if engine.workers >= 0:
        return engine.workers
    if device.type != "cuda":
        return 0  # on CPU the model is the bottleneck and workers would steal its cores
    return max(1, min(8, env.cpus - 1))
