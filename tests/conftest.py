import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VIRNUCPRO_SHARED", REPO.parent / "shared"))
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def golden_prep() -> Path:
    """The published tool's own prep outputs (copied into tests/data/golden so CI never depends on ../shared)."""
    return DATA / "golden" / "prep"


@pytest.fixture(scope="session")
def dnabert_tokenizer_dir() -> Path:
    """The real DNABERT-S config + tokenizer (no weights) when ../shared has them; else skip."""
    folder = SHARED / "models" / "dnabert-s"
    if not (folder / "tokenizer.json").exists():
        pytest.skip("../shared/models/dnabert-s not present")
    return folder
