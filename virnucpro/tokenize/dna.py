"""DNABERT-S tokenizer read straight from the model folder's tokenizer.json.

The `tokenizers` library (Rust) applies the file's own BPE model and its TemplateProcessing post-processor
("[CLS] $A [SEP]"), which is exactly what transformers' PreTrainedTokenizerFast does for `tokenizer(seq)`;
no hub code and no transformers import are needed at run time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np
from tokenizers import Tokenizer

from virnucpro.errors import ModelError

TOKENIZER_FILE = "tokenizer.json"


class DnaTokenizer:
    """Batch BPE encoder: DNA strings -> int64 token ids with [CLS] ... [SEP]."""

    def __init__(self, folder: str | os.PathLike):
        path = Path(folder) / TOKENIZER_FILE
        if not path.is_file():
            raise ModelError(path, "DNABERT-S tokenizer file not found")
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as error:  # the Rust library raises a bare Exception on malformed JSON
            raise ModelError(path, f"unreadable tokenizer: {error}") from error
        # The file has neither, but a stray setting would silently change lengths versus the published tool.
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._tokenizer = tokenizer
        self.path = path

    def encode_batch(self, seqs: Iterable[str]) -> list[np.ndarray]:
        """Encode all sequences in one Rust call; each result is [CLS] tokens... [SEP] as int64."""
        encodings = self._tokenizer.encode_batch(list(seqs), add_special_tokens=True)
        return [np.asarray(encoding.ids, dtype=np.int64) for encoding in encodings]
