"""Tiny random-weight DNABERT-S folders in the real Hugging Face format (tests, `make demo`).

The folder holds what the real one holds: config.json (same keys, small dims), weights under the real
MosaicBERT key names (`bert.`-prefixed as BertForMaskedLM saves them, or bare as BertModel does) in
pytorch_model.bin or model.safetensors, tokenizer.json and tokenizer_config.json. Without the real
tokenizer.json a small BPE tokenizer with the same special tokens and post-processor is trained offline.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from virnucpro.io.atomic import atomic_path, atomic_write, write_text_atomic

SPECIAL_TOKENS = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
TOKENIZER_CONFIG = {"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "[UNK]", "cls_token": "[CLS]",
                    "sep_token": "[SEP]", "pad_token": "[PAD]", "mask_token": "[MASK]"}


def train_tiny_dna_tokenizer(vocab_size: int = 200, seed: int = 0):
    """BPE over a few kB of seeded random DNA; [CLS] $A [SEP] like DNABERT-2's tokenizer.json."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    rng = np.random.default_rng(seed)
    alphabet = np.array(list("ACGTN"))
    corpus = ["".join(rng.choice(alphabet, size=int(n), p=[0.245, 0.245, 0.245, 0.245, 0.02]))
              for n in rng.integers(50, 300, size=40)]
    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False)
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    return tokenizer


def tiny_config(vocab_size: int, layers: int, hidden: int, heads: int, intermediate: int) -> dict:
    """The real config.json's keys (transformers 4.28 BertConfig + MosaicBERT's alibi_starting_size)."""
    return {
        "_name_or_path": "virnucpro-tiny-dnabert-s", "alibi_starting_size": 512, "architectures": ["BertModel"],
        "attention_probs_dropout_prob": 0.0, "classifier_dropout": None, "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1, "hidden_size": hidden, "initializer_range": 0.02,
        "intermediate_size": intermediate, "layer_norm_eps": 1e-12, "max_position_embeddings": 512,
        "model_type": "bert", "num_attention_heads": heads, "num_hidden_layers": layers, "pad_token_id": 0,
        "position_embedding_type": "absolute", "torch_dtype": "float32", "transformers_version": "4.28.0",
        "type_vocab_size": 2, "use_cache": True, "vocab_size": vocab_size,
    }


def random_state_dict(cfg: dict, seed: int, prefix: str) -> dict[str, torch.Tensor]:
    """Random weights under the real key names. Linears are scaled by 1/sqrt(fan_in) so attention is neither
    uniform nor one-hot and every LayerNorm has non-trivial affine terms: a wrong detail changes outputs."""
    gen = torch.Generator().manual_seed(seed)
    hidden, inter, vocab = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]

    def normal(*shape, std=1.0):
        return torch.randn(*shape, generator=gen) * std

    def linear(name, out_dim, in_dim, bias=True):
        weights = {f"{name}.weight": normal(out_dim, in_dim, std=in_dim**-0.5)}
        if bias:
            weights[f"{name}.bias"] = normal(out_dim, std=0.1)
        return weights

    def layer_norm(name):
        return {f"{name}.weight": 1.0 + normal(hidden, std=0.1), f"{name}.bias": normal(hidden, std=0.1)}

    state = {"embeddings.word_embeddings.weight": normal(vocab, hidden),
             "embeddings.token_type_embeddings.weight": normal(cfg["type_vocab_size"], hidden, std=0.5),
             **layer_norm("embeddings.LayerNorm")}
    for n in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{n}."
        state.update(linear(p + "attention.self.Wqkv", 3 * hidden, hidden))
        state.update(linear(p + "attention.output.dense", hidden, hidden))
        state.update(layer_norm(p + "attention.output.LayerNorm"))
        state.update(linear(p + "mlp.gated_layers", 2 * inter, hidden, bias=False))
        state.update(linear(p + "mlp.wo", hidden, inter))
        state.update(layer_norm(p + "mlp.layernorm"))
    state.update(linear("pooler.dense", hidden, hidden))  # present in real checkpoints, unused
    state = {prefix + key: value for key, value in state.items()}
    if prefix:  # BertForMaskedLM checkpoints also carry the MLM head
        state["cls.predictions.bias"] = normal(vocab, std=0.1)
    return state


def write_weights(folder: Path, state: dict[str, torch.Tensor], weights_format: str) -> Path:
    if weights_format == "safetensors":
        from safetensors.torch import save_file

        path = folder / "model.safetensors"
        with atomic_path(path) as tmp:
            save_file(state, str(tmp), metadata={"format": "pt"})
    elif weights_format == "bin":
        path = folder / "pytorch_model.bin"
        with atomic_write(path, "wb") as handle:
            torch.save(state, handle)
    else:
        raise ValueError(f"weights_format must be 'bin' or 'safetensors', not {weights_format!r}")
    return path


def write_tokenizer(folder: Path, tokenizer_json: str | os.PathLike | None, seed: int) -> int:
    """Write tokenizer.json (+ tokenizer_config.json); return its vocabulary size."""
    from tokenizers import Tokenizer

    target = folder / "tokenizer.json"
    if tokenizer_json is not None:
        source = Path(tokenizer_json)
        source = source / "tokenizer.json" if source.is_dir() else source
        with atomic_write(target, "wb") as handle, open(source, "rb") as original:
            shutil.copyfileobj(original, handle)
    else:
        write_text_atomic(target, train_tiny_dna_tokenizer(seed=seed).to_str(pretty=True))
    write_text_atomic(folder / "tokenizer_config.json", json.dumps(TOKENIZER_CONFIG, indent=2) + "\n")
    return Tokenizer.from_file(str(target)).get_vocab_size(with_added_tokens=True)


def write_tiny_dnabert(folder: str | os.PathLike, layers: int = 2, hidden: int = 64, heads: int = 4,
                       intermediate: int = 128, seed: int = 0, tokenizer_json: str | os.PathLike | None = None,
                       weights_format: str = "bin", key_prefix: str = "bert.") -> Path:
    """Write a random-weight DNABERT-S folder; `tokenizer_json` (file or folder) copies a real tokenizer."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab_size = write_tokenizer(folder, tokenizer_json, seed)
    cfg = tiny_config(vocab_size, layers, hidden, heads, intermediate)
    write_text_atomic(folder / "config.json", json.dumps(cfg, indent=2) + "\n")
    write_weights(folder, random_state_dict(cfg, seed, key_prefix), weights_format)
    return folder
