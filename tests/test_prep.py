"""Prep must equal the published tool byte for byte: golden files, and a per-codon oracle written from the
published rules (`published_prep` below, also used by scripts/bench_prep.py as the speed baseline)."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from virnucpro.io.prep_files import read_identified, write_identified
from virnucpro.io.sequences import Record
from virnucpro.prep.chunking import chunk_layout, chunk_range_layout, chunk_record, chunk_starts
from virnucpro.prep.frames import Frame, identify_frames, identify_frames_batch
from virnucpro.prep.pipeline import iter_prepared, run_prep

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = Path(__file__).resolve().parent / "data" / "golden" / "published"

# ---------------------------------------------------------------------------------------------------------------
# Oracle: the published per-codon implementation (units.py split_fasta_chunk / translate_dna / identify_seq),
# on plain strings instead of Biopython records.

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


# ---------------------------------------------------------------------------------------------------------------


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


def fast_prep(records: list[tuple[str, str]], chunk_size: int, **batching) -> tuple[str, str, str]:
    """virnucpro's text of the three files for (id, sequence) records, in memory."""
    batches = list(iter_prepared([Record(i, s, i) for i, s in records], chunk_size, **batching))
    return tuple(
        b"".join(getattr(batch, part).tobytes() for batch in batches).decode("utf-8")
        for part in ("chunked", "nucleotides", "proteins")
    )


def read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


@pytest.mark.parametrize("size", [300, 500])
def test_run_prep_matches_published_golden_files(golden_prep, tmp_path, size):
    stats = run_prep(golden_prep / "input.fasta", tmp_path, size)
    assert read_text(tmp_path / "chunked.fasta") == read_text(golden_prep / f"chunked{size}.fasta")
    assert read_text(tmp_path / "identified_nucleotide.fasta") == read_text(golden_prep / f"identified_nucleotide{size}.fasta")
    assert read_text(tmp_path / "identified_protein.faa") == read_text(golden_prep / f"identified_protein{size}.faa")
    assert stats.chunks == read_text(golden_prep / f"chunked{size}.fasta").count(">")
    assert stats.frames == read_text(golden_prep / f"identified_protein{size}.faa").count(">")


