"""DNABERT-S: packed model vs the independent fp32 reference, tokenizer vs transformers, loader errors."""

from __future__ import annotations

import importlib.util
import json
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from virnucpro.errors import ModelError
from virnucpro.models.dnabert import alibi_slopes, load_dnabert, mean_pool_all_tokens
from virnucpro.reference.dnabert_ref import (
    _weights as reference_weights,
    reference_dnabert_embeddings,
    reference_hidden_states,
    reference_token_ids,
)
from virnucpro.testing.dnabert_checkpoint import write_tiny_dnabert
from virnucpro.tokenize.dna import DnaTokenizer

POOLED_ATOL = 2e-5
TOKEN_ATOL = 5e-5


def random_dna(rng: np.random.Generator, lengths, alphabet="ACGT") -> list[str]:
    letters = np.array(list(alphabet))
    return ["".join(rng.choice(letters, size=int(n))) for n in lengths]


def pack(arrays: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor, int]:
    lengths = torch.tensor([len(a) for a in arrays])
    cu_seqlens = torch.zeros(len(arrays) + 1, dtype=torch.int32)
    cu_seqlens[1:] = torch.cumsum(lengths, 0)
    return torch.from_numpy(np.concatenate(arrays)), cu_seqlens, int(lengths.max())


@torch.no_grad()
def packed_embeddings(model, folder, seqs, device="cpu"):
    """Tokenize with DnaTokenizer, run one packed forward, return (pooled [n, H], hidden [T, H], cu_seqlens)."""
    ids, cu_seqlens, max_len = pack(DnaTokenizer(folder).encode_batch(seqs))
    hidden = model(ids.to(device), cu_seqlens.to(device), max_len)
    return mean_pool_all_tokens(hidden, cu_seqlens.to(device)).cpu().numpy(), hidden.float().cpu(), cu_seqlens


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_dnabert(tmp_path_factory.mktemp("tiny"), seed=1)


@pytest.fixture(scope="module")
def tiny_model(tiny):
    return load_dnabert(tiny, "cpu", torch.float32)


# ------------------------------------------------------------------------------------------------ ALiBi


def test_alibi_slopes_follow_the_alibi_rule_for_12_heads():
    # ALiBi paper: n = 8 -> 2^-1 .. 2^-8; 12 heads interleave the 16-head series 2^-0.5, 2^-1.5, ...
    expected = [2.0**-k for k in range(1, 9)] + [2.0 ** -(k + 0.5) for k in range(4)]
    assert alibi_slopes(12) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("heads", range(1, 33))
def test_alibi_slopes_match_reference_implementation(heads):
    from virnucpro.reference.dnabert_ref import _slopes

    assert alibi_slopes(heads) == pytest.approx(_slopes(heads).tolist(), rel=1e-6)


# ------------------------------------------------------------------------------------ packed vs reference


def assert_matches_reference(model, folder, seqs):
    pooled, hidden, cu_seqlens = packed_embeddings(model, folder, seqs)
    expected = reference_dnabert_embeddings(folder, seqs)
    assert pooled.shape == expected.shape
    per_sequence = np.abs(pooled - expected).max(axis=1)
    assert per_sequence.max() < POOLED_ATOL, per_sequence
    return hidden, cu_seqlens


def test_mixed_lengths_match_reference_per_token(tiny, tiny_model):
    seqs = random_dna(np.random.default_rng(2), [0, 600, 1, 3, 250, 17, 599, 42, 2, 300])
    hidden, cu_seqlens = assert_matches_reference(tiny_model, tiny, seqs)
    config = json.loads((tiny / "config.json").read_text())
    weights = reference_weights(tiny)
    bounds = cu_seqlens.tolist()
    for ids, start, stop in zip(reference_token_ids(tiny, seqs), bounds[:-1], bounds[1:]):
        assert stop - start == len(ids)
        expected = reference_hidden_states(config, weights, ids)
        assert torch.allclose(hidden[start:stop], expected, atol=TOKEN_ATOL, rtol=0)


def test_batch_of_one(tiny, tiny_model):
    assert_matches_reference(tiny_model, tiny, random_dna(np.random.default_rng(3), [480]))


def test_many_tiny_sequences(tiny, tiny_model):
    rng = np.random.default_rng(4)
    assert_matches_reference(tiny_model, tiny, random_dna(rng, rng.integers(0, 6, size=64)))


def test_ambiguous_bases_and_unknown_tokens(tiny, tiny_model):
    rng = np.random.default_rng(5)
    assert_matches_reference(tiny_model, tiny, random_dna(rng, [120, 33, 7], alphabet="ACGTNRY"))


