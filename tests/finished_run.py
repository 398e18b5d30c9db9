"""Finished run directories for the results tests: real prep, plan and checkpoint parts, scores from test doubles.

`finished_run(tmp_path, input)` plans a run of `input` and scores every shard with the HashScorer (or any scorer
given), in this process, with parts small enough that chunks straddle part boundaries; no model is involved.
`NanHashScorer` gives some frames NaN scores, as the engine does when a frame stays non-finite in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from doubles import HashScorer, fake_model_files, hash_vector
from virnucpro.config import EngineConfig, EnvConfig, PredictConfig
from virnucpro.run import pending_shards, plan_run, run_shard
from virnucpro.run.options import RunOptions

OPTIONS = RunOptions(part_frames=7, block_frames=3, shard_tokens=3000)


@dataclass
class NanHashScorer(HashScorer):
    """HashScorer whose frames with a hash below `fraction` get NaN scores (all of a chunk's frames, sometimes)."""

    fraction: float = 0.08

    def score_range(self, source, start, stop, **options):
        for block in super().score_range(source, start, stop, **options):
            bad = np.array([hash_vector(i, "nan", 1)[0] < self.fraction for i in block.ids], dtype=bool)
            block.scores[bad] = np.nan
            yield block


def finished_run(tmp_path: Path, input_path: Path, *, chunk_length: int = 500, save_embeddings: bool = False,
                 scorer=None, min_length: int = 0, options: RunOptions = OPTIONS, name: str = "run",
                 dedup: bool = False) -> Path:
    """Without de-duplication by default: the parts then hold every frame, small, so chunks straddle them."""
    env = EnvConfig(models_dir=tmp_path / "store", cpus=1, no_progress=True)
    cfg = PredictConfig(input=input_path, outdir=tmp_path / name, models=fake_model_files(tmp_path / "models"),
                        engine=EngineConfig(device="cpu"), chunk_length=chunk_length,
                        save_embeddings=save_embeddings, min_length=min_length, dedup=dedup)
    plan_run(cfg, env, gpus=1, options=options)
    scorer = scorer or HashScorer()
    for index in pending_shards(cfg.outdir):
        run_shard(cfg.outdir, index, scorer, options=options)
    return cfg.outdir


def write_fasta(path: Path, records: list[tuple[str, str]]) -> Path:
    """Records as (header without '>', sequence), sequences wrapped at 70 columns."""
    with open(path, "w") as handle:
        for header, sequence in records:
            handle.write(f">{header}\n")
            handle.writelines(sequence[i:i + 70] + "\n" for i in range(0, len(sequence), 70))
    return path
