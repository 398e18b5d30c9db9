"""The three published prep files, and random access to the prepared frames.

- chunked.fasta: `>id` then the sequence wrapped at FASTA_WIDTH columns (Biopython's FASTA writer).
- identified_nucleotide.fasta / identified_protein.faa: `>id` and the whole sequence on one line, same ids in
  the same order in both files (one record per kept frame).

`prep` writes them; everything downstream reads frames through `FrameSource`: an index of byte offsets and lengths
(`frames.index/`, memory-mapped arrays, see io.mapped) lets shards and DataLoader workers read any range
[start, stop) without scanning, and neither building nor reading it holds per-frame Python objects, so host memory
does not grow with the input. A `FrameSource` may also read a selection of the frames (e.g. the distinct ones of
a de-duplicated run): frame k of the view is prepared frame `frames[k]` of the selection folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from virnucpro.errors import InputError, RunStateError
from virnucpro.io.atomic import atomic_write
from virnucpro.io.mapped import ArrayFolderWriter, MappedArrays, is_complete

CHUNKED = "chunked.fasta"
IDENTIFIED_NUCLEOTIDE = "identified_nucleotide.fasta"
IDENTIFIED_PROTEIN = "identified_protein.faa"
INDEX_DIR = "frames.index"  # folder of memory-mapped arrays (io.mapped)
LEGACY_INDEX = "frames.index.npz"  # run directories planned before the memory-mapped index
DEDUP_UNIQUE = "dedup.unique"  # folder: the distinct frames (run.dedup)
DEDUP_MAP = "dedup.map"  # folder: each frame's distinct frame (run.dedup)
INDEX_ARRAYS = {"nt_offsets": "int64", "nt_lengths": "int32", "aa_offsets": "int64", "aa_lengths": "int32"}
SCAN_BYTES = 1 << 24  # bytes of a prepared file examined per numpy step while indexing
MAX_GAP = 8  # a selection read takes up to this many unwanted frames between two wanted ones in one read
FASTA_WIDTH = 60  # chunked.fasta line length (Biopython's FASTA writer)


@dataclass(frozen=True, slots=True)
class Frame:
    """One kept frame: `<chunk id>F1..F3/R1..R3`, its nucleotides and its protein."""

    id: str
    nucleotide: str
    protein: str


def _record_blocks(path: Path):
    """(file offset, bytes) of consecutive whole records (header and sequence line), about SCAN_BYTES each; the
    unfinished record at the end of a read is carried into the next block. A last line may lack its newline."""
    carry, offset = b"", 0
    with open(path, "rb") as handle:
        while chunk := handle.read(SCAN_BYTES):
            block = np.frombuffer(carry + chunk, dtype=np.uint8)
            newlines = np.flatnonzero(block == ord("\n"))
            whole = len(newlines) // 2 * 2
            cut = int(newlines[whole - 1]) + 1 if whole else 0
            if cut:
                yield offset, block[:cut]
            carry, offset = block[cut:].tobytes(), offset + cut
    if carry:
        yield offset, np.frombuffer(carry if carry.endswith(b"\n") else carry + b"\n", dtype=np.uint8)


def _scan(path: Path):
    """Byte offset of each record's header and length of its sequence line, block by block (vectorised)."""
    records = 0
    for offset, block in _record_blocks(path):
        newlines = np.flatnonzero(block == ord("\n"))
        starts = np.concatenate(([0], newlines[:-1] + 1))
        headers, sequences, ends = starts[0::2], starts[1::2], newlines[1::2]
        bad = np.flatnonzero(block[headers] != ord(">"))
        if len(bad) or len(sequences) < len(headers):
            first_bad = int(bad[0]) if len(bad) else len(sequences)
            raise InputError(path, "malformed prepared file (expected '>id' then one sequence line)",
                             line=2 * (records + first_bad) + 1)
        carriage = (ends > sequences) & (block[np.maximum(ends - 1, 0)] == ord("\r"))
        yield headers.astype(np.int64) + offset, (ends - sequences - carriage).astype(np.int32)
        records += len(headers)