@pytest.mark.parametrize("size", [300, 500])
def test_cli_matches_published_golden_files(golden_prep, tmp_path, size):
    result = subprocess.run(
        [sys.executable, "-m", "virnucpro", "prep", str(golden_prep / "input.fasta"), "-o", str(tmp_path), "--chunk-length", str(size)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "virnucpro prep:" in result.stderr
    for name, golden in [
        ("chunked.fasta", f"chunked{size}.fasta"),
        ("identified_nucleotide.fasta", f"identified_nucleotide{size}.fasta"),
        ("identified_protein.faa", f"identified_protein{size}.faa"),
    ]:
        assert (tmp_path / name).read_bytes() == (golden_prep / golden).read_bytes(), name


@pytest.mark.parametrize("name", ["test_with_orfs", "test_fixed_500bp"])
def test_matches_published_tool_outputs(tmp_path, name):
    run_prep(PUBLISHED / f"{name}.fa", tmp_path, 500)
    assert read_text(tmp_path / "chunked.fasta") == read_text(PUBLISHED / f"{name}_chunked500.fa")
    assert read_text(tmp_path / "identified_nucleotide.fasta") == read_text(PUBLISHED / f"{name}_identified_nucleotide.fa")
    assert read_text(tmp_path / "identified_protein.faa") == read_text(PUBLISHED / f"{name}_identified_protein.faa")


def test_oracle_reproduces_golden_files(golden_prep):
    """The oracle itself is checked against the published tool's files, so the random comparisons mean something."""
    from virnucpro.io.sequences import read_records

    records = [(r.id, r.seq) for r in read_records(golden_prep / "input.fasta")]
    chunked, nucleotides, proteins = published_prep(records, 300)
    assert chunked == read_text(golden_prep / "chunked300.fasta")
    assert nucleotides == read_text(golden_prep / "identified_nucleotide300.fasta")
    assert proteins == read_text(golden_prep / "identified_protein300.faa")


@pytest.mark.parametrize("size", [300, 500])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fast_prep_equals_published_oracle_on_random_inputs(size, seed):
    rng = random.Random(seed * 1000 + size)
    records = [(f"r{i}", random_sequence(rng, rng.randint(0, 1600))) for i in range(150)]
    assert fast_prep(records, size) == published_prep(records, size)


EDGE_LENGTHS = [0, 1, 2, 3, 4, 5, 6, 299, 300, 301, 499, 500, 501, 599, 600, 601, 899, 1000, 1001, 1499, 2000, 2999]


@pytest.mark.parametrize("size", [300, 500])
def test_edge_lengths_equal_oracle(size):
    rng = random.Random(size)
    records = []
    for length in EDGE_LENGTHS:
        records.append((f"plain{length}", random_sequence(rng, length)))
        records.append((f"lower{length}", random_sequence(rng, length).lower()))
        records.append((f"ambig{length}", "".join(rng.choice("ACGTNRY") for _ in range(length))))
        records.append((f"orf{length}", ("ATG" + "GCT" * length)[:length]))
    assert fast_prep(records, size) == published_prep(records, size)


@pytest.mark.parametrize("size", [300, 500])
def test_small_batches_equal_one_batch(size):
    """The streaming pipeline cuts long contigs across batches; the result must not depend on where."""
    rng = random.Random(7)
    records = [(f"c{i}", random_sequence(rng, rng.randint(1, 5000))) for i in range(20)]
    whole = fast_prep(records, size)
    assert whole == published_prep(records, size)
    for batch_bases in (1, 700, 2000):
        assert fast_prep(records, size, batch_bases=batch_bases) == whole


@pytest.mark.parametrize("size", [300, 500])
def test_chunk_starts_follow_published_arithmetic(size):
    # Every position holds a distinct character, so equal chunks mean equal start offsets.
    sequence = "".join(chr(0x4E00 + i) for i in range(4 * size + 2))
    for length in range(0, 4 * size + 2):
        record = Record("x", sequence[:length], "")
        assert [(c.id, c.seq) for c in chunk_record(record, size)] == (published_chunks("x", record.seq, size) if length else [])
    assert chunk_starts(1000, 300) == [0, 249, 498, 747]  # extra > n-1: every boundary gets the upper overlap


def test_chunk_starts_of_long_sequences_follow_published_arithmetic():
    rng = random.Random(5)
    for size in (300, 500):
        for length in [rng.randint(2000, 200_000) for _ in range(40)] + [10**6, 10**6 + 1, 999_999]:
            sequence = "".join(chr(0x4E00 + i % 20000) for i in range(length))  # distinct within any chunk
            expected = published_chunks("x", sequence, size)
            assert [(c.id, c.seq) for c in chunk_record(Record("x", sequence, ""), size)] == expected


@pytest.mark.parametrize("size", [300, 500])
def test_vectorised_chunk_layout_equals_chunk_starts(size):
    rng = random.Random(size)
    lengths = list(range(0, 4 * size + 2)) + [rng.randint(2000, 10**6) for _ in range(200)] + [10**6, 10**6 + 1]
    layout = chunk_layout(lengths, size)
    expected = [
        (n, k, start, min(size, length - start))
        for n, length in enumerate(lengths)
        for k, start in enumerate(chunk_starts(length, size), start=1)
    ]
    got = zip(layout.sequence.tolist(), layout.number.tolist(), layout.start.tolist(), layout.length.tolist())
    assert list(got) == expected
    for length in (10**6 + 1, 12345):
        starts = chunk_starts(length, size)
        piece = chunk_range_layout(length, size, 5, 17)
        assert piece.start.tolist() == starts[5:17] and piece.number.tolist() == list(range(6, 18))


def test_chunk_record_keeps_case_and_ids():
    chunks = chunk_record(Record("contig|49|pipe", "acgT" * 200, ""), 300)
    assert [c.id for c in chunks] == ["contig|49|pipe_chunk_1", "contig|49|pipe_chunk_2", "contig|49|pipe_chunk_3"]
    assert [(c.id, c.seq) for c in chunks] == published_chunks("contig|49|pipe", "acgT" * 200, 300)


def test_identify_frames_single_chunk_equals_oracle_and_batch():
    rng = random.Random(11)
    chunks = [Record(f"k{i}", random_sequence(rng, rng.randint(0, 700))) for i in range(60)]
    batch = identify_frames_batch(chunks)
    for chunk, frames in zip(chunks, batch):
        assert identify_frames(chunk) == frames
        expected = [Frame(*item) for item in published_identify(chunk.id, chunk.seq.upper())]
        assert frames == expected


def test_single_chunks_equal_oracle():
    """Chunks one at a time (each its own batch) and all together give the oracle's frames."""
    rng = random.Random(11)
    records = [(f"k{i}", random_sequence(rng, rng.randint(0, 700))) for i in range(60)]
    assert fast_prep(records, 700) == published_prep(records, 700)
    assert fast_prep(records, 700, batch_bases=1) == published_prep(records, 700)


def test_ids_with_non_ascii_and_long_numbers():
    """Ids of different byte lengths and chunk numbers of 1 to 3 digits side by side in one batch."""
    records = [("séq|é", "ATG" * 400), ("x" * 90, "ACGT" * 10000), ("ü", "atgaaa"), ("n", "N" * 7)]
    for size in (300, 500):
        assert fast_prep(records, size) == published_prep(records, size)
        assert fast_prep(records, size, batch_bases=500) == published_prep(records, size)


def test_shortest_chunks_equal_oracle():
    """Chunks of 1..11 bases: frames with no or one codon, nucleotides clipped at the chunk end."""
    records = [(f"s{n}", ("ATGGCT" * 200)[:n]) for n in range(1, 12)] + [(f"l{n}", ("atggct" * 200)[:n]) for n in range(1, 12)]
    for size in (300, 500):
        assert fast_prep(records, size) == published_prep(records, size)


def test_identified_files_round_trip(tmp_path):
    frames = [Frame("a_chunk_1F1", "ACGTA", "T"), Frame("a_chunk_1R2", "GGGCC", "G")]
    with open(tmp_path / "n.fa", "w") as nt, open(tmp_path / "p.faa", "w") as aa:
        write_identified(nt, aa, frames)
    assert list(read_identified(tmp_path / "n.fa", tmp_path / "p.faa")) == frames


def test_read_identified_rejects_disagreeing_ids(tmp_path):
    from virnucpro.errors import InputError

    (tmp_path / "n.fa").write_text(">a\nACG\n>b\nACG\n")
    (tmp_path / "p.faa").write_text(">a\nT\n>c\nT\n")
    with pytest.raises(InputError, match="'c'"):
        list(read_identified(tmp_path / "n.fa", tmp_path / "p.faa"))
    (tmp_path / "p.faa").write_text(">a\nT\n")
    with pytest.raises(InputError, match="more records"):
        list(read_identified(tmp_path / "n.fa", tmp_path / "p.faa"))


def test_chunk_length_must_be_published(tmp_path, golden_prep):
    with pytest.raises(ValueError, match="300 or 500"):
        run_prep(golden_prep / "input.fasta", tmp_path, 400)
    stats = run_prep(golden_prep / "input.fasta", tmp_path, 400, allow_any_length=True)
    assert stats.chunks > 0
