"""The published prep, per codon (VirNucPro units.py `split_fasta_chunk` / `translate_dna` / `identify_seq`), on
plain strings instead of Biopython records: the oracle of tests/test_prep.py and the baseline of
scripts/bench_prep.py. Slow on purpose. Also `random_sequence`, inputs that exercise the published rules' corners.
"""

from __future__ import annotations

import random

PUBLISHED_CODON_TABLE = {
    "TCA": "S", "TCC": "S", "TCG": "S", "TCT": "S", "TTC": "F", "TTT": "F", "TTA": "L", "TTG": "L",
    "TAC": "Y", "TAT": "Y", "TAA": "*", "TAG": "*", "TGC": "C", "TGT": "C", "TGA": "*", "TGG": "W",
    "CTA": "L", "CTC": "L", "CTG": "L", "CTT": "L", "CCA": "P", "CCC": "P", "CCG": "P", "CCT": "P",
    "CAC": "H", "CAT": "H", "CAA": "Q", "CAG": "Q", "CGA": "R", "CGC": "R", "CGG": "R", "CGT": "R",
    "ATA": "I", "ATC": "I", "ATT": "I", "ATG": "M", "ACA": "T", "ACC": "T", "ACG": "T", "ACT": "T",
    "AAC": "N", "AAT": "N", "AAA": "K", "AAG": "K", "AGC": "S", "AGT": "S", "AGA": "R", "AGG": "R",
    "GTA": "V", "GTC": "V", "GTG": "V", "GTT": "V", "GCA": "A", "GCC": "A", "GCG": "A", "GCT": "A",
    "GAC": "D", "GAT": "D", "GAA": "E", "GAG": "E", "GGA": "G", "GGC": "G", "GGG": "G", "GGT": "G",
}  # fmt: skip


def published_chunks(record_id: str, sequence: str, chunk_size: int) -> list[tuple[str, str]]:
    seq_length = len(sequence)
    num_chunks = -(-seq_length // chunk_size)
    total_chunk_length = num_chunks * chunk_size
    repeat_length = total_chunk_length - seq_length
    repeat_region = repeat_length / num_chunks
    lower_int = int(repeat_region)
    upper_int = lower_int + 1
    low_up_numbers = [lower_int] * (num_chunks - 1)
    need_to_add_up_nums = repeat_length - sum(low_up_numbers)
    final_low_up_numbers = (
        [upper_int] * need_to_add_up_nums + [lower_int] * (num_chunks - 1 - need_to_add_up_nums) + [0]
    )
    chunks, move_step = [], 0
    for a, b in zip(range(0, seq_length, chunk_size), final_low_up_numbers):
        chunk = sequence[a - move_step : a - move_step + chunk_size] if a > 1 else sequence[a : a + chunk_size]
        chunks.append((f"{record_id}_chunk_{a // chunk_size + 1}", chunk))
        move_step += b
    return chunks


def published_reverse_complement(sequence: str) -> str:
    return sequence.translate(str.maketrans("ACGTacgt", "TGCAtgca"))[::-1]


def published_translate(sequence: str) -> list[str]:
    def frame(seq, start):
        return "".join(PUBLISHED_CODON_TABLE.get(seq[i : i + 3], "") for i in range(start, len(seq) - 2, 3))

    reverse = published_reverse_complement(sequence)
    return [frame(sequence, f) for f in range(3)] + [frame(reverse, f) for f in range(3)]


def published_identify(seqid: str, sequence: str) -> list[tuple[str, str, str]]:
    kept = []
    for num, protein in enumerate(published_translate(sequence), start=1):
        if "*" in protein or protein == "":  # prediction.py drops empty proteins when writing
            continue
        seq_len = len(protein) * 3
        if num <= 3:
            kept.append((seqid + "F" + str(num), sequence[num - 1 : num + seq_len], protein))
        else:
            kept.append((seqid + "R" + str(num - 3), published_reverse_complement(sequence)[num - 3 - 1 : num - 3 + seq_len], protein))
    return kept


def published_prep(records: list[tuple[str, str]], chunk_size: int) -> tuple[str, str, str]:
    """The three published files' text for (id, sequence) records (empty records have no chunks)."""
    chunked, nucleotides, proteins = [], [], []
    for record_id, sequence in records:
        if not sequence:
            continue
        for chunk_id, chunk in published_chunks(record_id, sequence, chunk_size):
            chunked.append(f">{chunk_id}\n" + "".join(chunk[i : i + 60] + "\n" for i in range(0, len(chunk), 60)))
            for frame_id, nucleotide, protein in published_identify(chunk_id, chunk.upper()):
                nucleotides.append(f">{frame_id}\n{nucleotide}\n")
                proteins.append(f">{frame_id}\n{protein}\n")
    return "".join(chunked), "".join(nucleotides), "".join(proteins)


def random_sequence(rng: random.Random, length: int) -> str:
    """Mostly ACGT with lowercase runs, ambiguity codes and occasional stop-free stretches (so frames are kept)."""
    bases = rng.choices("ACGT", k=length)
    if rng.random() < 0.5:  # a stop-free reading frame somewhere
        sense = [c for c, aa in PUBLISHED_CODON_TABLE.items() if aa != "*"]
        orf = "".join(rng.choices(sense, k=length // 3 + 1))
        offset = rng.randrange(3)
        bases[offset:] = list(orf[: length - offset])
        if rng.random() < 0.5:
            bases = list(published_reverse_complement("".join(bases)))
    for _ in range(rng.choice([0, 0, 1, 3, 10])):
        if bases:
            bases[rng.randrange(len(bases))] = rng.choice("NRYKMSWBDHVN-")
    text = "".join(bases)
    if rng.random() < 0.3 and text:
        a, b = sorted(rng.sample(range(len(text) + 1), 2))
        text = text[:a] + text[a:b].lower() + text[b:]
    return text
