"""prep/sequences.tsv: one row per input record, in input order, with what aggregation needs instead of the input."""

from __future__ import annotations

import logging
import random

import pytest
from Bio import SeqIO

from finished_run import write_fasta
from virnucpro.io.prep_files import SequenceInfo, format_sequence_rows, read_sequences
from virnucpro.prep.chunking import chunk_starts
from virnucpro.prep.pipeline import run_prep
from virnucpro.prep.sequence_table import chunked_bytes, decimal_digits_total


def test_rows_round_trip_any_header(tmp_path):
    rows = [SequenceInfo("a", 10, 1, 0), SequenceInfo("b|é", 900, 2, 19, True, "b|é tab\there back\\slash \\t"),
            SequenceInfo("c", 5, 0, 40, False, "c  two  spaces\r")]
    columns = zip(*((r.id, r.length, r.chunks, r.chunked_offset, r.kept, r.description) for r in rows))
    (tmp_path / "sequences.tsv").write_text("id\tlength\tchunks\tchunked_offset\tkept\tdescription\n"
                                            + format_sequence_rows(*map(list, columns)), encoding="utf-8")
    assert list(read_sequences(tmp_path)) == rows


@pytest.mark.parametrize("size", [300, 500])
def test_table_matches_the_input_and_points_into_chunked_fasta(tmp_path, size):
    rng = random.Random(size)
    records = [(f"s{i}_ü{'_chunk_3' if i % 5 == 0 else ''} desc {i}",
                "".join(rng.choice("ACGTacgtN") for _ in range(rng.choice([1, 2, 299, 300, 301, 500, 501, 4000,
                                                                             rng.randint(1, 12000)]))))
               for i in range(80)]
    input_path = write_fasta(tmp_path / "in.fasta", records)
    run_prep(input_path, tmp_path / "prep", size)
    chunked = (tmp_path / "prep" / "chunked.fasta").read_bytes()
    table = list(read_sequences(tmp_path / "prep"))
    originals = list(SeqIO.parse(input_path, "fasta"))
    assert [(t.id, t.header, t.length) for t in table] == [(r.id, r.description, len(r.seq)) for r in originals]
    for info in table:
        assert info.chunks == len(chunk_starts(info.length, size))
        assert chunked[info.chunked_offset:].startswith(f">{info.id}_chunk_1\n".encode())
    ends = [t.chunked_offset for t in table[1:]] + [len(chunked)]
    for info, end in zip(table, ends):
        assert end - info.chunked_offset == chunked_bytes([len(info.id.encode())], [info.length], size)[0]


def test_decimal_digits_total():
    counts = [0, 1, 9, 10, 11, 99, 100, 12345]
    assert decimal_digits_total(counts).tolist() == [sum(len(str(n)) for n in range(1, c + 1)) for c in counts]


def test_min_length_drops_and_short_inputs_warn(tmp_path, caplog):
    records = [(f"r{i}", "CG" * n) for i, n in enumerate([50, 60, 70, 200, 400])]
    input_path = write_fasta(tmp_path / "in.fasta", records)
    with caplog.at_level(logging.WARNING):
        stats = run_prep(input_path, tmp_path / "prep", 300, min_length=150)
    table = list(read_sequences(tmp_path / "prep"))
    assert [t.kept for t in table] == [False, False, False, True, True] and stats.dropped == 3
    assert [t.chunks for t in table] == [0, 0, 0, 2, 3]
    assert ">r0_chunk" not in (tmp_path / "prep" / "chunked.fasta").read_text()
    text = caplog.text
    assert "3 of 5 sequences are shorter than --min-length 150 bp" in text
    with caplog.at_level(logging.WARNING):
        caplog.clear()
        run_prep(input_path, tmp_path / "prep2", 500)
    assert "4 of 5 sequences are shorter than the chunk length (500 bp)" in caplog.text
    assert "the median sequence length is 140 bp (< 300 bp)" in caplog.text