def test_twelve_heads_non_power_of_two_slopes(tmp_path):
    folder = write_tiny_dnabert(tmp_path, layers=2, hidden=96, heads=12, intermediate=160, seed=6)
    model = load_dnabert(folder, "cpu", torch.float32)
    assert_matches_reference(model, folder, random_dna(np.random.default_rng(6), [0, 400, 9, 150]))


def test_padded_attention_backend_matches_reference(tiny):
    model = load_dnabert(tiny, "cpu", torch.float32, attention="padded")
    assert_matches_reference(model, tiny, random_dna(np.random.default_rng(12), [0, 333, 4, 91]))


def test_bfloat16_on_cpu_stays_close(tiny):
    model = load_dnabert(tiny, "cpu", torch.bfloat16)
    seqs = random_dna(np.random.default_rng(7), [10, 300, 600])
    pooled, _, _ = packed_embeddings(model, tiny, seqs)
    expected = reference_dnabert_embeddings(tiny, seqs)
    cosine = (pooled * expected).sum(1) / np.linalg.norm(pooled, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosine.min() > 0.99


def test_mean_pool_all_tokens_equals_per_segment_mean():
    hidden = torch.randn(11, 5, generator=torch.Generator().manual_seed(0))
    cu_seqlens = torch.tensor([0, 2, 7, 7, 11], dtype=torch.int32)
    pooled = mean_pool_all_tokens(hidden, cu_seqlens)
    for n, (start, stop) in enumerate(zip(cu_seqlens[:-1].tolist(), cu_seqlens[1:].tolist())):
        expected = hidden[start:stop].mean(0) if stop > start else torch.zeros(5)
        assert torch.allclose(pooled[n], expected, atol=1e-6)


# ---------------------------------------------------------------------------------------------- tokenizer


def assert_tokenizer_matches_transformers(folder):
    rng = np.random.default_rng(8)
    seqs = random_dna(rng, rng.integers(0, 1200, size=40)) + random_dna(rng, [50, 3], "ACGTN") + ["", "acgt"]
    ours = DnaTokenizer(folder).encode_batch(seqs)
    theirs = reference_token_ids(folder, seqs)
    assert all(a.dtype == np.int64 for a in ours)
    assert [a.tolist() for a in ours] == theirs


def vocabulary_size(folder: Path) -> int:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(Path(folder) / "tokenizer.json")).get_vocab_size(with_added_tokens=True)


def test_tokenizer_matches_transformers_on_generated_tokenizer(tiny):
    assert_tokenizer_matches_transformers(tiny)


def test_tokenizer_matches_transformers_on_real_tokenizer(dnabert_tokenizer_dir):
    assert_tokenizer_matches_transformers(dnabert_tokenizer_dir)
    assert vocabulary_size(dnabert_tokenizer_dir) == 4096


def test_real_tokenizer_end_to_end(dnabert_tokenizer_dir, tmp_path):
    folder = write_tiny_dnabert(tmp_path, seed=9, tokenizer_json=dnabert_tokenizer_dir / "tokenizer.json")
    model = load_dnabert(folder, "cpu", torch.float32)
    assert model.embeddings.word_embeddings.num_embeddings == 4096
    assert_matches_reference(model, folder, random_dna(np.random.default_rng(9), [0, 500, 77]))


def test_tokenizer_missing_file(tmp_path):
    with pytest.raises(ModelError, match="tokenizer.json"):
        DnaTokenizer(tmp_path)


# ------------------------------------------------------------------------------------------------- loader


@pytest.mark.parametrize("weights_format", ["bin", "safetensors"])
@pytest.mark.parametrize("key_prefix", ["bert.", ""])
def test_loader_formats_and_prefixes_give_same_model(tmp_path, tiny_model, weights_format, key_prefix):
    folder = write_tiny_dnabert(tmp_path, seed=1, weights_format=weights_format, key_prefix=key_prefix)
    model = load_dnabert(folder, "cpu", torch.float32)
    assert (model.embed_dim, model.num_layers) == (64, 2)
    for (name, ours), (_, base) in zip(model.state_dict().items(), tiny_model.state_dict().items()):
        assert torch.equal(ours, base), name


def rewrite_weights(folder, edit):
    path = folder / "pytorch_model.bin"
    state = torch.load(path, weights_only=True)
    edit(state)
    torch.save(state, path)