def build_index(prep_dir: Path) -> Path:
    """Index both identified files once, streaming; returns the index folder (published atomically)."""
    prep_dir = Path(prep_dir)
    counts = {}
    with ArrayFolderWriter(prep_dir / INDEX_DIR, INDEX_ARRAYS) as writer:
        for kind, name in (("nt", IDENTIFIED_NUCLEOTIDE), ("aa", IDENTIFIED_PROTEIN)):
            counts[kind] = 0
            for offsets, lengths in _scan(prep_dir / name):
                writer.append(**{f"{kind}_offsets": offsets, f"{kind}_lengths": lengths})
                counts[kind] += len(offsets)
        if counts["nt"] != counts["aa"]:
            raise InputError(prep_dir, f"prepared files disagree: {counts['nt']} nucleotide vs {counts['aa']} protein frames")
        sizes = {name: (prep_dir / name).stat().st_size for name in (IDENTIFIED_NUCLEOTIDE, IDENTIFIED_PROTEIN)}
        return writer.commit({"file_sizes": sizes})


def has_index(prep_dir: Path) -> bool:
    return is_complete(Path(prep_dir) / INDEX_DIR)


def _open_index(prep_dir: Path) -> dict:
    if not has_index(prep_dir) and (prep_dir / LEGACY_INDEX).exists():
        with np.load(prep_dir / LEGACY_INDEX) as legacy:
            return {name: legacy[name] for name in INDEX_ARRAYS}
    try:
        index = MappedArrays(prep_dir / INDEX_DIR)
    except FileNotFoundError:
        raise InputError(prep_dir, "prepared frames are not indexed (no complete frames.index)") from None
    return {name: index[name] for name in INDEX_ARRAYS}


class FrameSource:
    """Reads frames [start, stop) of an indexed prepared directory, or of a selection of its frames.

    `selection`: a folder (io.mapped) with arrays `frames` (prepared frame of each view frame, increasing) and
    `aa_lengths` (their residues). Picklable as its paths: workers reopen the files and the maps."""

    def __init__(self, prep_dir: str | Path, selection: str | Path | None = None):
        self.prep_dir = Path(prep_dir)
        self.selection_dir = None if selection is None else Path(selection)
        index = _open_index(self.prep_dir)
        self.nt_offsets, self.nt_lengths = index["nt_offsets"], index["nt_lengths"]
        self.aa_offsets, self._aa_lengths = index["aa_offsets"], index["aa_lengths"]
        self.selection = None if selection is None else MappedArrays(selection)

    def __getstate__(self) -> dict:
        return {"prep_dir": self.prep_dir, "selection": self.selection_dir}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["prep_dir"], state["selection"])

    def __len__(self) -> int:
        return len(self.selection) if self.selection is not None else len(self.nt_offsets)

    @property
    def prepared_frames(self) -> int:
        """Frames in the prepared files (all of them, also for a selection)."""
        return len(self.nt_offsets)

    @property
    def aa_lengths(self) -> np.ndarray:
        """Residues of each frame of this source (of the view's frames for a selection)."""
        return self.selection["aa_lengths"] if self.selection is not None else self._aa_lengths

    def _read_lines(self, name: str, offsets: np.ndarray, start: int, stop: int) -> list[bytes]:
        if start >= stop:
            return []
        end = offsets[stop] if stop < len(offsets) else None
        with open(self.prep_dir / name, "rb") as handle:
            handle.seek(int(offsets[start]))
            blob = handle.read(-1 if end is None else int(end - offsets[start]))
        return blob.splitlines()

    def _read_prepared(self, start: int, stop: int) -> list[Frame]:
        nt = self._read_lines(IDENTIFIED_NUCLEOTIDE, self.nt_offsets, start, stop)
        aa = self._read_lines(IDENTIFIED_PROTEIN, self.aa_offsets, start, stop)
        frames = []
        for i in range(0, len(nt), 2):
            frame_id = nt[i][1:].decode()
            if aa[i][1:].decode() != frame_id:
                raise InputError(self.prep_dir, "prepared files out of step", record=frame_id)
            frames.append(Frame(frame_id, nt[i + 1].decode(), aa[i + 1].decode()))
        return frames

    def texts(self, start: int, stop: int) -> tuple[list[bytes], list[bytes]]:
        """Nucleotide and protein lines of prepared frames [start, stop), as bytes (no ids, no decoding)."""
        nt = self._read_lines(IDENTIFIED_NUCLEOTIDE, self.nt_offsets, start, stop)
        aa = self._read_lines(IDENTIFIED_PROTEIN, self.aa_offsets, start, stop)
        return nt[1::2], aa[1::2]

    def read(self, start: int, stop: int) -> list[Frame]:
        return self._view(start, stop, self._read_prepared)

    def header_lines(self, start: int, stop: int) -> list[bytes]:
        """Header lines (`>id`, bytes) of this source's frames [start, stop), from the protein file only."""
        return self._view(start, stop, lambda a, b: self._read_lines(IDENTIFIED_PROTEIN, self.aa_offsets, a, b)[0::2])

    def _view(self, start: int, stop: int, read_prepared) -> list:
        """`read_prepared(a, b)` (a list per prepared frame) for the frames [start, stop) of this source."""
        if self.selection is None:
            return read_prepared(start, stop)
        wanted = np.asarray(self.selection["frames"][start:stop], dtype=np.int64)
        items: list = []
        # consecutive runs of nearby prepared frames: one read each, unwanted frames in between dropped
        breaks = np.flatnonzero(np.diff(wanted) > MAX_GAP) + 1
        for run in np.split(wanted, breaks) if len(wanted) else []:
            first = int(run[0])
            chunk = read_prepared(first, int(run[-1]) + 1)
            items.extend(chunk[int(k) - first] for k in run)
        return items

    def ids(self, start: int, stop: int) -> list[str]:
        """Ids of prepared frames [start, stop) (of the prepared files, also for a selection), headers only."""
        lines = self._read_lines(IDENTIFIED_PROTEIN, self.aa_offsets, start, stop)
        return [line[1:].decode() for line in lines[0::2]]

