#!/usr/bin/env python3
"""Time loading ESM-2 weights onto the GPU: fair-esm .pt (pickle, weights_only, mmap) vs converted .safetensors.

    python scripts/time_model_load.py --pt ~/.cache/virnucpro/models/esm2/esm2_t36_3B_UR50D.pt
    python scripts/time_model_load.py --tiny          # dry run with a tiny synthetic checkpoint

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

from virnucpro.store.convert import convert_esm2, esm_state_dict, load_fair_esm_checkpoint  # noqa: E402


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_pt_state(path: Path, device: torch.device) -> dict:
    checkpoint = load_fair_esm_checkpoint(path)
    return {k: v.to(device) for k, v in esm_state_dict(checkpoint, path).items()}


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


def write_tiny(folder: Path) -> Path:
    import esm

    model = esm.model.esm2.ESM2(num_layers=4, embed_dim=128, attention_heads=8,
                                alphabet=esm.data.Alphabet.from_architecture("ESM-1b"))
    state = {("encoder." if k.startswith("lm_head.") else "encoder.sentence_encoder.") + k: v
             for k, v in model.state_dict().items() if not k.startswith("contact_head.")}
    cfg = argparse.Namespace(encoder_layers=4, encoder_embed_dim=128, encoder_attention_heads=8, token_dropout=True)
    path = folder / "esm2_t4_tiny.pt"
    torch.save({"model": state, "cfg": {"model": cfg}}, path)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pt", type=Path, help="fair-esm ESM-2 checkpoint")
    parser.add_argument("--safetensors", type=Path, help="its converted form (default: convert into a temp dir)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="use a tiny synthetic checkpoint (dry run)")
    args = parser.parse_args()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as scratch:
        pt = write_tiny(Path(scratch)) if args.tiny else args.pt
        if pt is None:
            parser.error("--pt or --tiny is required")
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
