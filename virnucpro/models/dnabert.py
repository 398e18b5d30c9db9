"""Packed DNABERT-S (the DNABERT-2-117M MosaicBERT architecture) and a loader of its Hugging Face folder.

Architecture (post-LN BERT without position embeddings):
  embeddings: LayerNorm(word_embeddings[ids] + token_type_embeddings[0])
  each layer: x = LayerNorm(dense(attention(Wqkv(x), ALiBi)) + x)
              x = LayerNorm(wo(gelu(gate) * value) + x), [gate | value] = gated_layers(x)   (GeGLU, no bias)
The module tree mirrors the checkpoint's key names, so the real state dict loads without renaming.
Sequences are packed ([total_tokens, hidden], boundaries in `cu_seqlens`). Attention is the exception: the
varlen kernels take no ALiBi bias, so on the GPU it runs SDPA per padded micro-batch of similar lengths
(models/attention.py, `padded`; flash-attn, when installed, takes ALiBi on packed tokens).
The folder's python files (bert_layers.py ...) are never imported or executed.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from virnucpro.errors import ModelError
from virnucpro.models import attention as varlen_attention
from virnucpro.models.precision import FP32, Precision, as_precision
from virnucpro.models.skeleton import skeleton
from virnucpro.models.torch_files import load_torch_file, plain_reason

CONFIG_FILE = "config.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# Saved by BertForMaskedLM / BertModel but not needed for last hidden states.
UNUSED_KEY_PREFIXES = ("pooler.", "cls.")
UNUSED_KEY_SUFFIXES = ("position_ids", "token_type_ids")


@dataclass(frozen=True)
class DnaBertConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    type_vocab_size: int
    layer_norm_eps: float

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


def alibi_slopes(num_heads: int) -> list[float]:
    """MosaicBERT's `_get_alibi_head_slopes`: geometric slopes, interleaved when heads is not a power of 2."""

    def power_of_two_slopes(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(num_heads).is_integer():
        return power_of_two_slopes(num_heads)
    closest = 2 ** math.floor(math.log2(num_heads))
    return power_of_two_slopes(closest) + alibi_slopes(2 * closest)[0::2][: num_heads - closest]


class Embeddings(nn.Module):
    def __init__(self, cfg: DnaBertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # The published tool passes no token_type_ids: every token is type 0.
        return self.LayerNorm(self.word_embeddings(input_ids) + self.token_type_embeddings.weight[0])


class SelfAttentionProjection(nn.Module):
    """Holds `Wqkv` (checkpoint name `attention.self.Wqkv`)."""

    def __init__(self, cfg: DnaBertConfig):
        super().__init__()
        self.Wqkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)


class AttentionOutput(nn.Module):
    def __init__(self, cfg: DnaBertConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, context: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(context) + residual)


class Attention(nn.Module):
    def __init__(self, cfg: DnaBertConfig):
        super().__init__()
        self.self = SelfAttentionProjection(cfg)
        self.output = AttentionOutput(cfg)
        self.num_heads = cfg.num_attention_heads
        self.head_dim = cfg.head_dim



class GatedMlp(nn.Module):
    def __init__(self, cfg: DnaBertConfig):
        super().__init__()
        self.intermediate_size = cfg.intermediate_size
        self.gated_layers = nn.Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=False)
        self.wo = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.gated_layers(x.to(self.gated_layers.weight.dtype)).split(self.intermediate_size, dim=-1)
        return self.layernorm(self.wo(F.gelu(gate) * value) + x)


class Layer(nn.Module):
    def __init__(self, cfg: DnaBertConfig):
        super().__init__()
        self.attention = Attention(cfg)
        self.mlp = GatedMlp(cfg)

    def forward(self, x: torch.Tensor, attend, regions) -> torch.Tensor:
        before, after = regions
        q, k, v = before(x, self.attention)
        return after(x, attend(q, k, v), self)


def attention_inputs(x: torch.Tensor, attention: Attention):
    """q, k, v from the fused projection (computed in the weights' dtype; x is the fp32 residual stream)."""
    # Wqkv columns are laid out (q|k|v) x heads x head_dim, as MosaicBERT's rearrange "(t h d)".
    wqkv = attention.self.Wqkv
    qkv = wqkv(x.to(wqkv.weight.dtype)).view(x.shape[0], 3, attention.num_heads, attention.head_dim)
    return qkv.unbind(1)


