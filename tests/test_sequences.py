"""The streaming reader: formats, compression, line ends, and every bad input -> InputError naming file + record."""

from __future__ import annotations

import gzip
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from Bio import SeqIO

from virnucpro.errors import InputError
from virnucpro.io.sequences import Record, read_records
from virnucpro.prep.pipeline import run_prep

REPO = Path(__file__).resolve().parents[1]
FASTA = ">r1 first read\nACGTACGTAC\nGGTT\n>contig|49|pipe  desc with  spaces\nacgtNNRY\n>r3\nA\n"
EXPECTED = [
    Record("r1", "ACGTACGTACGGTT", "r1 first read"),
    Record("contig|49|pipe", "acgtNNRY", "contig|49|pipe  desc with  spaces"),
    Record("r3", "A", "r3"),
]


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def test_fasta_multiline_ids_like_biopython(tmp_path):
    path = write(tmp_path / "a.fasta", FASTA)
    records = list(read_records(path))
    assert records == EXPECTED
    assert [(r.id, str(r.seq), r.description) for r in SeqIO.parse(path, "fasta")] == [
        (r.id, r.seq, r.description) for r in records
    ]


def test_crlf_line_ends(tmp_path):
    path = write(tmp_path / "crlf.fa", FASTA.replace("\n", "\r\n"))
    assert list(read_records(path)) == EXPECTED


def test_old_mac_cr_only_line_ends(tmp_path):
    """Issue 15.5: a CR-only file was one line, every record read as empty, and predict exited 0 with no results."""
    text = FASTA.replace("\n", "\r")
    assert list(read_records(write(tmp_path / "cr.fa", text))) == EXPECTED
    assert list(read_records(write(tmp_path / "cr.fa.gz", gzip.compress(text.encode())))) == EXPECTED
    fastq = "@q1 desc\rACGTN\r+\rIIIII\r@q2\rggcc\r+\r!!!!\r"
    assert list(read_records(write(tmp_path / "cr.fq", fastq))) == [Record("q1", "ACGTN", "q1 desc"),
                                                                    Record("q2", "ggcc", "q2")]


def test_long_cr_only_record_spanning_read_blocks(tmp_path, monkeypatch):
    from virnucpro.io import sequences

    monkeypatch.setattr(sequences, "READ_BUFFER", 64)  # records and lines cross block boundaries
    text = "".join(f">r{i}\r{'ACGT' * 40}\r{'GGCC' * 7}\r" for i in range(5))
    records = list(read_records(write(tmp_path / "cr.fa", text)))
    assert [(r.id, r.seq) for r in records] == [(f"r{i}", "ACGT" * 40 + "GGCC" * 7) for i in range(5)]


@pytest.mark.parametrize("line_end", ["\n", "\r\n", "\r"])
def test_utf8_byte_order_mark_is_skipped(tmp_path, line_end):
    """Issue 15.9: a BOM-prefixed file was 'not FASTA or FASTQ'."""
    path = write(tmp_path / "bom.fa", b"\xef\xbb\xbf" + FASTA.replace("\n", line_end).encode())
    assert list(read_records(path)) == EXPECTED


def test_utf16_file_is_refused_naming_the_encoding(tmp_path):
    path = write(tmp_path / "u16.fa", FASTA.encode("utf-16"))
    with pytest.raises(InputError, match="u16.fa: UTF-16"):
        list(read_records(path))


def test_directory_as_input_says_so(tmp_path):
    """Issue 15.9: a directory given as input was 'input file not found'."""
    with pytest.raises(InputError, match="is a directory, not a FASTA/FASTQ file"):
        list(read_records(tmp_path))


def test_no_final_newline_and_blank_lines(tmp_path):
    path = write(tmp_path / "x.fa", "\n\n>a\nACG\n\nTT\n>b\nGG")
    assert [(r.id, r.seq) for r in read_records(path)] == [("a", "ACGTT"), ("b", "GG")]


def test_gzip_detected_by_magic_not_extension(tmp_path):
    path = write(tmp_path / "reads.txt", gzip.compress(FASTA.encode()))
    assert list(read_records(path)) == EXPECTED


def test_bgzip_like_multi_member_gzip(tmp_path):
    half = FASTA.index(">contig")
    members = gzip.compress(FASTA[:half].encode()) + gzip.compress(FASTA[half:].encode())
    path = write(tmp_path / "reads.fa.gz", members)
    assert list(read_records(path)) == EXPECTED