# ------------------------------------------------------------------ the per-sequence table (prep/sequences.tsv)
# One row per input record, in input order, written by prep beside the three published files: what aggregation
# and viral_sequences.fasta need without reading the input again. `chunked_offset` is the byte offset of the
# record's first chunk in chunked.fasta; `kept` is 0 for a record dropped by --min-length (it has no chunks);
# `description` is the whole header line (tabs, CR, LF and backslashes escaped).

SEQUENCES = "sequences.tsv"
SEQUENCES_HEADER = "id\tlength\tchunks\tchunked_offset\tkept\tdescription"
_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\r": "\\r", "\n": "\\n"}
_UNESCAPES = {value[1]: key for key, value in _ESCAPES.items()}


@dataclass(slots=True)
class SequenceInfo:
    id: str
    length: int
    chunks: int
    chunked_offset: int
    kept: bool = True
    description: str = ""

    @property
    def header(self) -> str:
        """The original header line without its '>' (or '@')."""
        return self.description or self.id


def format_sequence_rows(ids: list[str], lengths: list[int], chunks: list[int], offsets: list[int],
                         kept: list[bool], descriptions: list[str]) -> str:
    """Rows of sequences.tsv."""
    if any(char in "".join(descriptions) for char in _ESCAPES):
        descriptions = ["".join(_ESCAPES.get(char, char) for char in text) for text in descriptions]
    return "".join(map("{}\t{}\t{}\t{}\t{:d}\t{}\n".format, ids, lengths, chunks, offsets, kept, descriptions))


def _unescape(text: str) -> str:
    out, chars = [], iter(text)
    for char in chars:
        out.append(_UNESCAPES.get(next(chars, ""), "\\") if char == "\\" else char)
    return "".join(out)


def read_sequences(prep_dir: str | Path) -> Iterator[SequenceInfo]:
    """The rows of prep/sequences.tsv in input order, streamed."""
    path = Path(prep_dir) / SEQUENCES
    try:
        handle = open(path, encoding="utf-8", newline="\n")
    except FileNotFoundError:
        raise RunStateError(f"{path}: missing (prepared by an older virnucpro); rerun with --force-restart") from None
    with handle:
        if handle.readline().rstrip("\n") != SEQUENCES_HEADER:
            raise InputError(path, f"header is not {SEQUENCES_HEADER!r}", line=1)
        for number, line in enumerate(handle, start=2):
            yield _sequence_row(path, number, line)


def _sequence_row(path: Path, number: int, line: str) -> SequenceInfo:
    fields = line.rstrip("\n").split("\t")
    if len(fields) != 6:
        raise InputError(path, f"expected 6 tab-separated fields, got {len(fields)}", line=number)
    try:
        description = _unescape(fields[5]) if "\\" in fields[5] else fields[5]
        return SequenceInfo(fields[0], int(fields[1]), int(fields[2]), int(fields[3]), fields[4] == "1", description)
    except ValueError:
        raise InputError(path, "malformed row", record=fields[0], line=number) from None
