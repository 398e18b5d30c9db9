"""The engine's non-finite guard (issue 11.4): a block whose features or scores are not finite is computed again
with fp32 models; frames still not finite get NaN scores and are reported, never passed off as scores.

A non-finite block is injected by wrapping the tiny ESM-2 in a double whose forward poisons chosen sequences; the
oracle is the same engine on the same frames without the double.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from doubles import demo_models_and_frames
from virnucpro.config import EngineConfig, EnvConfig
from virnucpro.engine.loading import load_models
from virnucpro.engine.scorer import Scorer


class PoisonedEncoder(torch.nn.Module):
    """Forwards to `model`, then sets the hidden states of the first `poison_sequences` packed sequences of a
    batch to NaN, for the first `times` calls (None: always)."""

    def __init__(self, model, poison_sequences: int, times: int | None):
        super().__init__()
        self.model, self.poison_sequences, self.times = model, poison_sequences, times
        self.embed_dim = getattr(model, "embed_dim", None)
        self.hidden_size = getattr(model, "hidden_size", None)

    def forward(self, input_ids, cu_seqlens, max_len):
        hidden = self.model(input_ids, cu_seqlens, max_len)
        if self.times is None or self.times > 0:
            self.times = None if self.times is None else self.times - 1
            hidden = hidden.clone()
            hidden[: int(cu_seqlens[min(self.poison_sequences, len(cu_seqlens) - 1)])] = float("nan")
        return hidden


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    files, source = demo_models_and_frames(tmp_path_factory.mktemp("nonfinite"))
    return load_models(files, EngineConfig(device="cpu")), source


def score_all(models, source, fallback=None):
    scorer = Scorer(models, EngineConfig(device="cpu", workers=0), EnvConfig.from_environ({}), fallback=fallback)
    blocks = list(scorer.score_range(source, 0, len(source), keep_embeddings=True, block_frames=16))
    return blocks, scorer.stats


def test_a_non_finite_block_is_recomputed_and_matches_a_clean_run(setup):
    models, source = setup
    clean, _ = score_all(models, source)
    poisoned = replace(models, esm=PoisonedEncoder(models.esm, poison_sequences=3, times=1))
    blocks, stats = score_all(poisoned, source, fallback=lambda: models)
    assert stats.recomputed_blocks == 1 and stats.nonfinite_frames == 0
    assert all(not b.nonfinite for b in blocks)
    # the first block's poisoned frames were computed again, repacked on their own: equal up to fp32 rounding of
    # other GEMM shapes; every other block is untouched
    for got, want in zip(blocks[:1], clean[:1]):
        np.testing.assert_allclose(got.scores, want.scores, rtol=0, atol=1e-6)
        np.testing.assert_allclose(got.protein, want.protein, rtol=0, atol=1e-5)
    for got, want in zip(blocks[1:], clean[1:]):
        np.testing.assert_array_equal(got.scores, want.scores)
        np.testing.assert_array_equal(got.protein, want.protein)
    assert len(blocks) > 1


def test_frames_still_non_finite_in_fp32_get_nan_scores_and_are_listed(setup):
    models, source = setup
    clean, _ = score_all(models, source)
    always = replace(models, esm=PoisonedEncoder(models.esm, poison_sequences=2, times=None))
    blocks, stats = score_all(always, source, fallback=lambda: always)
    listed = [frame for block in blocks for frame in block.nonfinite]
    assert stats.nonfinite_frames == len(listed) > 0
    for got, want in zip(blocks, clean):
        bad = np.isin(got.ids, got.nonfinite)
        assert np.isnan(got.scores[bad]).all() and np.isfinite(got.scores[~bad]).all()
        np.testing.assert_array_equal(got.scores[~bad], want.scores[~bad])


def test_fp32_models_have_no_fallback(setup):
    from virnucpro.engine.loading import fp32_fallback

    models, _ = setup
    assert fp32_fallback(models) is None


def test_fp32_fallback_copies_half_precision_encoders_to_fp32(setup, tmp_path):
    """The default fallback: fp32 copies of bf16 encoders, the originals untouched, same embeddings within bf16
    rounding of the weights."""
    from virnucpro.engine.loading import fp32_fallback
    from virnucpro.models.precision import BF16, PRECISION_MODES

    models, source = setup
    half = replace(models, numerics=PRECISION_MODES["bf16"],
                   esm=_copy_as(models.esm, BF16), dnabert=_copy_as(models.dnabert, BF16))
    fallback = fp32_fallback(half)
    for copy_, original in ((fallback.esm, half.esm), (fallback.dnabert, half.dnabert)):
        assert {p.dtype for p in copy_.parameters()} == {torch.float32}
        assert torch.bfloat16 in {p.dtype for p in original.parameters()}
    want, _ = score_all(models, source)
    got, _ = score_all(fallback, source)
    for g, w in zip(got, want):
        cosine = torch.nn.functional.cosine_similarity(torch.from_numpy(g.protein), torch.from_numpy(w.protein))
        assert cosine.min() > 0.999


def _copy_as(model, precision):
    import copy

    duplicate = copy.deepcopy(model)
    duplicate.set_precision(precision)
    duplicate.set_attention("cpu")
    return duplicate
