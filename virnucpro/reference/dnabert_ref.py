"""Oracle for DNABERT-S embeddings: plain fp32, one sequence at a time, explicit [L, L] ALiBi bias.

Written from the architecture description only (no code shared with virnucpro.models), and tokenized with
transformers' PreTrainedTokenizerFast, as the published tool does: `mean(model(tokenizer(seq))[0], dim=1)`.
Slow on purpose; the oracle of the tests (tests/test_dnabert.py, the GPU fidelity test) and of `virnucpro selftest`
(which passes `token_ids` from the `tokenizers` library, as the image has no transformers).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from virnucpro.models.torch_files import load_torch_file


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        raw = load_file(str(folder / "model.safetensors"))
    else:
        raw = load_torch_file(folder / "pytorch_model.bin")
    return {key.removeprefix("bert."): tensor.to(torch.float32) for key, tensor in raw.items()}


def _slopes(heads: int) -> torch.Tensor:
    """ALiBi slopes 2^(-8k/n), k = 1..n. When n is not a power of two: the p = 2^floor(log2 n) slopes of p
    heads, then the first, third, fifth... slopes of the 2p series until there are n."""

    def geometric(n: int) -> list[float]:
        return [2.0 ** (-8.0 * k / n) for k in range(1, n + 1)]

    p = 1 << (heads.bit_length() - 1)
    if p == heads:
        return torch.tensor(geometric(heads), dtype=torch.float32)
    return torch.tensor(geometric(p) + geometric(2 * p)[0::2][: heads - p], dtype=torch.float32)


def _layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def _gelu_erf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _linear(x: torch.Tensor, w: dict, name: str) -> torch.Tensor:
    out = x @ w[name + ".weight"].T
    bias = w.get(name + ".bias")
    return out if bias is None else out + bias


def _attention(x: torch.Tensor, w: dict, prefix: str, heads: int, slopes: torch.Tensor) -> torch.Tensor:
    length, hidden = x.shape
    head_dim = hidden // heads
    qkv = _linear(x, w, prefix + "attention.self.Wqkv")
    q, k, v = (qkv[:, i * hidden:(i + 1) * hidden].reshape(length, heads, head_dim).permute(1, 0, 2)
               for i in range(3))
    position = torch.arange(length, dtype=torch.float32, device=x.device)
    distance = (position[None, :] - position[:, None]).abs()
    bias = -slopes[:, None, None] * distance[None]  # [heads, L, L]
    scores = q @ k.transpose(1, 2) / math.sqrt(head_dim) + bias
    probs = torch.softmax(scores, dim=-1)
    return (probs @ v).permute(1, 0, 2).reshape(length, hidden)


def reference_hidden_states(config: dict, w: dict, ids: Sequence[int]) -> torch.Tensor:
    """Last hidden states [L, hidden] of one tokenized sequence."""
    eps = float(config["layer_norm_eps"])
    heads = int(config["num_attention_heads"])
    inter = int(config["intermediate_size"])
    device = w["embeddings.word_embeddings.weight"].device
    slopes = _slopes(heads).to(device)
    ids_tensor = torch.as_tensor(list(ids), dtype=torch.long, device=device)
    x = w["embeddings.word_embeddings.weight"][ids_tensor] + w["embeddings.token_type_embeddings.weight"][0]
    x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
    for n in range(int(config["num_hidden_layers"])):
        p = f"encoder.layer.{n}."
        context = _attention(x, w, p, heads, slopes)
        x = _layer_norm(_linear(context, w, p + "attention.output.dense") + x,
                        w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], eps)
        gated_both = _linear(x, w, p + "mlp.gated_layers")
        mixed = _gelu_erf(gated_both[:, :inter]) * gated_both[:, inter:]
        x = _layer_norm(_linear(mixed, w, p + "mlp.wo") + x,
                        w[p + "mlp.layernorm.weight"], w[p + "mlp.layernorm.bias"], eps)
    return x


def reference_token_ids(folder: str | os.PathLike, seqs: Sequence[str]) -> list[list[int]]:
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(Path(folder) / "tokenizer.json"))
    return [tokenizer(seq)["input_ids"] for seq in seqs]


@torch.no_grad()
def reference_dnabert_embeddings(folder: str | os.PathLike, seqs: Sequence[str], device: str = "cpu",
                                 token_ids: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """[n, hidden] float32: mean of the last hidden states over all tokens ([CLS], [SEP] included), computed
    in fp32 on `device` (on CUDA with TF32 off).

    `token_ids` (one list per sequence) replaces transformers' tokenization, for callers that must not need
    transformers (`virnucpro selftest` in the image tokenizes with the `tokenizers` library directly).
    """
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    w = {name: tensor.to(device) for name, tensor in _weights(folder).items()}
    ids_per_seq = reference_token_ids(folder, seqs) if token_ids is None else token_ids
    rows = [reference_hidden_states(config, w, ids).mean(dim=0) for ids in ids_per_seq]
    if not rows:
        return np.zeros((0, int(config["hidden_size"])), dtype=np.float32)
    return torch.stack(rows).cpu().numpy().astype(np.float32)
