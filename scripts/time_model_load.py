#!/usr/bin/env python3
"""Time loading ESM-2 weights onto the GPU: fair-esm .pt (pickle, weights_only, mmap) vs converted .safetensors.

    python scripts/time_model_load.py --pt ~/.cache/virnucpro/models/esm2/esm2_t36_3B_UR50D.pt
    python scripts/time_model_load.py --tiny          # dry run with a tiny synthetic checkpoint
    python scripts/time_model_load.py --random-3b     # real 3B shape, random fp16 weights (5.7 GB written first)

The .safetensors is made with `virnucpro models convert` (done here into a temporary folder when --safetensors
is not given). Each format is timed `--repeats` times; the first run of each may read from disk, later ones
from the page cache, so both are printed. When virnucpro.models.esm2.load_esm2 exists, the full model build is
timed too. Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from virnucpro.models.esm2 import read_esm2_checkpoint  # noqa: E402
from virnucpro.store.convert import convert_esm2  # noqa: E402


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_pt_state(path: Path, device: torch.device) -> dict:
    state, _ = read_esm2_checkpoint(path)
    return {k: v.to(device) for k, v in state.items()}


def load_safetensors_state(path: Path, device: torch.device) -> dict:
    from safetensors.torch import load_file

    return load_file(path, device=str(device))


def load_full_model(path: Path, device: torch.device):
    from virnucpro.models.esm2 import load_esm2

    return load_esm2(path, device, torch.bfloat16 if device.type == "cuda" else torch.float32)


def timed(label: str, fn, path: Path, device: torch.device, repeat: int) -> dict:
    synchronize(device)
    start = time.perf_counter()
    result = fn(path, device)
    synchronize(device)
    seconds = time.perf_counter() - start
    del result
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"what": label, "file": str(path), "bytes": path.stat().st_size, "repeat": repeat,
            "seconds": round(seconds, 3), "device": str(device)}


def write_random(folder: Path, layers: int, dim: int, heads: int, device: torch.device) -> Path:
    """A fair-esm checkpoint of the given shape with random fp16 weights (the published 3B file holds fp16)."""
    import esm

    with torch.device(device):
        model = esm.model.esm2.ESM2(num_layers=layers, embed_dim=dim, attention_heads=heads,
                                    alphabet=esm.data.Alphabet.from_architecture("ESM-1b")).half()
    state = {("encoder." if k.startswith("lm_head.") else "encoder.sentence_encoder.") + k: v.cpu()
             for k, v in model.state_dict().items() if not k.startswith("contact_head.")}
    del model
    cfg = argparse.Namespace(encoder_layers=layers, encoder_embed_dim=dim, encoder_attention_heads=heads,
                             token_dropout=True)
    path = folder / f"esm2_t{layers}_random.pt"
    torch.save({"model": state, "cfg": {"model": cfg}}, path)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pt", type=Path, help="fair-esm ESM-2 checkpoint")
    parser.add_argument("--safetensors", type=Path, help="its converted form (default: convert into a temp dir)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--scratch", default=None, help="folder for the synthetic checkpoint (default: a temp dir)")
    parser.add_argument("--tiny", action="store_true", help="use a tiny synthetic checkpoint (dry run)")
    parser.add_argument("--random-3b", action="store_true", help="use a random-weight checkpoint of the 3B shape")
    args = parser.parse_args()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as scratch:
        pt = args.pt
        if args.tiny or args.random_3b:
            shape = (4, 128, 8) if args.tiny else (36, 2560, 40)
            pt = write_random(Path(args.scratch or scratch), *shape, device)
        if pt is None:
            parser.error("--pt, --tiny or --random-3b is required")
        converted = args.safetensors or convert_esm2(pt, Path(scratch) / pt.with_suffix(".safetensors").name)
        jobs = [("state .pt", load_pt_state, pt), ("state .safetensors", load_safetensors_state, converted)]
        try:
            import virnucpro.models.esm2  # noqa: F401
            jobs += [("model .pt", load_full_model, pt), ("model .safetensors", load_full_model, converted)]
        except ImportError:
            pass
        for repeat in range(args.repeats):
            for label, fn, path in jobs:
                print(json.dumps(timed(label, fn, path, device, repeat)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