def test_loader_missing_folder(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_dnabert(tmp_path / "absent", "cpu", torch.float32)


def test_loader_missing_weight_file(tmp_path):
    folder = write_tiny_dnabert(tmp_path)
    (folder / "pytorch_model.bin").unlink()
    with pytest.raises(ModelError, match="pytorch_model.bin"):
        load_dnabert(folder, "cpu", torch.float32)


def test_loader_missing_config_key(tmp_path):
    folder = write_tiny_dnabert(tmp_path)
    config = folder / "config.json"
    config.write_text(config.read_text().replace('"intermediate_size"', '"renamed"'))
    with pytest.raises(ModelError, match="intermediate_size"):
        load_dnabert(folder, "cpu", torch.float32)


def test_loader_missing_key(tmp_path):
    folder = write_tiny_dnabert(tmp_path)
    rewrite_weights(folder, lambda s: s.pop("bert.encoder.layer.1.mlp.wo.weight"))
    with pytest.raises(ModelError, match=r"bert\.encoder\.layer\.1\.mlp\.wo\.weight") as error:
        load_dnabert(folder, "cpu", torch.float32)
    assert str(folder) in str(error.value)


def test_loader_wrong_shape(tmp_path):
    folder = write_tiny_dnabert(tmp_path)
    key = "bert.encoder.layer.0.attention.self.Wqkv.weight"
    rewrite_weights(folder, lambda s: s.update({key: torch.zeros(3, 64)}))
    with pytest.raises(ModelError, match=r"encoder\.layer\.0\.attention\.self\.Wqkv\.weight.*shape"):
        load_dnabert(folder, "cpu", torch.float32)


def test_loader_unexpected_key(tmp_path):
    folder = write_tiny_dnabert(tmp_path)
    rewrite_weights(folder, lambda s: s.update({"bert.encoder.layer.0.mystery.weight": torch.zeros(2)}))
    with pytest.raises(ModelError, match=r"mystery"):
        load_dnabert(folder, "cpu", torch.float32)


def test_loader_refuses_pickled_objects(tmp_path):
    folder = write_tiny_dnabert(tmp_path)
    torch.save({"model": Fraction(1, 3)}, folder / "pytorch_model.bin")  # arbitrary class: needs full pickle
    with pytest.raises(ModelError, match="pytorch_model.bin"):
        load_dnabert(folder, "cpu", torch.float32)


# ---------------------------------------------------------------------------------------------------- GPU


def real_tokenizer_json() -> Path | None:
    """The real tokenizer.json ($VIRNUCPRO_DNABERT_TOKENIZER on a lent GPU, else ../shared); None: generated."""
    shared = Path(os.environ.get("VIRNUCPRO_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    for folder in (os.environ.get("VIRNUCPRO_DNABERT_TOKENIZER"), shared / "models" / "dnabert-s"):
        if folder and (Path(folder) / "tokenizer.json").is_file():
            return Path(folder) / "tokenizer.json"
    return None


@pytest.fixture(scope="module")
def real_size(tmp_path_factory):
    """Real DNABERT-S dimensions with random weights, lengths 1..1200 bp, and the fp32 reference embeddings."""
    real = real_tokenizer_json()
    folder = write_tiny_dnabert(tmp_path_factory.mktemp("real_size"), layers=12, hidden=768, heads=12,
                                intermediate=3072, seed=10, tokenizer_json=real, weights_format="safetensors")
    assert real is None or vocabulary_size(folder) == 4096
    seqs = random_dna(np.random.default_rng(10), [1, 2, 5, 31, 150, 299, 300, 500, 777, 1024, 1199, 1200])
    return folder, seqs, reference_dnabert_embeddings(folder, seqs)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("backend, dtype, min_cosine", [
    ("auto", torch.bfloat16, 0.999), ("auto", torch.float32, 0.99999), ("flash", torch.bfloat16, 0.999),
    ("flex", torch.bfloat16, 0.999), ("padded", torch.bfloat16, 0.999), ("sdpa", torch.bfloat16, 0.999)])
def test_real_size_on_gpu_matches_fp32_reference(real_size, backend, dtype, min_cosine):
    if backend == "flash" and importlib.util.find_spec("flash_attn") is None:
        pytest.skip("flash-attn not installed")
    folder, seqs, expected = real_size
    model = load_dnabert(folder, "cuda", dtype, attention=backend)
    pooled, _, _ = packed_embeddings(model, folder, seqs, device="cuda")
    cosine = (pooled * expected).sum(1) / np.linalg.norm(pooled, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosine.min() >= min_cosine, cosine
