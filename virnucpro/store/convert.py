"""Convert a fair-esm ESM-2 checkpoint (.pt, a pickle) into .safetensors: no pickle at load time, memory-mapped,
fast to move to the GPU.

Format written (read by virnucpro.models.esm2):
  * tensors: the checkpoint's `model` state dict under fair-esm's ESM2 module names, i.e. after stripping the
    leading "encoder.sentence_encoder." or "encoder." (as fair-esm's `_load_model_and_alphabet_core_v2` does):
    `embed_tokens.weight`, `layers.<i>.self_attn.q_proj.weight`, ..., `emb_layer_norm_after.weight`,
    `lm_head.*`, plus `contact_head.regression.{weight,bias}` when the `-contact-regression.pt` file lies beside
    the .pt. Dtypes are kept as stored in the checkpoint.
  * metadata (safetensors `__metadata__`, all values are strings):
      format          "virnucpro-esm2"
      num_layers      decimal integer (cfg.encoder_layers)
      embed_dim       decimal integer (cfg.encoder_embed_dim)
      attention_heads decimal integer (cfg.encoder_attention_heads)
      token_dropout   "true" | "false" (cfg.token_dropout)
                      (the shape as virnucpro.models.esm2 reads it: from the tensors and the released sizes
                      where the checkpoint's config does not give it)
      virnucpro       the same shape as JSON, {"model": "esm2", "num_layers": 36, "embed_dim": 2560,
                      "attention_heads": 40, "token_dropout": true}: the key virnucpro.models.esm2 reads
                      (written by its own `safetensors_metadata`, so the two cannot drift apart)
      source          file name of the converted .pt, source_sha256 its sha256
The writer streams tensor by tensor (memory bounded by the largest tensor, not the 30 GB of the 15B model).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import torch

from virnucpro.errors import ModelError
from virnucpro.io.atomic import atomic_write
from virnucpro.models.esm2 import FAIR_ESM_PICKLES, Esm2Shape, read_esm2_checkpoint, safetensors_metadata
from virnucpro.models.torch_files import FAIR_ESM_GLOBALS, load_torch_file
from virnucpro.store.catalog import StoreLocations, load_catalog
from virnucpro.store.fetch import find_in_place
from virnucpro.store.lockfile import Lock, sha256_file, verify_file

FORMAT = "virnucpro-esm2"
_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}


def esm_metadata(shape: Esm2Shape) -> dict[str, str]:
    return {
        "format": FORMAT,
        "num_layers": str(shape.num_layers),
        "embed_dim": str(shape.embed_dim),
        "attention_heads": str(shape.attention_heads),
        "token_dropout": "true" if shape.token_dropout else "false",
        **safetensors_metadata(shape),
    }


def regression_state_dict(pt_path: Path) -> dict[str, torch.Tensor]:
    """fair-esm keeps the contact head in a sibling file; its keys are already unprefixed."""
    regression = pt_path.with_name(pt_path.stem + "-contact-regression.pt")
    if not regression.is_file():
        return {}
    data = load_torch_file(regression, policy=FAIR_ESM_PICKLES, allowed=FAIR_ESM_GLOBALS)
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise ModelError(regression, "not a fair-esm contact-regression file (no 'model' state dict)", key="model")
    return dict(data["model"])


def convert_esm2(pt_path: str | os.PathLike, out_path: str | os.PathLike | None = None) -> Path:
    """Write `<stem>.safetensors` beside the .pt (or at out_path) atomically; return its path."""
    pt_path = Path(pt_path)
    out_path = Path(out_path) if out_path else pt_path.with_suffix(".safetensors")
    state, shape = read_esm2_checkpoint(pt_path)  # the packed model's own reader: same names, same shape
    metadata = esm_metadata(shape)
    tensors = {**state, **regression_state_dict(pt_path)}
    metadata.update(source=pt_path.name, source_sha256=sha256_file(pt_path))
    write_safetensors(out_path, tensors, metadata)
    return out_path


def write_safetensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """The safetensors layout: u64 header size, JSON header (offsets), raw little-endian tensor bytes."""
    names = sorted(tensors)
    header: dict[str, dict] = {"__metadata__": metadata}
    offset = 0
    for name in names:
        tensor = tensors[name]
        if tensor.dtype not in _DTYPES:
            raise ModelError(path, f"dtype {tensor.dtype} cannot be stored in safetensors", key=name)
        size = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": _DTYPES[tensor.dtype], "shape": list(tensor.shape), "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # the reference writer aligns tensor data to 8 bytes
    with atomic_write(path, "wb") as out:
        out.write(struct.pack("<Q", len(encoded)))
        out.write(encoded)
        for name in names:
            out.write(_tensor_bytes(tensors[name]))


def _tensor_bytes(tensor: torch.Tensor) -> memoryview:
    flat = tensor.detach().contiguous().reshape(-1)
    if flat.numel() == 0:
        return memoryview(b"")
    return memoryview(flat.view(torch.uint8).numpy())


def esm_checkpoints_to_convert(names: list[str], locations: StoreLocations, lock: Lock) -> list[Path]:
    """The ESM-2 .pt files of the store named (every one present when none is), each verified against the lock."""
    catalog = load_catalog()
    models = catalog.select(names) if names else catalog.by_kind("esm2")
    found = []
    for model in models:
        if model.kind != "esm2":
            raise ModelError(model.key, "only ESM-2 checkpoints are converted")
        path = find_in_place(model, model.weights, locations)
        if path is None:
            if names:
                raise ModelError(locations.models_dir / model.relpath(model.weights),
                                 f"not in the store; run `virnucpro models fetch {model.key}` first")
            continue
        verify_file(path, lock, model.relpath(model.weights, path.name))  # never convert a corrupt download
        found.append(path)
    if not found:
        raise ModelError(locations.models_dir, "no ESM-2 checkpoint in the store to convert")
    return found
