"""Test doubles injected through the product's seams (scorer factories): no model, or a slowed real one.

- HashScorer: scores are a hash of the frame id (an oracle the tests recompute), embeddings likewise;
  ContentHashScorer: of the frame's text instead (identical frames score identically, as with a real model).
- SlowScorerFactory: the real engine, sleeping after every block, so a SLURM task can be requeued or killed
  between two checkpoint parts. It is pickled into the SLURM jobs: they import this module (tests/ is on their
  PYTHONPATH, see test_slurm.slurm_env).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from virnucpro.config import EngineConfig, ModelPaths
from virnucpro.run.parts import PartData

DNA_DIM, PROTEIN_DIM = 6, 4


def hash_vector(frame_id: str, salt: str, size: int) -> np.ndarray:
    digest = hashlib.sha256(f"{salt}:{frame_id}".encode()).digest()
    return np.frombuffer(digest, dtype=np.uint8)[:size].astype(np.float32) / 255.0


@dataclass
class HashStats:
    frames: int = 0

    def as_dict(self) -> dict:
        return {"frames": self.frames}


def id_key(frame) -> str:
    return frame.id


@dataclass
class HashScorer:
    identity: dict = field(default_factory=lambda: {"fake": "hash scorer"})
    stats: HashStats = field(default_factory=HashStats)
    key: Callable = id_key  # what the scores are a hash of

    def score_range(self, source, start: int, stop: int, *, keep_embeddings: bool = False, block_frames: int = 4096,
                    grid_start: int | None = None):
        for first in range(start, stop, block_frames):
            frames = source.read(first, min(first + block_frames, stop))
            keys = [self.key(frame) for frame in frames]
            virus = np.array([hash_vector(k, "score", 1)[0] for k in keys], dtype=np.float32)
            scores = np.stack([1 - virus, virus], axis=1)
            block = PartData(first, [frame.id for frame in frames], scores)  # the fields a Scorer block has
            if keep_embeddings:
                block.dna = np.stack([hash_vector(k, "dna", DNA_DIM) for k in keys])
                block.protein = np.stack([hash_vector(k, "protein", PROTEIN_DIM) for k in keys])
            self.stats.frames += len(frames)
            yield block


class HashScorerFactory:
    def __call__(self, engine: EngineConfig) -> HashScorer:
        return HashScorer()


def fake_model_files(folder: Path, tag: str = "a") -> ModelPaths:
    """Tiny random-weight models in the real formats, different bytes per tag (what the manifest identifies).
    The hash scorer never loads them, but plan checks every model file before it writes a manifest."""
    from virnucpro.testing.demo import make_demo_models

    folder = Path(folder) / tag
    if folder not in _MODEL_FILES:  # written once: rewriting would give the pickled classifier other bytes
        _MODEL_FILES[folder] = make_demo_models(folder, seed=sum(map(ord, tag)))
    return _MODEL_FILES[folder]


_MODEL_FILES: dict[Path, ModelPaths] = {}


class SlowScorer:
    """A Scorer that scores in blocks of at most `block_frames` and sleeps after each one."""

    def __init__(self, scorer, delay_s: float):
        self._scorer = scorer
        self._delay_s = delay_s

    def __getattr__(self, name):
        return getattr(self._scorer, name)

    def score_range(self, source, start: int, stop: int, *, block_frames: int = 4096, **options):
        for first in range(start, stop, block_frames):
            last = min(first + block_frames, stop)
            for block in self._scorer.score_range(source, first, last, block_frames=block_frames, **options):
                yield block
                time.sleep(self._delay_s)


@dataclass(frozen=True)
class SlowScorerFactory:
    """Wraps a scorer factory (run.multigpu.ScorerFactory): its scorers sleep `delay_s` after every block."""

    factory: object
    delay_s: float

    def __call__(self, engine: EngineConfig) -> SlowScorer:
        return SlowScorer(self.factory(engine), self.delay_s)



def content_key(frame) -> str:
    """What a real model sees: the frame's text, not its id (identical frames score identically)."""
    return f"{frame.nucleotide}/{frame.protein}"


@dataclass
class ContentHashScorer(HashScorer):
    """Scores (and embeddings) are a hash of the frame's nucleotide and protein text: a de-duplicated run must equal
    a full one exactly."""

    identity: dict = field(default_factory=lambda: {"fake": "content hash scorer"})
    key: Callable = content_key


class ContentHashScorerFactory:
    """Remembers its scorers, so a test can count the frames they computed."""

    def __init__(self):
        self.scorers: list[ContentHashScorer] = []

    def __call__(self, engine: EngineConfig) -> ContentHashScorer:
        self.scorers.append(ContentHashScorer())
        return self.scorers[-1]


def demo_models_and_frames(folder: Path, read_sets=((20, 500), (80, 150))):
    """The tiny demo model files and ~130 prepared frames of stop-free reads: several blocks of 16 frames, and
    150 bp reads whose chunks keep several frames."""
    from virnucpro.bench.fidelity import fidelity_frames
    from virnucpro.testing.demo import make_demo_models

    return make_demo_models(folder / "models"), fidelity_frames(folder / "frames", read_sets=read_sets)
