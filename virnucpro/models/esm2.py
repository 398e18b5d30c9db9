"""Packed ESM-2: fair-esm's ESM2 forward on concatenated sequences, with varlen attention and no padding.

Same computation as `esm.model.esm2.ESM2` (fair-esm 2.0.0) up to `emb_layer_norm_after`, per sequence:
  x = embed_tokens(ids); token dropout: <mask> rows zeroed, x * 0.88 / (1 - observed mask ratio of the sequence)
  each layer (pre-LN): x += out_proj(attn(rotary(q), rotary(k), v)) of self_attn_layer_norm(x)
                       x += fc2(gelu_erf(fc1(final_layer_norm(x))))
  x = emb_layer_norm_after(x)
Rotary angles are computed in fp32 from positions that restart at 0 in every sequence, with each layer's
`inv_freq` buffer from the checkpoint, and applied in fp32 whatever the weights' dtype. Parameter names equal
fair-esm's state-dict names after its prefix stripping, so a checkpoint loads with a plain load_state_dict.
On the GEMM-epilogue path (Hopper, models.fused_kernels) q, k and v come from one fused projection and the
rotary is applied inside the attention kernel (models.rotary_attention); elsewhere the three projections stay
separate (an H100 measured 72k tokens/s fused or not with separate rotary and attention passes).

Checkpoints: fair-esm `.pt` files ({"model": state dict, "cfg": {"model": Namespace}} or older {"args": ...}),
read through models.torch_files (weights_only and mmap; a `cfg` holding other config classes is read with the
restricted unpickler, those classes as inert stand-ins; a shape the config does not give comes from the tensors
and the released ESM-2 sizes); or `.safetensors` with the same (stripped) names and the shape under the header
metadata key "virnucpro" as JSON: {"model": "esm2", "num_layers", "embed_dim", "attention_heads",
"token_dropout"} (see `safetensors_metadata`).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from virnucpro.errors import ModelError
from virnucpro.models import attention as attention_backends
from virnucpro.models.attention import sequence_of_token
from virnucpro.models.precision import FP32, Precision, as_precision
from virnucpro.models.restricted_pickle import InertObject, PicklePolicy
from virnucpro.models.skeleton import skeleton
from virnucpro.models.torch_files import FAIR_ESM_GLOBALS, load_torch_file, plain_reason

log = logging.getLogger(__name__)

MASK_RATIO_TRAIN = 0.15 * 0.8  # fair-esm's token-dropout constant
MASK_ID = 32  # <mask> in the ESM-1b alphabet (tokenize/protein.py)
SAFETENSORS_KEY = "virnucpro"
_PREFIX = re.compile(r"^(encoder\.sentence_encoder\.|encoder\.)")
_IGNORED_PREFIXES = ("lm_head.", "contact_head.")


# ----------------------------------------------------------------------------------------------- model


class RotaryEmbedding(nn.Module):
    """Holds fair-esm's `inv_freq` buffer and keeps it fp32 when the model is cast to fp16/bf16."""

    def __init__(self, head_dim: int):
        super().__init__()
        if torch.get_default_device().type == "meta":  # a skeleton (models.skeleton): the checkpoint's is assigned
            inv_freq = torch.empty(head_dim // 2)  # (computing it on meta would import torch._dynamo)
        else:
            inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
        self.register_buffer("inv_freq", inv_freq)

    def _apply(self, fn, *args, **kwargs):
        inv_freq = self.inv_freq
        super()._apply(fn, *args, **kwargs)
        self.inv_freq = inv_freq.to(device=self.inv_freq.device, dtype=torch.float32)
        return self

    def cos_sin(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = positions.to(torch.float32)[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)[:, None, :]  # [T, 1, head_dim]: broadcast over heads
        return emb.cos(), emb.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Rotary in fp32, returned in `dtype` (default: x's)."""
    x32 = x.to(torch.float32)
    return (x32 * cos + rotate_half(x32) * sin).to(dtype or x.dtype)


class SelfAttention(nn.Module):
    def __init__(self, embed_dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.head_dim = embed_dim // heads
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        self.rot_emb = RotaryEmbedding(self.head_dim)
        self.qkv_weight = self.qkv_bias = None

    def fuse_projections(self) -> None:
        """One [3 * dim, dim] projection for q, k and v (one GEMM; 1.74 ms against 3 x 0.65 ms for a 32,768-token
        batch at the 3B shape on an H200). q/k/v_proj's parameters become views of it, so a later load_state_dict
        still fills it; a cast or move afterwards breaks the sharing, so this is done last (fuse_elementwise)."""
        projections = (self.q_proj, self.k_proj, self.v_proj)
        weight = torch.cat([p.weight.detach() for p in projections])
        bias = torch.cat([p.bias.detach() for p in projections])
        for index, projection in enumerate(projections):
            rows = slice(index * projection.out_features, (index + 1) * projection.out_features)
            projection.weight.data, projection.bias.data = weight[rows], bias[rows]
        self.qkv_weight, self.qkv_bias = weight, bias  # plain attributes: the state dict keeps fair-esm's names


def attention_inputs(x, norm: nn.LayerNorm, attn: SelfAttention, cos, sin, attention_dtype: torch.dtype):
    """Pre-LN (in the residual's dtype), q/k/v projections (in the weights' dtype) and rotary (fp32): everything
    before the attention kernel, which gets q/k/v in `attention_dtype`."""
    h = norm(x).to(attn.q_proj.weight.dtype)
    shape = (x.shape[0], attn.heads, attn.head_dim)
    q, k, v = attn.q_proj(h).view(shape), attn.k_proj(h).view(shape), attn.v_proj(h).view(shape)
    return (apply_rotary(q, cos, sin, attention_dtype), apply_rotary(k, cos, sin, attention_dtype),
            v.to(attention_dtype))


def projected_attention(inputs, x, layer: "TransformerLayer", rotary, cu_seqlens, max_len, attend, attention_dtype):
    """The context of one layer's attention: `inputs` (attention_inputs, eager or compiled), then the varlen kernel."""
    attn = layer.self_attn
    q, k, v = inputs(x, layer.self_attn_layer_norm, attn, *rotary, attention_dtype)
    return attend(q, k, v, cu_seqlens, max_len, scale=attn.head_dim ** -0.5)


def attention_in_kernels(x, layer: "TransformerLayer", rotary, cu_seqlens, max_len, attend, attention_dtype):
    """projected_attention on the GEMM-epilogue path: the LayerNorm kernel, one fused q/k/v GEMM, and an attention
    kernel that applies the rotary as it loads q and k (models.rotary_attention); no rotary pass, no copies.
    `rotary`: cos/sin by position within a sequence (not by token)."""
    from virnucpro.models import fused_kernels, rotary_attention

    attn = layer.self_attn
    h = fused_kernels.layer_norm(x, layer.self_attn_layer_norm, attn.qkv_weight.dtype)
    qkv = F.linear(h, attn.qkv_weight, attn.qkv_bias)
    return rotary_attention.rotary_varlen_attention(qkv, cu_seqlens, max_len, *rotary, attn.heads,
                                                    attn.head_dim ** -0.5)


def attention_output_and_ffn(x, context, layer: "TransformerLayer"):
    """Output projection, residual, pre-LN feed-forward (exact erf gelu, as fair-esm), residual. The residual
    stream keeps its own dtype (fp32 by default); the GEMMs take their inputs in the weights' dtype."""
    gemm = layer.fc1.weight.dtype
    x = x + layer.self_attn.out_proj(context.reshape(x.shape).to(gemm))
    return x + layer.fc2(F.gelu(layer.fc1(layer.final_layer_norm(x).to(gemm))))


def attention_output_and_ffn_in_epilogues(x, context, layer: "TransformerLayer"):
    """attention_output_and_ffn with its elementwise work inside the GEMMs (models.fused_kernels): biases, the
    GELU and both residual adds on the fp32 accumulators; x (the fp32 residual stream) is updated in place."""
    from virnucpro.models import fused_kernels

    gemm = layer.fc1.weight.dtype
    x = fused_kernels.linear_residual(context.reshape(x.shape).to(gemm), layer.self_attn.out_proj, x, "out_proj")
    h = fused_kernels.layer_norm(x, layer.final_layer_norm, gemm)
    return fused_kernels.linear_residual(fused_kernels.linear_gelu(h, layer.fc1), layer.fc2, x, "fc2")


class TransformerLayer(nn.Module):
    def __init__(self, embed_dim: int, heads: int):
        super().__init__()
        self.self_attn = SelfAttention(embed_dim, heads)
        self.self_attn_layer_norm = nn.LayerNorm(embed_dim)
        self.fc1 = nn.Linear(embed_dim, 4 * embed_dim)
        self.fc2 = nn.Linear(4 * embed_dim, embed_dim)
        self.final_layer_norm = nn.LayerNorm(embed_dim)

    def forward(self, x, rotary, cu_seqlens, max_len, attend, regions, attention_dtype) -> torch.Tensor:
        attention, after = regions
        context = attention(x, self, rotary, cu_seqlens, max_len, attend, attention_dtype)
        return after(x, context, self)


class ESM2(nn.Module):
    def __init__(self, num_layers: int, embed_dim: int, heads: int, vocab: int = 33, token_dropout: bool = True,
                 attention: str = "auto"):
        super().__init__()
        if embed_dim % heads:
            raise ValueError(f"embed_dim {embed_dim} is not a multiple of heads {heads}")
        self.num_layers = num_layers
        self.embed_dim = embed_dim
        self.heads = heads
        self.token_dropout = token_dropout
        self._shared_inv_freq: bool | None = None
        self.embed_tokens = nn.Embedding(vocab, embed_dim, padding_idx=1)
        self.layers = nn.ModuleList(TransformerLayer(embed_dim, heads) for _ in range(num_layers))
        self.emb_layer_norm_after = nn.LayerNorm(embed_dim)
        self.precision = FP32
        self.set_attention("cpu", attention)
        self.fuse_elementwise(False)

    def set_precision(self, precision: Precision) -> "ESM2":
        """GEMM weights in `precision.gemm`; embeddings, LayerNorms (so the residual stream) in
        `precision.residual`; rotary stays fp32. Call set_attention afterwards (the kernel depends on the dtype)."""
        self.precision = precision
        for module in self.modules():
            if isinstance(module, nn.Linear):
                module.to(precision.gemm)
            elif isinstance(module, (nn.LayerNorm, nn.Embedding)):
                module.to(precision.residual)
        return self

    def fuse_elementwise(self, enabled: bool, epilogues: bool = True) -> None:
        """Fuse the LayerNorm/rotary/gelu/residual work around the GEMMs: torch.compile fuses it, one graph for
        every layer (weights are graph inputs), around the hand-picked varlen attention kernel. Where
        models.fused_kernels runs (Hopper, 16-bit GEMMs, fp32 residual) the work after attention rides in the GEMM
        epilogues instead and, unless an attention backend was asked for by name (or the head size does not suit
        models.rotary_attention), q/k/v come from one fused GEMM and the rotary is applied inside the attention
        kernel. Chosen once, for the device and precision the model
        has now (so call it after moving and casting the model)."""
        self.attention_backend = self._attend.backend_name
        if not enabled:
            self._regions, self.elementwise = (partial(projected_attention, attention_inputs),
                                               attention_output_and_ffn), "eager"
            self.fused_elementwise = False
            return
        attention = partial(projected_attention, torch.compile(attention_inputs, dynamic=True))
        if not (epilogues and self._epilogue_kernels_run_here()):
            self._regions = (attention, torch.compile(attention_output_and_ffn, dynamic=True))
            self.elementwise, self.fused_elementwise = "compiled", True
            return
        from virnucpro.models import rotary_attention

        if self.attention_requested == "auto" and rotary_attention.supports(self.embed_dim // self.heads):
            for layer in self.layers:
                layer.self_attn.fuse_projections()
            attention, self.attention_backend = attention_in_kernels, "rotary-triton"
        self._regions = (attention, attention_output_and_ffn_in_epilogues)
        self.elementwise, self.fused_elementwise = "epilogues", True

    def _epilogue_kernels_run_here(self) -> bool:
        device = self.embed_tokens.weight.device
        if device.type != "cuda":
            return False
        try:
            from virnucpro.models.fused_kernels import supported
        except ImportError:  # torch's wheel for this platform came without Triton
            return False
        return supported(device, self.precision, self.embed_dim, self.heads)

    def rotary_tables(self, positions: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """cos/sin per layer from each layer's checkpoint `inv_freq`; computed once when all layers share it."""
        inv_freqs = [layer.self_attn.rot_emb for layer in self.layers]
        if self._shared_inv_freq is None:
            first = inv_freqs[0].inv_freq
            self._shared_inv_freq = all(torch.equal(r.inv_freq, first) for r in inv_freqs)
        if self._shared_inv_freq:
            return [inv_freqs[0].cos_sin(positions)] * len(inv_freqs)
        return [r.cos_sin(positions) for r in inv_freqs]

    def _load_from_state_dict(self, *args, **kwargs):
        self._shared_inv_freq = None  # new inv_freq buffers: check again
        return super()._load_from_state_dict(*args, **kwargs)

    @staticmethod
    def choose_attention(device: torch.device | str, requested: str, precision: Precision):
        """The varlen attention function for a model computing in `precision` on `device`."""
        return attention_backends.select_backend(device, requested, alibi=False, dtype=precision.attention)

    def set_attention(self, device: torch.device | str, requested: str = "auto") -> None:
        """Choose the varlen attention backend once, for the device and attention dtype the model will run in."""
        self._attend = self.choose_attention(device, requested, self.precision)
        self.attention_requested = requested
        self.attention_backend = self._attend.backend_name

    def embed(self, input_ids: torch.Tensor, cu_seqlens: torch.Tensor, sequence: torch.Tensor) -> torch.Tensor:
        x = self.embed_tokens(input_ids)
        if not self.token_dropout:
            return x
        is_mask = input_ids == MASK_ID
        x = x.masked_fill(is_mask[:, None], 0.0)
        # The rescaling factor is computed in fp32 whatever x's dtype (in bf16, 0.88 itself and lengths > 256
        # would not be exact).
        lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).to(torch.float32)
        masked = torch.zeros(len(lengths), device=x.device, dtype=torch.float32).index_add_(
            0, sequence, is_mask.to(torch.float32))
        factor = (1 - MASK_RATIO_TRAIN) / (1 - masked / lengths)
        return (x.to(torch.float32) * factor[sequence, None]).to(x.dtype)

    def forward(self, input_ids: torch.Tensor, cu_seqlens: torch.Tensor, max_len: int) -> torch.Tensor:
        """input_ids [T] int64 (packed), cu_seqlens [n+1] int32 -> hidden [T, embed_dim] after the final LN."""
        sequence = sequence_of_token(cu_seqlens, input_ids.shape[0])
        if self.attention_backend == "rotary-triton":  # that kernel reads cos/sin by position, not by token
            positions = torch.arange(max_len, device=input_ids.device)
        else:
            positions = torch.arange(input_ids.shape[0], device=input_ids.device) - cu_seqlens.long()[sequence]
        x = self.embed(input_ids, cu_seqlens, sequence)
        for layer, rotary in zip(self.layers, self.rotary_tables(positions)):
            x = layer(x, rotary, cu_seqlens, max_len, self._attend, self._regions, self.precision.attention)
        return self.emb_layer_norm_after(x)


def mean_pool_residues(hidden: torch.Tensor, cu_seqlens: torch.Tensor, max_residues: int = 1024) -> torch.Tensor:
    """Per sequence, the fp32 mean of hidden over residues 1..min(L-2, max_residues) (BOS/EOS excluded).

    An empty protein (L = 2: BOS + EOS only) has no residue and gets a zero vector instead of a NaN.
    """
    total = hidden.shape[0]
    sequence = sequence_of_token(cu_seqlens, total)
    starts, stops = cu_seqlens[:-1].long(), cu_seqlens[1:].long()
    position = torch.arange(total, device=hidden.device) - starts[sequence]
    last_residue = torch.clamp(stops - starts - 2, max=max_residues)[sequence]
    weight = ((position >= 1) & (position <= last_residue)).to(torch.float32)
    n = cu_seqlens.numel() - 1
    sums = torch.zeros(n, hidden.shape[1], device=hidden.device, dtype=torch.float32)
    sums.index_add_(0, sequence, hidden.to(torch.float32) * weight[:, None])
    counts = torch.zeros(n, device=hidden.device, dtype=torch.float32).index_add_(0, sequence, weight)
    return sums / counts.clamp(min=1)[:, None]


# ----------------------------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class Esm2Shape:
    num_layers: int
    embed_dim: int
    attention_heads: int
    token_dropout: bool = True


def strip_prefixes(state_dict: dict) -> dict:
    """fair-esm's upgrade_state_dict: drop the leading 'encoder.sentence_encoder.' or 'encoder.'."""
    return {_PREFIX.sub("", name): tensor for name, tensor in state_dict.items()}


# The released ESM-2 sizes (name: layers, width, heads). When a checkpoint's configuration does not give the shape,
# layers and width come from the tensors and the heads from the width.
RELEASED_ESM2 = {"8M": (6, 320, 20), "35M": (12, 480, 20), "150M": (30, 640, 20), "650M": (33, 1280, 20),
                 "3B": (36, 2560, 40), "15B": (48, 5120, 40)}
_HEADS_BY_WIDTH = {width: heads for _, width, heads in RELEASED_ESM2.values()}
_CONFIG_FIELDS = {"num_layers": ("encoder_layers", "layers"), "embed_dim": ("encoder_embed_dim", "embed_dim"),
                  "attention_heads": ("encoder_attention_heads", "attention_heads")}

# fair-esm's files come from fairseq training: besides argparse.Namespace their `cfg` may hold fairseq or
# omegaconf config classes and numpy values. Those become inert attribute bags (models.restricted_pickle).
FAIR_ESM_PICKLES = PicklePolicy(
    "is neither tensor data nor a configuration class",
    stand_ins=frozenset(f"{module}.{name}" for module in ("numpy.core.multiarray", "numpy._core.multiarray")
                        for name in ("scalar", "_reconstruct")) | {"numpy.dtype", "numpy.ndarray"},
    unknown_classes=True,
)


def _config_value(config, name: str):
    """A field of a checkpoint configuration: dict key, argparse.Namespace or stand-in attribute, or an
    omegaconf DictConfig's node (pickled as `_content[name]._val`); None when absent."""
    if isinstance(config, dict):
        fields = config
    elif isinstance(config, InertObject):
        fields = config.fields
    elif isinstance(config, argparse.Namespace):
        fields = vars(config)
    else:
        return None
    if name in fields:
        return fields[name]
    content = fields.get("_content")
    node = content.get(name) if isinstance(content, dict) else None
    if isinstance(node, InertObject) and "_val" in node.fields:  # a value node; a nested DictConfig stays itself
        return node.fields["_val"]
    return node


def _as_int(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        return int(value)
    return None


def _checkpoint_config(data: dict):
    """fair-esm's ESM-2 configuration (`cfg["model"]`), or the older `args`; None when neither is there."""
    cfg = data.get("cfg")
    model_cfg = _config_value(cfg, "model") if cfg is not None else None
    return model_cfg if model_cfg is not None else data.get("args")


def _shape_from_config(path: Path, data: dict, state: dict) -> Esm2Shape:
    """The shape from the checkpoint's configuration; what it does not give, from the tensors (layers, width)
    and the released ESM-2 sizes (heads by width)."""
    config = _checkpoint_config(data)
    values = {}
    for field, candidates in _CONFIG_FIELDS.items():
        found = [_as_int(_config_value(config, name)) for name in candidates] if config is not None else []
        values[field] = next((value for value in found if value is not None), None)
    if None in values.values():
        values = _shape_from_tensors(path, state, values)
    token_dropout = _config_value(config, "token_dropout") if config is not None else None
    return Esm2Shape(**values, token_dropout=token_dropout if isinstance(token_dropout, bool) else True)


def _shape_from_tensors(path: Path, state: dict, known: dict) -> dict:
    embed = state.get("embed_tokens.weight")
    if not isinstance(embed, torch.Tensor) or embed.dim() != 2:
        raise ModelError(path, "no usable configuration (cfg.model or args) and no 2-d embedding to take the width "
                               "from", key="embed_tokens.weight")
    layer_ids = _layer_ids(state)
    if not known["num_layers"] and not layer_ids:
        raise ModelError(path, "no transformer layer in the state dict", key="layers.0")
    width = known["embed_dim"] or int(embed.shape[1])
    heads = known["attention_heads"] or _HEADS_BY_WIDTH.get(width)
    if heads is None:
        sizes = ", ".join(str(w) for w in sorted(_HEADS_BY_WIDTH))
        raise ModelError(path, f"the configuration does not give the attention heads and width {width} is not a "
                               f"released ESM-2 size ({sizes})", key="cfg.model.encoder_attention_heads")
    log.info("%s: shape taken from the tensors (the configuration does not give it)", path)
    return {"num_layers": known["num_layers"] or max(layer_ids) + 1, "embed_dim": width, "attention_heads": heads}


def _read_pt(path: Path) -> tuple[dict, Esm2Shape]:
    data = load_torch_file(path, policy=FAIR_ESM_PICKLES, allowed=FAIR_ESM_GLOBALS)
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict) or not data["model"]:
        raise ModelError(path, "not a fair-esm checkpoint (no 'model' state dict)", key="model")
    state = strip_prefixes(data["model"])
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ModelError(path, f"a {type(value).__name__} where a tensor belongs", key=str(key))
    return state, _shape_from_config(path, data, state)


def safetensors_metadata(shape: Esm2Shape) -> dict[str, str]:
    """Header metadata that makes a .safetensors state dict loadable by load_esm2."""
    return {SAFETENSORS_KEY: json.dumps({"model": "esm2", **asdict(shape)})}


def _read_safetensors(path: Path) -> tuple[dict, Esm2Shape]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = json.loads((handle.metadata() or {}).get(SAFETENSORS_KEY, "null"))
            state = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as error:  # safetensors raises its own error types for a corrupt header
        raise ModelError(path, f"not a readable safetensors file ({plain_reason(error)})") from None
    if not isinstance(meta, dict) or meta.get("model") != "esm2":
        raise ModelError(path, "safetensors file lacks ESM-2 metadata", key=SAFETENSORS_KEY)
    try:
        shape = Esm2Shape(int(meta["num_layers"]), int(meta["embed_dim"]), int(meta["attention_heads"]),
                          bool(meta.get("token_dropout", True)))
    except (KeyError, TypeError, ValueError) as error:
        raise ModelError(path, f"bad ESM-2 metadata: {error}", key=SAFETENSORS_KEY) from error
    return strip_prefixes(state), shape


def read_esm2_checkpoint(path: str | Path) -> tuple[dict, Esm2Shape]:
    """(state dict with fair-esm's stripped names, shape) from a .pt or .safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(path, "ESM-2 checkpoint file not found")
    return _read_safetensors(path) if path.suffix == ".safetensors" else _read_pt(path)


def _check_state(path: Path, state: dict, expected: dict) -> dict:
    """Keep the encoder's tensors; any missing, unknown or wrongly shaped one is a ModelError naming it."""
    kept = {k: v for k, v in state.items() if not k.startswith(_IGNORED_PREFIXES)}
    for key, reference in expected.items():
        if key not in kept:
            raise ModelError(path, "missing from the checkpoint", key=key)
        if tuple(kept[key].shape) != tuple(reference.shape):
            raise ModelError(path, f"shape {tuple(kept[key].shape)}, expected {tuple(reference.shape)} "
                                   f"for the configured model", key=key)
    unknown = sorted(set(kept) - set(expected))
    if unknown:
        raise ModelError(path, "unexpected tensor for an ESM-2 encoder", key=unknown[0])
    return kept


def _layer_ids(state: dict) -> set[int]:
    return {int(m.group(1)) for k in state if (m := re.match(r"layers\.(\d+)\.", k))}


def _check_shape(path: Path, state: dict, shape: Esm2Shape) -> None:
    """The configuration must agree with the tensors (layer count, width, heads)."""
    layer_ids = _layer_ids(state)
    if layer_ids and max(layer_ids) + 1 != shape.num_layers:
        raise ModelError(path, f"configuration says {shape.num_layers} layers, state dict has {max(layer_ids) + 1}",
                         key=f"layers.{max(layer_ids)}")
    if shape.embed_dim % shape.attention_heads:
        raise ModelError(path, f"embed_dim {shape.embed_dim} not divisible by {shape.attention_heads} heads",
                         key="cfg.model.encoder_attention_heads")


def esm2_from_state_dict(state: dict, shape: Esm2Shape, device: torch.device | str = "cpu",
                         precision: Precision | torch.dtype = FP32, attention: str = "auto",
                         source: str | Path = "<state dict>") -> ESM2:
    """Packed ESM-2 from a fair-esm state dict (prefixes already stripped); `source` names it in errors."""
    return place_esm2(esm2_on_host(state, shape, source), device, precision, attention)


def esm2_on_host(state: dict, shape: Esm2Shape, source: str | Path = "<state dict>") -> ESM2:
    """The checked model holding the state dict's tensors as they are (memory-mapped, not copied); place_esm2
    puts it on its device."""
    source = Path(source)
    _check_shape(source, state, shape)
    vocab = state["embed_tokens.weight"].shape[0] if "embed_tokens.weight" in state else 33
    # no random init of billions of weights that are overwritten at once
    model = skeleton(lambda: ESM2(shape.num_layers, shape.embed_dim, shape.attention_heads, vocab,
                                  shape.token_dropout, "sdpa"))
    state = _check_state(source, state, model.state_dict())
    state = {k: v.to(torch.float32) if k.endswith("rot_emb.inv_freq") else v for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model


def place_esm2(model: ESM2, device: torch.device | str, precision: Precision | torch.dtype = FP32,
               attention: str = "auto") -> ESM2:
    """`model` on `device` in `precision` (cast there, after the copy), eval mode, its attention chosen."""
    model = model.to(device=device).set_precision(as_precision(precision)).eval()
    model.set_attention(device, attention)
    return model


def read_esm2(path: str | Path) -> ESM2:
    """The checkpoint's model on the host (esm2_on_host)."""
    state, shape = read_esm2_checkpoint(path)
    return esm2_on_host(state, shape, source=path)


def load_esm2(path: str | Path, device: torch.device | str = "cpu", precision: Precision | torch.dtype = FP32,
              attention: str = "auto") -> ESM2:
    """Packed ESM-2 with the checkpoint's weights, on `device` in `precision` (a dtype means: GEMMs and
    attention in it, residual stream fp32), eval mode."""
    path = Path(path)
    model = place_esm2(read_esm2(path), device, precision, attention)
    log.info("ESM-2 %s: %d layers x %d, %d heads, %s on %s, attention %s", path.name, model.num_layers,
             model.embed_dim, model.heads, model.precision.describe(), device, model.attention_backend)
    return model
