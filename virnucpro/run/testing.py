"""A deterministic stand-in for the engine's Scorer (scores are a hash of the frame id) and a `predict`
entry point that uses it: lets the run machinery be tested without models.

    python -m virnucpro.run.testing INPUT RUNDIR MODELS_DIR [--save-embeddings] [--force-restart] [--models-tag T]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from virnucpro.config import EngineConfig, EnvConfig, ModelPaths, PredictConfig
from virnucpro.errors import VirNucProError
from virnucpro.run.parts import PartData

DNA_DIM, PROTEIN_DIM = 6, 4


def _vector(frame_id: str, salt: str, size: int) -> np.ndarray:
    digest = hashlib.sha256(f"{salt}:{frame_id}".encode()).digest()
    return np.frombuffer(digest, dtype=np.uint8)[:size].astype(np.float32) / 255.0


@dataclass
class HashStats:
    frames: int = 0

    def as_dict(self) -> dict:
        return {"frames": self.frames}


@dataclass
class HashScorer:
    identity: dict = field(default_factory=lambda: {"fake": "hash scorer"})
    stats: HashStats = field(default_factory=HashStats)

    def score_range(self, source, start: int, stop: int, *, keep_embeddings: bool = False, block_frames: int = 4096,
                    grid_start: int | None = None):
        for first in range(start, stop, block_frames):
            frames = source.read(first, min(first + block_frames, stop))
            ids = [frame.id for frame in frames]
            virus = np.array([_vector(i, "score", 1)[0] for i in ids], dtype=np.float32)
            scores = np.stack([1 - virus, virus], axis=1)
            block = PartData(first, ids, scores)  # the fields a Scorer block has
            if keep_embeddings:
                block.dna = np.stack([_vector(i, "dna", DNA_DIM) for i in ids])
                block.protein = np.stack([_vector(i, "protein", PROTEIN_DIM) for i in ids])
            self.stats.frames += len(ids)
            yield block


class HashScorerFactory:
    def __call__(self, engine: EngineConfig) -> HashScorer:
        return HashScorer()


def fake_model_files(folder: Path, tag: str = "a") -> ModelPaths:
    """Three small files standing in for the models (their bytes are what the manifest identifies)."""
    folder = folder / tag
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for role in ("esm", "dnabert", "classifier"):
        path = folder / f"{role}.bin"
        if not path.exists():
            path.write_text(f"{role} {tag}\n")
        paths[role] = str(path)
    return ModelPaths(**paths)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m virnucpro.run.testing")
    parser.add_argument("input")
    parser.add_argument("rundir")
    parser.add_argument("models_dir")
    parser.add_argument("--chunk-length", type=int, default=500)
    parser.add_argument("--save-embeddings", action="store_true")
    parser.add_argument("--force-restart", action="store_true")
    parser.add_argument("--models-tag", default="a", help="content of the stand-in model files")
    args = parser.parse_args(argv)
    from virnucpro.run.pipeline import predict_run

    cfg = PredictConfig(Path(args.input), Path(args.rundir), args.chunk_length, fake_model_files(Path(args.models_dir), args.models_tag),
                        EngineConfig(device="cpu"), args.save_embeddings, force_restart=args.force_restart)
    try:
        predict_run(cfg, EnvConfig.from_environ(), scorer_factory=HashScorerFactory())
    except VirNucProError as error:
        print(f"virnucpro: error: {error}", file=sys.stderr)
        return error.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
