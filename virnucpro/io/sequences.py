"""Streaming FASTA/FASTQ reader: plain, gzip or bgzip (multi-member gzip), LF, CRLF or old-Mac CR-only line
ends, with or without a UTF-8 byte-order mark.

Memory holds one record's sequence (plus the set of ids seen so far), never the whole file: a 100 Mbp
single-line chromosome is read as one line. Per-line Python work is a few C-level bytes operations;
validation of a whole sequence is one `bytes.translate` call.
"""

from __future__ import annotations

import gzip
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

from virnucpro.errors import InputError

log = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"
READ_BUFFER = 1 << 20
UTF8_BOM = b"\xef\xbb\xbf"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")

# IUPAC nucleotide codes plus gap and stop symbols; anything else (E, F, I, L, P, Q, digits...) is rejected.
NUCLEOTIDE_ALPHABET = b"ACGTUNRYKMSWBDHV-*"
_LOWERCASE_ALPHABET = NUCLEOTIDE_ALPHABET.lower()
# Biopython strips line-end whitespace and spaces; dropping every whitespace byte is the same for real files.
_WHITESPACE = b" \t\r\n\v\f"
# A truncated or corrupt gzip stream surfaces as one of these while reading.
_GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


@dataclass(frozen=True, slots=True)
class Record:
    id: str
    seq: str
    description: str = ""


def read_records(path: str | Path) -> Iterator[Record]:
    """Yield the records of a FASTA or FASTQ file (format from the first non-blank byte, gzip from its magic).

    Empty records are skipped with a warning; lowercase is kept in `seq` (warned once per file).
    Raises InputError for anything that is not clean nucleotide FASTA/FASTQ.
    """
    path = Path(path)
    with _open_binary(path) as handle:
        try:
            yield from _checked_records(path, handle)
        except _GZIP_ERRORS as error:
            raise InputError(path, f"corrupt or truncated gzip data ({error})") from None


def check_sequence_file(path: str | Path) -> None:
    """Cheap early check (no record is parsed): the file opens, decompresses and starts like FASTA or FASTQ."""
    path = Path(path)
    with _open_binary(path) as handle:
        try:
            first = _first_content_line(enumerate(_lines(path, handle), start=1))
        except _GZIP_ERRORS as error:
            raise InputError(path, f"corrupt or truncated gzip data ({error})") from None
    _check_first_line(path, first)


def _check_first_line(path: Path, first: tuple[int, bytes] | None) -> None:
    if first is None:
        raise InputError(path, "empty file (no FASTA or FASTQ records)")
    number, line = first
    if not line.startswith((b">", b"@")):
        raise InputError(path, "not FASTA or FASTQ (first non-blank line starts with neither '>' nor '@')", line=number)


def _open_binary(path: Path) -> BinaryIO:
    if path.is_dir():
        raise InputError(path, "is a directory, not a FASTA/FASTQ file")
    try:
        with open(path, "rb") as probe:
            magic = probe.read(2)
        if magic == GZIP_MAGIC:
            # gzip.open reads every member, so bgzip files need nothing special.
            return gzip.open(path, "rb")
        return open(path, "rb", buffering=READ_BUFFER)
    except OSError as error:
        raise InputError(path, f"cannot open: {error.strerror or error}") from None


def _lines(path: Path, handle: BinaryIO) -> Iterator[bytes]:
    """The file's lines, LF-terminated whatever the line ends (LF, CRLF, CR only); a UTF-8 byte-order mark dropped.

    The line ends are decided from the first block: CR without any LF there means an old-Mac file. LF files are
    then read line by line in C (a 100 Mbp single-line record is one readline)."""
    first = handle.read(READ_BUFFER)
    if first.startswith(UTF16_BOMS):
        raise InputError(path, "UTF-16 text (byte-order mark); save it as plain ASCII or UTF-8 FASTA/FASTQ")
    if first.startswith(UTF8_BOM):
        first = first[len(UTF8_BOM):]
    if b"\r" in first and b"\n" not in first:
        yield from _cr_lines(first, handle)
        return
    *complete, partial = first.split(b"\n")
    for line in complete:
        yield line + b"\n"
    partial += handle.readline()  # the rest of the line the first block cut
    if partial:
        yield partial
    yield from handle


def _cr_lines(first: bytes, handle: BinaryIO) -> Iterator[bytes]:
    pieces: list[bytes] = []  # the current line so far (a long record spans many blocks)
    block = first
    while block:
        head, *rest = block.split(b"\r")
        pieces.append(head)
        if rest:
            yield b"".join(pieces) + b"\n"
            for line in rest[:-1]:
                yield line + b"\n"
            pieces = [rest[-1]]
        block = handle.read(READ_BUFFER)
    if any(pieces):
        yield b"".join(pieces)


