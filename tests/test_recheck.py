"""`--precision accurate`'s recheck (issue 11.2): the frames whose frame call or chunk call sits within the margin of
its boundary are computed again with fp32 models; every other frame keeps its fast scores.

Oracles: a brute-force Python reading of the two published decisions (frame: score2 >= score1; chunk: best score2
>= best score1 over the chunk's frames) for the selection; for the engine, a noisy "fast" encoder double beside
the clean fp32 models — rechecked frames must carry exactly the clean run's scores, the others the noisy run's.
The GPU half (agreement with fp32 under the stress calibration, speed) is tests/test_fidelity_gpu.py.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from doubles import demo_models_and_frames
from virnucpro.config import EngineConfig, EnvConfig
from virnucpro.engine.batches import TokenizedBlocks, BlockPlan, select_rows, unpacked
from virnucpro.engine.loading import load_models
from virnucpro.engine.recheck import rows_to_recheck
from virnucpro.engine.scorer import Scorer
from virnucpro.models.precision import BF16, PRECISION_MODES, Numerics


def brute_force(ids, scores, margin):
    """The selection read plainly: a frame near its own boundary, or any frame of a chunk near its consensus's
    (best score2 against best score1 over the chunk's finite frames)."""
    rows = set()
    chunks: dict[str, list[int]] = {}
    for row, (frame_id, (others, virus)) in enumerate(zip(ids, scores)):
        if np.isfinite(others) and np.isfinite(virus):
            chunks.setdefault(frame_id[:-2], []).append(row)
            if abs(virus - others) < margin:
                rows.add(row)
    for members in chunks.values():
        if abs(max(scores[r][1] for r in members) - max(scores[r][0] for r in members)) < margin:
            rows |= set(members)
    return sorted(rows)


def random_block(rng, trial):
    frames_per_chunk = rng.integers(1, 7, size=rng.integers(1, 12))
    ids = [f"seq{trial}_{chunk}{suffix}" for chunk, count in enumerate(frames_per_chunk)
           for suffix in ("F1", "F2", "F3", "R1", "R2", "R3")[:count]]
    virus = rng.choice([0.2, 0.3, 0.49, 0.5, 0.505, 0.7, 0.8], size=len(ids)) + rng.normal(0, 0.01, len(ids))
    return ids, np.stack([1 - virus, virus], 1)


def calls(ids, scores):
    """The published decisions: per frame score2 >= score1; per chunk best score2 >= best score1."""
    best: dict[str, list[float]] = {}
    for frame_id, (others, virus) in zip(ids, scores):
        pair = best.setdefault(frame_id[:-2], [-np.inf, -np.inf])
        pair[0], pair[1] = max(pair[0], others), max(pair[1], virus)
    return [v >= o for o, v in scores], {chunk: v >= o for chunk, (o, v) in best.items()}


def test_selection_equals_the_rule_read_by_brute_force():
    rng = np.random.default_rng(3)
    for trial in range(300):
        ids, scores = random_block(rng, trial)
        scores = scores.astype(np.float32)
        assert rows_to_recheck(ids, scores, 0.02).tolist() == brute_force(ids, scores, 0.02)


def test_with_errors_under_half_the_margin_the_rechecked_calls_are_fp32s():
    """The promise: fast scores within margin/2 of fp32's, the selected rows replaced by fp32's, give fp32's frame and
    chunk calls. (Rechecking only a close chunk's two deciding frames broke this: another frame's fast score could
    become the chunk's best.)"""
    rng = np.random.default_rng(7)
    margin = 0.02
    for trial in range(3000):
        ids, exact = random_block(rng, trial)
        error = rng.uniform(-margin / 2, margin / 2, len(ids)) * 0.999
        fast = np.stack([exact[:, 0] - error, exact[:, 1] + error], 1)
        rechecked = fast.copy()
        rows = rows_to_recheck(ids, fast, margin)
        rechecked[rows] = exact[rows]
        assert calls(ids, rechecked) == calls(ids, exact), (ids, exact, fast, rows)


def test_a_chunk_tie_between_two_confident_frames_is_rechecked_whole():
    """Neither frame is near its own boundary (0.7 / 0.3), but the chunk's call compares 0.7 with 0.7."""
    ids = ["a_1F1", "a_1F2", "a_1R1", "b_1F1"]
    scores = np.array([[0.3, 0.7], [0.7, 0.3], [0.6, 0.4], [0.3, 0.7]], dtype=np.float32)
    assert rows_to_recheck(ids, scores, 0.02).tolist() == [0, 1, 2]
    assert rows_to_recheck(ids, scores, 0.0).tolist() == []


def test_non_finite_rows_are_left_to_the_guard_and_out_of_the_chunk_maxima():
    scores = np.array([[0.5, 0.5], [np.nan, np.nan]], dtype=np.float32)
    assert rows_to_recheck(["a_1F1", "b_1F1"], scores, 0.02).tolist() == [0]
    assert rows_to_recheck([], np.zeros((0, 2), np.float32), 0.02).tolist() == []
    tie = np.array([[0.3, 0.7], [0.695, 0.305], [np.nan, np.nan]], dtype=np.float32)  # a close chunk beside a NaN
    assert rows_to_recheck(["a_1F1", "a_1F2", "a_1F3"], tie, 0.02).tolist() == [0, 1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    files, source = demo_models_and_frames(tmp_path_factory.mktemp("recheck"))
    return files, load_models(files, EngineConfig(device="cpu")), source


def test_selected_rows_are_the_same_tokens_packed_afresh(setup):
    _, models, source = setup
    dataset = TokenizedBlocks(source, BlockPlan(0, len(source), 64), models.dna_tokenizer, models.protein_tokenizer,
                              97, 211)  # small budgets: several packed batches per block
    block = dataset.make_block(0, min(64, len(source)))
    rows = np.array([0, 3, 4, len(block) - 1])
    part = select_rows(block, rows, 97, 211)
    assert part.ids == [block.ids[r] for r in rows]
    for name in ("protein", "dna"):
        whole = unpacked(getattr(block, name), list(range(len(block))))
        chosen = unpacked(getattr(part, name), list(range(len(part))))
        assert all(np.array_equal(chosen[i], whole[r]) for i, r in enumerate(rows))
    frames = source.read(0, len(block))
    assert [len(t) for t in unpacked(block.protein, list(range(len(block))))] == [len(f.protein) + 2 for f in frames]


class NoisyEncoder(torch.nn.Module):
    """The clean encoder plus a fixed small perturbation: a stand-in for half-precision error."""

    def __init__(self, model, scale: float):
        super().__init__()
        self.model, self.scale = model, scale
        self.embed_dim = getattr(model, "embed_dim", None)
        self.hidden_size = getattr(model, "hidden_size", None)

    def forward(self, input_ids, cu_seqlens, max_len):
        hidden = self.model(input_ids, cu_seqlens, max_len)
        noise = torch.sin(input_ids.float() * 12.9898 + torch.arange(len(input_ids)) * 0.1)[:, None]
        return hidden + self.scale * noise


def score_all(models, source, block_frames=16):
    scorer = Scorer(models, EngineConfig(device="cpu", workers=0), EnvConfig.from_environ({}))
    blocks = list(scorer.score_range(source, 0, len(source), keep_embeddings=True, block_frames=block_frames))
    stack = lambda name: np.concatenate([getattr(b, name) for b in blocks])  # noqa: E731
    ids = [i for b in blocks for i in b.ids]
    return ids, stack("scores"), stack("protein"), scorer.stats


def test_frames_near_a_boundary_get_the_fp32_models_scores_and_only_they(setup):
    _, clean, source = setup
    noisy = replace(clean, esm=NoisyEncoder(clean.esm, 0.05))
    ids, clean_scores, clean_protein, _ = score_all(clean, source)
    _, noisy_scores, _, _ = score_all(noisy, source)
    spread = np.abs(noisy_scores[:, 1] - noisy_scores[:, 0])
    margin = float(np.quantile(spread, 0.3))  # a margin that catches about a third of the frames
    checked = replace(noisy, numerics=replace(PRECISION_MODES["fp16"], recheck_margin=margin), reference=clean)
    got_ids, got_scores, got_protein, stats = score_all(checked, source)
    expected = np.zeros(len(ids), bool)
    for start in range(0, len(ids), 16):  # the engine sees chunks block by block (16 frames here)
        block = slice(start, start + 16)
        expected[np.add(brute_force(ids[block], noisy_scores[block], margin), start).astype(int)] = True
    assert got_ids == ids and stats.rechecked_frames == expected.sum() > 0
    np.testing.assert_allclose(got_scores[expected], clean_scores[expected], rtol=0, atol=1e-6)
    np.testing.assert_allclose(got_protein[expected], clean_protein[expected], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(got_scores[~expected], noisy_scores[~expected])
    assert not np.allclose(noisy_scores[expected], clean_scores[expected], rtol=0, atol=1e-6)


def test_accurate_places_fp32_reference_encoders_from_the_files_and_half_copies(setup):
    from virnucpro.engine.loading import place_models, read_models

    files, _, _ = setup
    host = read_models(files, EngineConfig(device="cpu"))
    loaded = place_models(replace(host, numerics=Numerics("accurate", BF16, BF16, recheck_margin=0.02)))
    esm32, dnabert32 = loaded.reference.esm, loaded.reference.dnabert
    assert {p.dtype for p in esm32.parameters()} == {p.dtype for p in dnabert32.parameters()} == {torch.float32}
    assert torch.bfloat16 in {p.dtype for p in loaded.esm.parameters()} and loaded.esm is not esm32
    assert loaded.reference.numerics.esm == loaded.reference.numerics.dnabert == PRECISION_MODES["fp32"].esm
    plain = load_models(files, EngineConfig(device="cpu")).esm  # fp32 on the CPU: the file's own weights
    for (name, want), got in zip(plain.state_dict().items(), esm32.state_dict().values()):
        assert torch.equal(want, got), name


def test_the_mode_and_its_margin_are_recorded():
    described = PRECISION_MODES["accurate"].describe()
    assert described["recheck_margin"] == PRECISION_MODES["accurate"].recheck_margin > 0
    assert "recheck_margin" not in PRECISION_MODES["fp16"].describe()
