"""Packed ESM-2 against fair-esm's own forward (the oracle), tokenizer against fair-esm's alphabet, loader errors."""

import argparse

import numpy as np
import pytest
import torch

from virnucpro.errors import ModelError
from virnucpro.models.esm2 import (Esm2Shape, esm2_from_state_dict, load_esm2, mean_pool_residues,
                                   read_esm2_checkpoint, safetensors_metadata)
from virnucpro.models.precision import FP16
from virnucpro.pack import pack, plan_batches
from virnucpro.reference.esm2_ref import load_fair_esm, reference_esm2_embeddings
from virnucpro.testing.esm2_checkpoint import write_tiny_esm2
from virnucpro.tokenize.protein import ProteinTokenizer, esm_tokens

AMINO = np.array(list("ACDEFGHIKLMNPQRSTVWYX"))
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def random_proteins(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(AMINO, size=n)) for n in lengths]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_esm2(tmp_path_factory.mktemp("esm") / "esm2_t2_tiny.pt", layers=2, dim=64, heads=4, seed=0)


@pytest.fixture(scope="module")
def model(tiny):
    return load_esm2(tiny, "cpu", torch.float32)


def packed_embeddings(model, proteins, budget):
    tokenizer = ProteinTokenizer()
    arrays = [tokenizer.encode(p) for p in proteins]
    out = np.full((len(proteins), model.embed_dim), np.nan, dtype=np.float32)
    with torch.inference_mode():
        for members in plan_batches([len(a) for a in arrays], budget):
            batch = pack([arrays[i] for i in members])
            hidden = model(batch.input_ids, batch.cu_seqlens, batch.max_len)
            out[members] = mean_pool_residues(hidden, batch.cu_seqlens).numpy()
    return out


# ------------------------------------------------------------------------------------------ tokenizer


def test_tokenizer_table_equals_fair_esm_alphabet():
    import esm

    alphabet = esm.data.Alphabet.from_architecture("ESM-1b")
    tokenizer = ProteinTokenizer()
    assert tokenizer.tokens == alphabet.all_toks
    assert (tokenizer.cls_id, tokenizer.pad_id, tokenizer.eos_id, tokenizer.unk_id, tokenizer.mask_id) == (
        alphabet.cls_idx, alphabet.padding_idx, alphabet.eos_idx, alphabet.unk_idx, alphabet.mask_idx)
    protein = "LAGVSERTIDPKQNFYMHWCXBUZO.-" + "".join(random_proteins([200], seed=4))
    _, _, tokens = alphabet.get_batch_converter()([("p", protein)])
    assert tokenizer.encode(protein).tolist() == tokens[0].tolist()


def test_tokenizer_unknown_and_empty():
    tokenizer = ProteinTokenizer()
    assert tokenizer.encode("A*a").tolist() == [0, 5, 3, 3, 2]
    assert tokenizer.encode("").tolist() == [0, 2]


def test_esm_tokens_counts_what_fair_esm_feeds_the_model():
    import esm

    converter = esm.data.Alphabet.from_architecture("ESM-1b").get_batch_converter()
    proteins = ["", "M"] + random_proteins([1, 30, 1022, 1500], seed=5)
    expected = [len(converter([("p", protein)])[2][0]) for protein in proteins]
    counted = esm_tokens(np.array([len(p) for p in proteins], dtype=np.int32))
    assert counted.dtype == np.int64 and counted.tolist() == expected


# ------------------------------------------------------------------------------------------ model vs oracle

PACKINGS = {
    "mixed_1_to_300": ([1, 300, 17, 2, 150, 88, 3, 240, 9, 60, 120], 700),
    "single": ([57], 700),
    "many_tiny": ([1, 2, 3, 1, 3, 2, 1, 1, 2, 3], 30),
    "longer_than_budget_alone": ([250, 10, 20, 5], 100),
    "over_1024_residues_truncated": ([1100, 40], 4096),
}


@pytest.mark.parametrize("packing", sorted(PACKINGS))
def test_packed_matches_fair_esm(tiny, model, packing):
    lengths, budget = PACKINGS[packing]
    proteins = random_proteins(lengths, seed=len(lengths))
    expected = reference_esm2_embeddings(tiny, proteins)
    got = packed_embeddings(model, proteins, budget)
    np.testing.assert_allclose(got, expected, atol=2e-5, rtol=0)


