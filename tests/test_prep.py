"""Prep must equal the published tool byte for byte: golden files, and a per-codon oracle written from the
published rules (virnucpro.reference.published_prep, also scripts/bench_prep.py's speed baseline)."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from virnucpro.errors import InputError
from virnucpro.io.prep_files import Frame, FrameSource, build_index
from virnucpro.io.sequences import Record
from virnucpro.prep.chunking import chunk_id, chunk_layout, chunk_range_layout, chunk_starts
from virnucpro.prep.pipeline import iter_prepared, run_prep
from virnucpro.reference.published_prep import published_chunks, published_identify, published_prep, random_sequence

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = Path(__file__).resolve().parent / "data" / "golden" / "published"


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


def chunks_of(record_id: str, sequence: str, size: int) -> list[tuple[str, str]]:
    """(id, sequence) of each chunk as virnucpro cuts it (chunk_starts, chunk_id)."""
    starts = chunk_starts(len(sequence), size)
    return [(chunk_id(record_id, number), sequence[start : start + size]) for number, start in enumerate(starts, 1)]


@pytest.mark.parametrize("size", [300, 500])
def test_chunk_starts_follow_published_arithmetic(size):
    # Every position holds a distinct character, so equal chunks mean equal start offsets.
    sequence = "".join(chr(0x4E00 + i) for i in range(4 * size + 2))
    for length in range(0, 4 * size + 2):
        assert chunks_of("x", sequence[:length], size) == (published_chunks("x", sequence[:length], size) if length else [])
    assert chunk_starts(1000, 300) == [0, 249, 498, 747]  # extra > n-1: every boundary gets the upper overlap


def test_chunk_starts_of_long_sequences_follow_published_arithmetic():
    rng = random.Random(5)
    for size in (300, 500):
        for length in [rng.randint(2000, 200_000) for _ in range(40)] + [10**6, 10**6 + 1, 999_999]:
            sequence = "".join(chr(0x4E00 + i % 20000) for i in range(length))  # distinct within any chunk
            expected = published_chunks("x", sequence, size)
            assert chunks_of("x", sequence, size) == expected


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


def test_chunks_keep_case_and_ids():
    chunked, _, _ = fast_prep([("contig|49|pipe", "acgT" * 200)], 300)
    assert [line for line in chunked.splitlines() if line.startswith(">")] == \
        [">contig|49|pipe_chunk_1", ">contig|49|pipe_chunk_2", ">contig|49|pipe_chunk_3"]
    assert chunked == published_prep([("contig|49|pipe", "acgT" * 200)], 300)[0]


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


def test_prepared_frames_read_back_as_the_oracle_identifies_them(tmp_path):
    """FrameSource (what the engine reads) over run_prep's files gives the published frames, in order, any range."""
    rng = random.Random(13)
    records = [(f"r{i}", random_sequence(rng, rng.randint(1, 1500))) for i in range(40)]
    (tmp_path / "in.fasta").write_text("".join(f">{i}\n{s}\n" for i, s in records))
    run_prep(tmp_path / "in.fasta", tmp_path, 500)
    build_index(tmp_path)
    source = FrameSource(tmp_path)
    expected = [Frame(*kept) for record_id, sequence in records for chunk, piece in published_chunks(record_id, sequence, 500)
                for kept in published_identify(chunk, piece.upper())]
    assert len(source) == len(expected) > 20
    assert source.read(0, len(source)) == expected
    assert source.read(7, 19) == expected[7:19] and source.read(5, 5) == []
    assert source.aa_lengths.tolist() == [len(frame.protein) for frame in expected]


def test_frame_source_rejects_prepared_files_out_of_step(tmp_path):
    (tmp_path / "identified_nucleotide.fasta").write_text(">a\nACG\n>b\nACG\n")
    (tmp_path / "identified_protein.faa").write_text(">a\nT\n>c\nT\n")
    build_index(tmp_path)
    with pytest.raises(InputError, match="record 'b': prepared files out of step"):
        FrameSource(tmp_path).read(0, 2)
    (tmp_path / "identified_protein.faa").write_text(">a\nT\n")
    with pytest.raises(InputError, match="prepared files disagree: 2 nucleotide vs 1 protein"):
        build_index(tmp_path)


def test_chunk_length_must_be_published(tmp_path, golden_prep):
    with pytest.raises(ValueError, match="300 or 500"):
        run_prep(golden_prep / "input.fasta", tmp_path, 400)
    stats = run_prep(golden_prep / "input.fasta", tmp_path, 400, allow_any_length=True)
    assert stats.chunks > 0