def test_fastq_plain_and_gzip(tmp_path):
    text = "@q1 desc\nACGTN\n+\nIIIII\n@q2\nggcc\n+q2\n!!!!\n"
    for path in (write(tmp_path / "r.fq", text), write(tmp_path / "r.fq.gz", gzip.compress(text.encode()))):
        assert list(read_records(path)) == [Record("q1", "ACGTN", "q1 desc"), Record("q2", "ggcc", "q2")]


def test_fastq_quality_starting_with_at_sign(tmp_path):
    path = write(tmp_path / "r.fq", "@q1\nACG\n+\n@@I\n@q2\nTTT\n+\nIII\n")
    assert [r.id for r in read_records(path)] == ["q1", "q2"]


def test_long_single_line_record(tmp_path):
    sequence = "ACGT" * 250_000  # 1 Mbp on one line
    path = write(tmp_path / "chrom.fa", f">chr1\n{sequence}\n")
    [record] = read_records(path)
    assert record.seq == sequence


def test_empty_record_skipped_with_warning(tmp_path, caplog):
    path = write(tmp_path / "e.fa", ">empty\n>full\nACGT\n")
    with caplog.at_level(logging.WARNING):
        assert [r.id for r in read_records(path)] == ["full"]
    assert "empty" in caplog.text


def test_lowercase_kept_and_warned(tmp_path, caplog):
    path = write(tmp_path / "l.fa", ">a\nacgtN\n")
    with caplog.at_level(logging.WARNING):
        assert [r.seq for r in read_records(path)] == ["acgtN"]
    assert "lowercase" in caplog.text


BAD_INPUTS = {
    "empty file": ("empty.fa", b"", None),
    "blank lines only": ("blank.fa", b"\n\n  \n", None),
    "not fasta": ("text.fa", b"hello world\nACGT\n", None),
    "empty id": ("noid.fa", b">ok\nACGT\n> \nACGT\n", None),
    "protein": ("prot.fa", b">ok\nACGT\n>prot1\nMEFILPQKW\n", "prot1"),
    "protein lowercase": ("prot2.fa", b">p2\nmefilpq\n", "p2"),
    "duplicate id": ("dup.fa", b">d1 x\nACGT\n>d1 y\nACGG\n", "d1"),
    "fastq quality length": ("q.fq", b"@q1\nACGT\n+\nIII\n", "q1"),
    "fastq truncated": ("t.fq", b"@q1\nACGT\n+\nIIII\n@q2\nACGT\n", "q2"),
    "fastq missing plus": ("p.fq", b"@q1\nACGT\nIIII\nIIII\n", "q1"),
    "truncated gzip": ("cut.fa.gz", gzip.compress(b">g1\n" + b"ACGT" * 5000 + b"\n")[:-30], None),
    "corrupt gzip": ("bad.fa.gz", b"\x1f\x8b\x08\x00garbagegarbagegarbage", None),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_raises_input_error_naming_file_and_record(tmp_path, case):
    name, content, record = BAD_INPUTS[case]
    path = write(tmp_path / name, content)
    with pytest.raises(InputError) as caught:
        list(read_records(path))
    message = str(caught.value)
    assert name in message and "\n" not in message
    if record is not None:
        assert f"'{record}'" in message


def test_missing_file_is_input_error(tmp_path):
    with pytest.raises(InputError, match="nope.fa"):
        list(read_records(tmp_path / "nope.fa"))


def test_run_prep_error_midway_leaves_no_output(tmp_path):
    # 2.4 Mbp of good reads (several prep batches already written to the temporary files) before the bad one
    reads = "".join(f">r{i}\n{'ACGT' * 200}\n" for i in range(3000))
    path = write(tmp_path / "in.fa", reads + ">bad\nMEFQ\n")
    out = tmp_path / "out"
    with pytest.raises(InputError, match="bad"):
        run_prep(path, out, 500)
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.parametrize("case", ["protein", "duplicate id", "truncated gzip"])
def test_cli_bad_input_one_line_error_no_outputs(tmp_path, case):
    name, content, record = BAD_INPUTS[case]
    path = write(tmp_path / name, content)
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "virnucpro", "prep", str(path), "-o", str(out)], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and name in errors[0], result.stderr
    assert not out.exists() or list(out.iterdir()) == []