def attention_output_and_mlp(x: torch.Tensor, context: torch.Tensor, layer: Layer) -> torch.Tensor:
    """Post-LN attention output, then the GeGLU MLP with its own post-LN."""
    return layer.mlp(layer.attention.output(context.reshape(x.shape[0], -1), x))


class Encoder(nn.Module):
    def __init__(self, cfg: DnaBertConfig):
        super().__init__()
        self.layer = nn.ModuleList(Layer(cfg) for _ in range(cfg.num_hidden_layers))


class DnaBert(nn.Module):
    """Packed DNABERT-S encoder: forward(input_ids [T], cu_seqlens [n+1], max_len) -> last hidden [T, hidden]
    (fp32: the residual stream is kept in fp32, see set_precision)."""

    def __init__(self, cfg: DnaBertConfig):
        super().__init__()
        self.config = cfg
        self.embed_dim = self.hidden_size = cfg.hidden_size
        self.num_layers = cfg.num_hidden_layers
        self.embeddings = Embeddings(cfg)
        self.encoder = Encoder(cfg)
        self.precision = FP32
        self.set_attention(torch.device("cpu"))
        self.fuse_elementwise(False)

    def set_precision(self, precision: Precision | torch.dtype) -> "DnaBert":
        """Linear layers (and attention) compute in `precision.gemm`; embeddings and LayerNorms, so the residual
        stream, in `precision.residual`. Call set_attention afterwards (the kernel depends on the dtype).

        Post-LN BERT re-rounds the whole hidden state after every block: kept in bf16 that rounding compounds
        over 24 LayerNorms, kept in fp32 it costs only a cast of [tokens, hidden] per matmul.
        """
        self.precision = as_precision(precision)
        self.to(self.precision.gemm)
        self.embeddings.to(self.precision.residual)
        for module in self.modules():
            if isinstance(module, nn.LayerNorm):
                module.to(self.precision.residual)
        return self

    @staticmethod
    def choose_attention(device: torch.device | str, requested: str, precision: Precision):
        """The varlen attention function (with ALiBi bias) for a model computing in `precision` on `device`."""
        return varlen_attention.select_backend(device, requested, alibi=True, dtype=precision.gemm)

    def set_attention(self, device: torch.device | str, requested: str = "auto") -> None:
        """Choose the varlen attention backend once; slopes stay fp32 whatever the weights' dtype."""
        device = torch.device(device)
        self._attention = self.choose_attention(device, requested, self.precision)
        self.attention_backend = getattr(self._attention, "backend_name", requested)
        self._alibi_slopes = torch.tensor(alibi_slopes(self.config.num_attention_heads), dtype=torch.float32,
                                          device=device)

    def forward(self, input_ids: torch.Tensor, cu_seqlens: torch.Tensor, max_len: int) -> torch.Tensor:
        slopes = self._alibi_slopes.to(input_ids.device)  # no-op once set_attention saw the right device
        scale = self.config.head_dim**-0.5

        def attend(q, k, v):
            return self._attention(q, k, v, cu_seqlens, max_len, alibi_slopes=slopes, scale=scale)

        x = self.embeddings(input_ids)
        for layer in self.encoder.layer:
            x = layer(x, attend, self._regions)
        return x

    def fuse_elementwise(self, enabled: bool) -> None:
        """torch.compile the LayerNorm/GeGLU/cast/residual work between the GEMMs (attention excluded); one graph
        serves all layers because the weights are graph inputs."""
        if enabled:
            self._regions = (torch.compile(attention_inputs, dynamic=True),
                             torch.compile(attention_output_and_mlp, dynamic=True))
        else:
            self._regions = (attention_inputs, attention_output_and_mlp)
        self.fused_elementwise = enabled