def test_pooling_stops_at_1024_residues(model):
    """Sensitivity check for the truncation test: pooling all residues would give a visibly different vector."""
    tokenizer = ProteinTokenizer()
    batch = pack([tokenizer.encode(random_proteins([1100], seed=9)[0])])
    with torch.inference_mode():
        hidden = model(batch.input_ids, batch.cu_seqlens, batch.max_len)
    truncated = mean_pool_residues(hidden, batch.cu_seqlens)[0]
    full = mean_pool_residues(hidden, batch.cu_seqlens, max_residues=10_000)[0]
    torch.testing.assert_close(truncated, hidden[1:1025].mean(0))
    assert (truncated - full).abs().max() > 1e-3


def test_empty_protein_gives_zeros(tiny, model):
    got = packed_embeddings(model, ["", "MKV"], 100)
    assert np.all(got[0] == 0) and np.all(np.isfinite(got[1]))
    assert np.isnan(reference_esm2_embeddings(tiny, [""])).all()  # the published pooling: mean of nothing


def test_hidden_states_and_token_dropout_match_fair_esm(tiny, model):
    """All positions (not only the pooled mean) with <mask> tokens: exercises the per-sequence mask ratio."""
    fair, _ = load_fair_esm(tiny)
    tokenizer = ProteinTokenizer()
    arrays = [tokenizer.encode(p) for p in random_proteins([30, 12, 45], seed=2)]
    arrays[0][[3, 7, 9]] = tokenizer.mask_id
    arrays[2][5] = tokenizer.mask_id
    batch = pack(arrays)
    with torch.inference_mode():
        hidden = model(batch.input_ids, batch.cu_seqlens, batch.max_len)
        for i, array in enumerate(arrays):
            start, stop = batch.cu_seqlens[i].item(), batch.cu_seqlens[i + 1].item()
            ref = fair(torch.from_numpy(array)[None], repr_layers=[2])["representations"][2][0]
            torch.testing.assert_close(hidden[start:stop], ref, atol=2e-5, rtol=0)


def test_mean_pool_matches_loop():
    g = torch.Generator().manual_seed(0)
    lengths = [2, 3, 10, 1030]
    hidden = torch.randn(sum(lengths), 5, generator=g)
    cu = torch.tensor(np.concatenate([[0], np.cumsum(lengths)]), dtype=torch.int32)
    pooled = mean_pool_residues(hidden, cu)
    for i, n in enumerate(lengths):
        rows = hidden[cu[i]:cu[i + 1]][1:1 + min(n - 2, 1024)]
        expected = rows.mean(0) if len(rows) else torch.zeros(5)
        torch.testing.assert_close(pooled[i], expected)


def test_bf16_keeps_rotary_fp32_and_tracks_fp32(tiny, model):
    low = load_esm2(tiny, "cpu", torch.bfloat16)
    assert low.layers[0].self_attn.rot_emb.inv_freq.dtype == torch.float32
    assert low.layers[0].fc1.weight.dtype == torch.bfloat16
    proteins = random_proteins([40, 90, 7], seed=5)
    a, b = packed_embeddings(low, proteins, 500), packed_embeddings(model, proteins, 500)
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() > 0.99


def test_safetensors_round_trip(tiny, model, tmp_path):
    from safetensors.torch import save_file

    state, shape = read_esm2_checkpoint(tiny)
    path = tmp_path / "esm2_tiny.safetensors"
    save_file({k: v.contiguous().clone() for k, v in state.items()}, str(path), metadata=safetensors_metadata(shape))
    proteins = random_proteins([20, 33], seed=6)
    np.testing.assert_array_equal(packed_embeddings(load_esm2(path), proteins, 200),
                                  packed_embeddings(model, proteins, 200))


# ------------------------------------------------------------------------------------------ loader errors


def _rewrite(tiny, tmp_path, edit):
    with torch.serialization.safe_globals([argparse.Namespace]):
        data = torch.load(tiny, map_location="cpu", weights_only=True)
    edit(data)
    path = tmp_path / "esm2_t2_edited.pt"
    torch.save(data, path)
    return path


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_esm2(tmp_path / "esm2_nothing.pt")


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "esm2_text.pt"
    path.write_text("hello\n")
    with pytest.raises(ModelError, match="esm2_text.pt"):
        load_esm2(path)


def test_missing_key(tiny, tmp_path):
    key = "encoder.sentence_encoder.layers.1.fc2.weight"
    path = _rewrite(tiny, tmp_path, lambda d: d["model"].pop(key))
    with pytest.raises(ModelError, match="layers.1.fc2.weight") as error:
        load_esm2(path)
    assert error.value.key == "layers.1.fc2.weight" and "esm2_t2_edited.pt" in str(error.value)