def _checked_records(path: Path, handle: BinaryIO) -> Iterator[Record]:
    lines = enumerate(_lines(path, handle), start=1)
    first = _first_content_line(lines)
    _check_first_line(path, first)
    number, line = first
    if line.startswith(b">"):
        raw_records = _fasta(path, number, line, lines)
    else:
        raw_records = _fastq(path, number, line, lines)
    yield from _validated(path, raw_records)


def _first_content_line(lines: Iterator[tuple[int, bytes]]) -> tuple[int, bytes] | None:
    for number, line in lines:
        if line.strip():
            return number, line
    return None


def _fasta(path: Path, number: int, header: bytes, lines: Iterable[tuple[int, bytes]]):
    """Yield (header_line_number, header_bytes, sequence_bytes_with_whitespace) per FASTA record."""
    parts: list[bytes] = []
    for line_number, line in lines:
        if line.startswith(b">"):
            body, parts = b"".join(parts), []  # drop the lines before handing the body on (long records)
            yield number, header, body
            number, header = line_number, line
        else:
            parts.append(line)
    body, parts = b"".join(parts), []
    yield number, header, body


def _fastq(path: Path, number: int, header: bytes, lines: Iterator[tuple[int, bytes]]):
    """Yield (header_line_number, header_bytes, sequence_bytes) per 4-line FASTQ record."""
    while True:
        sequence = _next_fastq_line(path, header, number, lines, "sequence")
        plus = _next_fastq_line(path, header, number, lines, "'+' separator")
        if not plus[1].startswith(b"+"):
            raise InputError(path, "FASTQ separator line must start with '+'", record=_id_of(header), line=plus[0])
        quality = _next_fastq_line(path, header, number, lines, "quality")
        sequence_bytes = sequence[1].rstrip(b"\r\n")
        if len(quality[1].rstrip(b"\r\n")) != len(sequence_bytes):
            raise InputError(path, "FASTQ quality length differs from sequence length", record=_id_of(header), line=quality[0])
        yield number, header, sequence_bytes
        following = _first_content_line(lines)
        if following is None:
            return
        number, header = following
        if not header.startswith(b"@"):
            raise InputError(path, "FASTQ record header must start with '@'", line=number)


def _next_fastq_line(path: Path, header: bytes, number: int, lines, what: str) -> tuple[int, bytes]:
    following = next(lines, None)
    if following is None:
        raise InputError(path, f"truncated FASTQ record (missing {what} line)", record=_id_of(header), line=number)
    return following


def _id_of(header: bytes) -> str:
    words = header[1:].split(None, 1)
    return words[0].decode("utf-8", errors="replace") if words else ""


def _validated(path: Path, raw_records) -> Iterator[Record]:
    seen: set[str] = set()  # O(number of ids) memory: the only state that grows with the input
    lowercase_records = 0
    for number, header, body in raw_records:
        record_id, title = _parse_header(path, number, header)
        if record_id in seen:
            raise InputError(path, "duplicate record id", record=record_id, line=number)
        seen.add(record_id)
        sequence = body.translate(None, _WHITESPACE)
        del body  # a long record is then held twice at most (bytes, then str), not three times
        if not sequence:
            log.warning("%s:%d: record '%s' is empty; skipped (no chunks)", path, number, record_id)
            continue
        if _has_lowercase(path, record_id, number, sequence):
            if lowercase_records == 0:
                log.warning("%s:%d: record '%s' has lowercase bases; they are read as uppercase", path, number, record_id)
            lowercase_records += 1
        text = sequence.decode("ascii")
        del sequence
        yield Record(record_id, text, title)
    if lowercase_records > 1:
        log.warning("%s: %d records have lowercase bases", path, lowercase_records)


def _parse_header(path: Path, number: int, header: bytes) -> tuple[str, str]:
    """(id, whole title) of a '>' or '@' header line."""
    try:
        title = header[1:].decode("utf-8").strip()
    except UnicodeDecodeError:
        raise InputError(path, "header is not valid UTF-8", line=number) from None
    words = title.split(None, 1)
    if not words:
        raise InputError(path, "header has an empty id", line=number)
    return words[0], title


def _has_lowercase(path: Path, record_id: str, number: int, sequence: bytes) -> bool:
    """Whether the sequence has lowercase bases; InputError when it has anything but nucleotide codes."""
    not_upper = sequence.translate(None, NUCLEOTIDE_ALPHABET)  # usually empty: one C pass, nothing copied
    if not not_upper:
        return False
    foreign = not_upper.translate(None, _LOWERCASE_ALPHABET)
    if foreign:
        shown = "".join(sorted({chr(b) if 32 < b < 127 else f"\\x{b:02x}" for b in foreign[:1000]}))[:20]
        raise InputError(
            path,
            f"not a nucleotide sequence (characters outside IUPAC ACGTUNRYKMSWBDHV-*: {shown}); protein input?",
            record=record_id,
            line=number,
        )
    return True
