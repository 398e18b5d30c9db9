"""The ways of computing ESM-2 / DNABERT-S embeddings that the benchmark compares, each a callable over a list
of sequences that returns when every embedding is on the host."""

from __future__ import annotations

import numpy as np
import torch

from virnucpro.pack import pack, plan_batches
from virnucpro.tokenize.protein import ProteinTokenizer


def sorted_padded_batches(lengths: list[int], toks_per_batch: int, extra: int = 2) -> list[list[int]]:
    """fair-esm's FastaBatchedDataset.get_batch_indices: ascending length, padded size <= budget."""
    batches, current, longest = [], [], 0
    for index in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        size = lengths[index] + extra
        if current and max(size, longest) * (len(current) + 1) > toks_per_batch:
            batches.append(current)
            current, longest = [], 0
        longest = max(longest, size)
        current.append(index)
    if current:
        batches.append(current)
    return batches


def published_esm(model, alphabet, proteins: list[str], device) -> None:
    """The published tool: fp32, padded batches of 2048 tokens, mean per sequence copied to the host one by one."""
    convert = alphabet.get_batch_converter()
    layer = model.num_layers
    for members in sorted_padded_batches([len(p) for p in proteins], 2048, extra=1):
        _labels, strs, tokens = convert([(str(i), proteins[i]) for i in members])
        with torch.no_grad():
            reps = model(tokens.to(device, non_blocking=True), repr_layers=[layer])["representations"][layer]
        for row, text in enumerate(strs):
            reps[row, 1: min(len(text), 1024) + 1].mean(0).clone().to("cpu")


def _masked_residue_mean(hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    positions = torch.arange(hidden.shape[1], device=hidden.device)[None, :]
    mask = (positions >= 1) & (positions <= lengths[:, None].clamp(max=1024))
    return (hidden.float() * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)


def fairesm_padded(model, alphabet, proteins: list[str], device, toks_per_batch: int = 16384) -> None:
    """The usual quick fix: the same model under fp16 autocast with large padded batches, pooled on the GPU.
    (fair-esm's ESM-2 cannot simply be .half()-ed: its attention mixes fp32 and fp16 operands.)"""
    convert = alphabet.get_batch_converter()
    layer = model.num_layers
    for members in sorted_padded_batches([len(p) for p in proteins], toks_per_batch, extra=2):
        _labels, strs, tokens = convert([(str(i), proteins[i]) for i in members])
        lengths = torch.tensor([len(s) for s in strs], device=device)
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16):
            reps = model(tokens.to(device, non_blocking=True), repr_layers=[layer])["representations"][layer]
        _masked_residue_mean(reps, lengths).cpu()


def hf_sdpa(model, proteins: list[str], device, toks_per_batch: int = 16384) -> None:
    """transformers EsmModel with SDPA in bf16, length-sorted padded batches (the strongest common peer)."""
    tokenizer = ProteinTokenizer()
    encoded = [tokenizer.encode(p) for p in proteins]
    for members in sorted_padded_batches([len(p) for p in proteins], toks_per_batch, extra=2):
        width = max(len(encoded[i]) for i in members)
        ids = np.full((len(members), width), 1, dtype=np.int64)  # <pad> = 1
        for row, i in enumerate(members):
            ids[row, : len(encoded[i])] = encoded[i]
        input_ids = torch.from_numpy(ids).to(device, non_blocking=True)
        with torch.no_grad():
            hidden = model(input_ids=input_ids, attention_mask=input_ids.ne(1)).last_hidden_state
        _masked_residue_mean(hidden, torch.tensor([len(proteins[i]) for i in members], device=device)).cpu()


def prepack(encoded: list[np.ndarray], budget: int) -> list:
    """Pack once on the CPU (what the DataLoader workers do in a real run) into pinned memory."""
    batches = []
    for members in plan_batches([len(e) for e in encoded], budget):
        batch = pack([encoded[i] for i in members])
        if torch.cuda.is_available():
            batch.input_ids = batch.input_ids.pin_memory()
            batch.cu_seqlens = batch.cu_seqlens.pin_memory()
        batches.append(batch)
    return batches


def packed(model, pool, batches: list, device) -> None:
    """This project: packed tokens, varlen attention, pooled on the GPU, one copy to the host at the end."""
    pooled = []
    with torch.inference_mode():
        for batch in batches:
            cu = batch.cu_seqlens.to(device, non_blocking=True)
            hidden = model(batch.input_ids.to(device, non_blocking=True), cu, batch.max_len)
            pooled.append(pool(hidden, cu))
        torch.cat(pooled).float().cpu()