def test_wrong_shape(tiny, tmp_path):
    key = "encoder.sentence_encoder.layers.0.self_attn.q_proj.weight"
    path = _rewrite(tiny, tmp_path, lambda d: d["model"].__setitem__(key, torch.zeros(64, 32)))
    with pytest.raises(ModelError, match="shape") as error:
        load_esm2(path)
    assert error.value.key == "layers.0.self_attn.q_proj.weight"


def test_config_disagrees_with_tensors(tiny, tmp_path):
    path = _rewrite(tiny, tmp_path, lambda d: setattr(d["cfg"]["model"], "encoder_layers", 3))
    with pytest.raises(ModelError, match="layers"):
        load_esm2(path)


def test_older_args_namespace_is_accepted(tiny, model, tmp_path):
    def to_args(data):
        data["args"] = data.pop("cfg")["model"]

    loaded = load_esm2(_rewrite(tiny, tmp_path, to_args))
    assert (loaded.num_layers, loaded.embed_dim, loaded.heads) == (2, 64, 4)


# ------------------------------------------------------------------------------------------ GPU, real shapes


def _gpu_compare(layers, dim, heads, lengths, seed=0, precision=torch.bfloat16, elementwise="eager"):
    import esm

    torch.manual_seed(seed)
    with torch.device("cuda"):
        fair = esm.model.esm2.ESM2(num_layers=layers, embed_dim=dim, attention_heads=heads).eval()
    shape = Esm2Shape(layers, dim, heads, True)
    ours = esm2_from_state_dict(fair.state_dict(), shape, "cuda", precision, "auto")
    if elementwise != "eager":
        ours.fuse_elementwise(True, epilogues=elementwise == "epilogues")
        assert ours.elementwise == elementwise
        assert (ours.attention_backend == "rotary-triton") == (elementwise == "epilogues")
    proteins = random_proteins(lengths, seed=seed)
    tokenizer = ProteinTokenizer()
    arrays = [tokenizer.encode(p) for p in proteins]
    got = torch.zeros(len(proteins), dim, device="cuda")
    with torch.inference_mode():
        for members in plan_batches([len(a) for a in arrays], 8192):
            batch = pack([arrays[i] for i in members])
            cu = batch.cu_seqlens.cuda()
            pooled = mean_pool_residues(ours(batch.input_ids.cuda(), cu, batch.max_len), cu)
            got[torch.as_tensor(members, device="cuda")] = pooled
        expected = torch.stack([_fair_pooled(fair, a, layers) for a in arrays])
    return torch.nn.functional.cosine_similarity(got, expected, dim=1)


def _fair_pooled(fair, tokens: np.ndarray, layers: int) -> torch.Tensor:
    """The published pooling on fair-esm's fp32 forward of one sequence (tokens = BOS + residues + EOS)."""
    hidden = fair(torch.from_numpy(tokens)[None].cuda(), repr_layers=[layers])["representations"][layers][0]
    return hidden[1:min(len(tokens) - 2, 1024) + 1].mean(0)


GPU_LENGTHS = [1, 2, 3, 17, 64, 100, 166, 250, 400, 511, 777, 1023, 1024, 1100, 1200] + list(range(5, 400, 13))


@pytest.mark.gpu
@requires_cuda
def test_gpu_650m_shape_bf16_matches_fp32_reference():
    cosine = _gpu_compare(33, 1280, 20, GPU_LENGTHS)
    assert cosine.min().item() >= 0.999, cosine


@pytest.mark.gpu
@requires_cuda
def test_gpu_3b_shape_bf16_matches_fp32_reference():
    cosine = _gpu_compare(36, 2560, 40, GPU_LENGTHS, seed=1)
    assert cosine.min().item() >= 0.999, cosine


@pytest.mark.gpu
@requires_cuda
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 9,
                    reason="the epilogue kernels need Hopper (tensor descriptors)")
@pytest.mark.parametrize("elementwise", ["compiled", "epilogues"])
def test_gpu_3b_shape_fp16_fused_paths_match_fp32_reference(elementwise):
    # the default numerics (fp16 GEMMs, fp32 residual) through each fused path, against fair-esm's fp32 forward;
    # epilogues: the GEMM epilogues, fused q/k/v and the rotary attention kernel (sequences of 1 to 1,026 tokens)
    cosine = _gpu_compare(36, 2560, 40, GPU_LENGTHS, seed=2, precision=FP16, elementwise=elementwise)
    assert cosine.min().item() >= 0.9995, cosine

