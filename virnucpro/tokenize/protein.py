"""ESM-2 protein tokenizer: fair-esm's "ESM-1b" alphabet, encoded with one table lookup over the bytes.

fair-esm builds the alphabet as prepend tokens + standard tokens, pads with <null_i> to a multiple of 8, then
appends <mask>; we build the same list so ids match `esm.data.Alphabet.from_architecture("ESM-1b")` without
importing fair-esm at run time. fair-esm raises KeyError on a letter outside the alphabet; we map it to <unk>
instead (the published prep only emits the 20 amino acids and X, so the two agree on real input).
"""

from __future__ import annotations

import numpy as np

PREPEND_TOKENS = ("<cls>", "<pad>", "<eos>", "<unk>")
RESIDUE_TOKENS = tuple("LAGVSERTIDPKQNFYMHWCXBUZO.-")
APPEND_TOKENS = ("<mask>",)
SPECIAL_TOKENS = 2  # <cls> before and <eos> after every protein


def esm_tokens(aa_lengths) -> np.ndarray:
    """ESM-2 tokens of proteins with these residue counts (int64): residues + <cls> + <eos>, the unit of a run's
    token costs and speeds."""
    return np.asarray(aa_lengths, dtype=np.int64) + SPECIAL_TOKENS


def esm1b_tokens() -> list[str]:
    tokens = list(PREPEND_TOKENS) + list(RESIDUE_TOKENS)
    tokens += [f"<null_{i + 1}>" for i in range((8 - len(tokens) % 8) % 8)]
    return tokens + list(APPEND_TOKENS)


class ProteinTokenizer:
    """Proteins -> int64 ids: [<cls>] + residues + [<eos>]."""

    def __init__(self):
        self.tokens = esm1b_tokens()
        self.token_to_id = {token: i for i, token in enumerate(self.tokens)}
        self.cls_id = self.token_to_id["<cls>"]
        self.pad_id = self.token_to_id["<pad>"]
        self.eos_id = self.token_to_id["<eos>"]
        self.unk_id = self.token_to_id["<unk>"]
        self.mask_id = self.token_to_id["<mask>"]
        self._table = self._byte_table()

    def _byte_table(self) -> np.ndarray:
        table = np.full(256, self.unk_id, dtype=np.int64)
        for letter in RESIDUE_TOKENS:
            table[ord(letter)] = self.token_to_id[letter]
        return table

    def __len__(self) -> int:
        return len(self.tokens)

    def _residue_ids(self, protein: str) -> np.ndarray:
        # Non-ASCII characters become several UTF-8 bytes, each >= 0x80 and hence <unk>; that is only ever wrong
        # input, never a real residue, so the exact count of <unk>s does not matter.
        return self._table[np.frombuffer(protein.encode("utf-8"), dtype=np.uint8)]

    def encode(self, protein: str) -> np.ndarray:
        ids = np.empty(len(protein.encode("utf-8")) + SPECIAL_TOKENS, dtype=np.int64)
        ids[0], ids[-1] = self.cls_id, self.eos_id
        ids[1:-1] = self._residue_ids(protein)
        return ids