def mean_pool_all_tokens(hidden: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    """Mean over every token of each packed sequence ([CLS] and [SEP] included), accumulated in fp32."""
    cu_seqlens = cu_seqlens.to(device=hidden.device, dtype=torch.long)
    lengths = cu_seqlens[1:] - cu_seqlens[:-1]
    segment = torch.repeat_interleave(torch.arange(lengths.numel(), device=hidden.device), lengths,
                                      output_size=hidden.shape[0])
    sums = torch.zeros(lengths.numel(), hidden.shape[1], dtype=torch.float32, device=hidden.device)
    sums.index_add_(0, segment, hidden.float())
    return sums / lengths.clamp(min=1).unsqueeze(1).to(torch.float32)


# ---------------------------------------------------------------------------------------------- loading


def read_config(folder: Path) -> DnaBertConfig:
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise ModelError(path, "DNABERT-S config.json not found")
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ModelError(path, f"unreadable JSON: {error}") from error
    values = {}
    for field in fields(DnaBertConfig):
        if field.name not in raw:
            raise ModelError(path, "missing in config", key=field.name)
        values[field.name] = float(raw[field.name]) if field.name == "layer_norm_eps" else int(raw[field.name])
    cfg = DnaBertConfig(**values)
    if cfg.hidden_size % cfg.num_attention_heads:
        raise ModelError(path, "hidden_size is not a multiple of num_attention_heads", key="hidden_size")
    return cfg


def find_weight_file(folder: Path) -> Path:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise ModelError(folder, f"no weight file ({' or '.join(WEIGHT_FILES)})")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors only: safetensors, or a torch pickle restricted to tensors (weights_only)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as error:  # noqa: BLE001 - safetensors raises its own types for a damaged header
            raise ModelError(path, f"unreadable weights ({plain_reason(error)})") from None
    state = load_torch_file(path)  # tensors only; a ModelError names anything else
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise ModelError(path, "not a plain state dict of tensors")
    return state


def strip_checkpoint_keys(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """Drop the `bert.` prefix (BertForMaskedLM checkpoints) and unused heads; return (state, prefix seen)."""
    prefix = "bert." if any(key.startswith("bert.") for key in state) else ""
    kept = {}
    for key, tensor in state.items():
        name = key[len(prefix):] if prefix and key.startswith(prefix) else key
        if name.startswith(UNUSED_KEY_PREFIXES) or name.endswith(UNUSED_KEY_SUFFIXES):
            continue
        kept[name] = tensor
    return kept, prefix


def check_state_dict(state: dict, expected: dict, path: Path, prefix: str) -> None:
    """Every expected key present with the shape config.json implies, and nothing unknown."""
    for name, tensor in expected.items():
        if name not in state:
            raise ModelError(path, "missing weight", key=prefix + name)
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise ModelError(path, f"shape {tuple(state[name].shape)} but config.json implies "
                                   f"{tuple(tensor.shape)}", key=prefix + name)
    for name in state:
        if name not in expected:
            raise ModelError(path, "unexpected weight (not a DNABERT-S / MosaicBERT checkpoint?)", key=prefix + name)


def load_dnabert(folder: str | os.PathLike, device: torch.device | str = "cpu",
                 precision: Precision | torch.dtype = FP32, attention: str = "auto") -> DnaBert:
    """Build DnaBert from a Hugging Face DNABERT-S folder (config.json + model.safetensors | pytorch_model.bin).

    `precision` (or a dtype: the Linear layers' compute dtype) see DnaBert.set_precision; `attention` names the
    varlen backend.
    """
    return place_dnabert(read_dnabert(folder), device, precision, attention)


def read_dnabert(folder: str | os.PathLike) -> DnaBert:
    """The checked model holding the checkpoint's tensors as read (not copied); place_dnabert puts it on its device."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(folder, "DNABERT-S model folder not found")
    cfg = read_config(folder)
    path = find_weight_file(folder)
    state, prefix = strip_checkpoint_keys(read_state_dict(path))
    model = skeleton(lambda: DnaBert(cfg))  # shapes only: the checkpoint's tensors become the parameters
    check_state_dict(state, model.state_dict(), path, prefix)
    model.load_state_dict(state, strict=True, assign=True)
    return model


def place_dnabert(model: DnaBert, device: torch.device | str, precision: Precision | torch.dtype = FP32,
                  attention: str = "auto") -> DnaBert:
    """`model` on `device` in `precision` (cast there, after the copy), eval mode, its attention chosen."""
    model = model.to(device=device).set_precision(precision).eval().requires_grad_(False)
    model.set_attention(torch.device(device), attention)
    return model
