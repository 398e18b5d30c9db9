"""Byte-identical outputs on the GPU (issue 11.3) and every precision mode through the real CLI on CUDA (13.3).

The real `python -m virnucpro predict` on a CUDA device with small models in the real formats whose heads are
64 wide, as in ESM-2 and DNABERT-S, so the same kernels run as in production (varlen FlashAttention, cuBLAS,
the compiled elementwise regions, SDPA with ALiBi). Run twice, and once SIGKILLed mid-shard and resumed: every
output must equal the first run byte for byte (embeddings: every value bit for bit).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
FAULT_RUNNER = Path(__file__).resolve().parent / "fault_runner.py"
KNOBS = {"VIRNUCPRO_NO_PROGRESS": "1", "VIRNUCPRO_PART_FRAMES": "96", "VIRNUCPRO_BLOCK_FRAMES": "48"}
TEXT_OUTPUTS = ("prediction_results.txt", "prediction_results_highestscore.csv", "sequence_summary.tsv")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from virnucpro.bench.workloads import stop_free_reads
    from virnucpro.testing.classifier_checkpoint import write_tiny_classifier
    from virnucpro.testing.dnabert_checkpoint import write_tiny_dnabert
    from virnucpro.testing.esm2_checkpoint import write_tiny_esm2

    root = tmp_path_factory.mktemp("determinism")
    tokenizer = os.environ.get("VIRNUCPRO_DNABERT_TOKENIZER")
    models = [write_tiny_esm2(root / "esm2_t3_gpu.pt", layers=3, dim=256, heads=4, seed=3),
              write_tiny_dnabert(root / "dnabert-gpu", layers=2, hidden=256, heads=4, intermediate=512, seed=3,
                                 tokenizer_json=Path(tokenizer) / "tokenizer.json" if tokenizer else None),
              write_tiny_classifier(root / "500_model_gpu.pth", input_dim=512, hidden_dim=64, seed=3)]
    parts = []
    for length in (500, 150):
        stop_free_reads(root / f"reads{length}.fasta", 250, length=length, seed=length)
        parts.append((root / f"reads{length}.fasta").read_text().replace(">read_", f">r{length}_"))
    (root / "reads.fasta").write_text("".join(parts))
    return root, models


def predict(setup, rundir: Path, *extra: str, kill: str | None = None) -> subprocess.CompletedProcess:
    root, (esm, dnabert, classifier) = setup
    command = [sys.executable, str(FAULT_RUNNER), "--kill-at", kill, "--"] if kill else [sys.executable, "-m", "virnucpro"]
    argv = ["predict", str(root / "reads.fasta"), "-o", str(rundir), "--device", "cuda", "--save-embeddings",
            "--esm-model", str(esm), "--dnabert-model", str(dnabert), "--classifier", str(classifier), *extra]
    return subprocess.run(command + argv, env={**os.environ, **KNOBS}, capture_output=True, text=True, timeout=300)


def assert_identical(first: Path, second: Path) -> None:
    for name in TEXT_OUTPUTS:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    with h5py.File(first / "embeddings.h5") as a, h5py.File(second / "embeddings.h5") as b:
        for name in ("dnabert", "esm"):
            assert np.array_equal(a[name][:].view(np.uint32), b[name][:].view(np.uint32)), name


@pytest.mark.gpu
@requires_cuda
def test_reruns_and_a_killed_resumed_run_are_byte_identical(setup, tmp_path):
    first, second, killed = tmp_path / "first", tmp_path / "second", tmp_path / "killed"
    for rundir in (first, second):
        done = predict(setup, rundir)
        assert done.returncode == 0, done.stderr[-3000:]
    interrupted = predict(setup, killed, kill="part:3")
    assert interrupted.returncode == -9, interrupted.stderr[-3000:]
    resumed = predict(setup, killed)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_identical(first, second)
    assert_identical(first, killed)


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("mode", ["accurate", "fp32"])  # fp16 (the default) runs above; bf16 in the fidelity test
def test_other_precision_modes_predict_on_cuda(setup, tmp_path, mode):
    done = predict(setup, tmp_path / mode, "--precision", mode)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = (tmp_path / mode / "prediction_results.txt").read_text().splitlines()[1:]
    scores = np.array([[float(v) for v in line.split("\t")[2:]] for line in lines])
    assert len(lines) > 300 and np.isfinite(scores).all()
    np.testing.assert_allclose(scores.sum(1), 1.0, atol=1e-5)
