"""Synthetic inputs for the benchmark: random weights and sequences of the real shapes are enough for speed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

AMINO_ACIDS = np.frombuffer(b"ACDEFGHIKLMNPQRSTVWY", dtype=np.uint8)
BASES = np.frombuffer(b"ACGT", dtype=np.uint8)

# name -> (layers, dim, heads) of the released ESM-2 checkpoints
ESM_SHAPES = {"650M": (33, 1280, 20), "3B": (36, 2560, 40), "15B": (48, 5120, 40)}


@dataclass(frozen=True)
class Workload:
    name: str
    min_protein: int
    max_protein: int

    def proteins(self, count: int, seed: int = 0) -> list[str]:
        rng = np.random.default_rng(seed)
        lengths = rng.integers(self.min_protein, self.max_protein + 1, size=count)
        return [AMINO_ACIDS[rng.integers(0, 20, size=n)].tobytes().decode() for n in lengths]

    def nucleotides(self, count: int, seed: int = 0) -> list[str]:
        """The nucleotide slice DNABERT-S sees: 3 * protein length + 1 bases."""
        rng = np.random.default_rng(seed + 1)
        lengths = 3 * rng.integers(self.min_protein, self.max_protein + 1, size=count) + 1
        return [BASES[rng.integers(0, 4, size=n)].tobytes().decode() for n in lengths]


WORKLOADS = {
    # 500 bp chunks: every kept frame translates to 166 residues
    "chunks500": Workload("chunks500", 166, 166),
    # mixed 100-500 bp reads: 33 to 166 residues
    "mixed": Workload("mixed", 33, 166),
    # Illumina reads, one chunk each: 150 bp -> frames of 49-50 residues, 250 bp -> 82-83
    "reads150": Workload("reads150", 49, 50),
    "reads250": Workload("reads250", 82, 83),
}


def esm_flops_per_token(layers: int, dim: int, mean_len: float) -> float:
    """Forward FLOPs per token: 2 x (QKV + out + 2 FFN GEMMs = 12 d^2) + attention 4 L d, per layer."""
    return layers * (24 * dim * dim + 4 * mean_len * dim)


SENSE_CODONS = [a + b + c for a in "ACGT" for b in "ACGT" for c in "ACGT" if a + b + c not in ("TAA", "TAG", "TGA")]


def stop_free_reads(path: Path, reads: int, length: int = 500, seed: int = 0, duplicates: float = 0.0) -> None:
    """Reads whose first frame has no stop (random DNA almost never gives a 166-codon open frame); `duplicates`
    of them (after the first) are exact copies of an earlier read, under their own ids (de-duplication)."""
    rng = np.random.default_rng(seed)
    codons = np.array(SENSE_CODONS)
    written: list[str] = []
    with open(path, "w") as handle:
        for i in range(reads):
            if duplicates and written and rng.random() < duplicates:
                sequence = written[int(rng.integers(0, len(written)))]
            else:
                body = "".join(codons[rng.integers(0, len(codons), size=length // 3)])
                sequence = body + "".join(rng.choice(list("ACGT"), size=length - len(body)))
                written.append(sequence)
            handle.write(f">read_{i}\n{sequence}\n")
