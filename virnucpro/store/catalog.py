"""The model catalog (catalog.json) and where models may already live on this machine.

Layout of a models directory (`env.models_dir`, `--dir`):

    esm2/esm2_t36_3B_UR50D.pt (+ -contact-regression.pt, + .safetensors after `models convert`)
    dnabert-s/{config.json, pytorch_model.bin, tokenizer.json, tokenizer_config.json}
    classifier/{300_model.pth, 500_model.pth}
    virnucpro-models.lock.json      sha256 of every file, recorded at first download (lockfile.py)

Files already held by torch hub ($TORCH_HOME/hub/checkpoints) or the Hugging Face hub cache
($HF_HOME/hub/models--zhihan1996--DNABERT-S/snapshots/<rev>/) are used where they lie.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Mapping, Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path

from virnucpro.errors import ModelError

MIRROR_ENV = "VIRNUCPRO_MODELS_MIRROR"
HF_REPO_CACHE_NAME = "models--zhihan1996--DNABERT-S"


@dataclass(frozen=True)
class CatalogFile:
    name: str  # file name in the models directory (as published)
    source: str  # key of Catalog.sources
    remote: str  # path under the source's base URL
    approx_bytes: int
    sha256: str = ""  # publisher's sum; empty where none is published
    optional: bool = False  # fetched, but a run does not need it (ESM contact regression)
    alternatives: tuple[str, ...] = ()  # other names accepted in place (HF snapshot with model.safetensors)


@dataclass(frozen=True)
class CatalogModel:
    key: str
    kind: str  # esm2 | dnabert | classifier
    folder: str  # sub-folder of the models directory
    description: str
    files: tuple[CatalogFile, ...]
    aliases: tuple[str, ...] = ()

    def relpath(self, file: CatalogFile, name: str | None = None) -> str:
        """Key of the file in the lock and its path under the models directory."""
        return f"{self.folder}/{name or file.name}"

    @property
    def approx_bytes(self) -> int:
        return sum(f.approx_bytes for f in self.files)

    @property
    def weights(self) -> CatalogFile:
        """The file a loader opens (ESM-2 .pt, classifier .pth); for DNABERT-S the folder is passed instead."""
        return next(f for f in self.files if not f.optional and f.name.endswith((".pt", ".pth", ".bin")))


@dataclass(frozen=True)
class Catalog:
    sources: dict[str, str]
    groups: dict[str, tuple[str, ...]]
    models: tuple[CatalogModel, ...]

    def model(self, name: str) -> CatalogModel:
        for model in self.models:
            if name == model.key or name in model.aliases:
                return model
        known = ", ".join(m.key for m in self.models)
        raise ModelError(name, f"unknown model (known: {known}; groups: {', '.join(self.groups)})")

    def select(self, names: list[str]) -> list[CatalogModel]:
        """Expand group names and aliases; keep catalog order, no duplicates."""
        wanted: set[str] = set()
        for name in names:
            keys = self.groups.get(name) or (self.model(name).key,)
            wanted.update(keys)
        return [m for m in self.models if m.key in wanted]

    def by_kind(self, kind: str) -> list[CatalogModel]:
        return [m for m in self.models if m.kind == kind]


def _model_from_json(raw: dict) -> CatalogModel:
    files = tuple(
        CatalogFile(name=f["name"], source=f["source"], remote=f["remote"], approx_bytes=int(f["approx_bytes"]),
                    sha256=f.get("sha256", "").lower(), optional=bool(f.get("optional", False)),
                    alternatives=tuple(f.get("alternatives", ())))
        for f in raw["files"]
    )
    return CatalogModel(key=raw["key"], kind=raw["kind"], folder=raw["folder"], description=raw["description"],
                        files=files, aliases=tuple(raw.get("aliases", ())))


@lru_cache(maxsize=1)
def load_catalog() -> Catalog:
    raw = json.loads((resources.files("virnucpro.store") / "catalog.json").read_text(encoding="utf-8"))
    return Catalog(
        sources=dict(raw["sources"]),
        groups={name: tuple(keys) for name, keys in raw["groups"].items()},
        models=tuple(_model_from_json(m) for m in raw["models"]),
    )


def parse_mirrors(specs: list[str], sources: dict[str, str]) -> dict[str, str]:
    """`URL` serves every source under URL/<source>/...; `SOURCE=URL` replaces one source's base."""
    bases = dict(sources)
    for spec in specs:
        name, sep, url = spec.partition("=")
        if sep and name in sources:
            bases[name] = url.rstrip("/")
        elif sep:
            raise ModelError(spec, f"unknown mirror source '{name}' (known: {', '.join(sources)})")
        else:
            bases = {source: f"{spec.rstrip('/')}/{source}" for source in sources}
    return bases


@dataclass(frozen=True)
class StoreLocations:
    """Where models are fetched to and looked for, and the URL base of each source (from EnvConfig.store_environ)."""

    models_dir: Path
    torch_checkpoints: Path | None = None
    hf_hub_cache: Path | None = None
    bases: dict[str, str] = field(default_factory=lambda: dict(load_catalog().sources))

    @classmethod
    def from_environ(cls, models_dir: str | os.PathLike, env: Mapping[str, str],
                     mirrors: Sequence[str] = ()) -> "StoreLocations":
        """`env`: the environment variables EnvConfig captured (EnvConfig.store_environ); mirrors: --mirror."""
        cache = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        torch_home = Path(env.get("TORCH_HOME") or cache / "torch")
        hf_cache = Path(env.get("HF_HUB_CACHE") or Path(env.get("HF_HOME") or cache / "huggingface") / "hub")
        sources = dict(load_catalog().sources)
        if env.get("HF_ENDPOINT"):  # the Hugging Face clients' own override
            sources["huggingface"] = env["HF_ENDPOINT"].rstrip("/")
        env_mirrors = [m for m in (env.get(MIRROR_ENV) or "").replace(",", " ").split() if m]
        return cls(models_dir=Path(models_dir), torch_checkpoints=torch_home / "hub" / "checkpoints",
                   hf_hub_cache=hf_cache, bases=parse_mirrors(env_mirrors + list(mirrors), sources))

    def url(self, file: CatalogFile) -> str:
        return f"{self.bases[file.source]}/{file.remote}"

    def in_place_dirs(self, model: CatalogModel) -> list[Path]:
        """Folders outside the models directory that may already hold this model, best first."""
        if model.kind == "esm2" and self.torch_checkpoints is not None:
            return [self.torch_checkpoints]
        if model.kind == "dnabert" and self.hf_hub_cache is not None:
            return hf_snapshots(self.hf_hub_cache / HF_REPO_CACHE_NAME)
        return []


def human_size(size: int) -> str:
    return f"{size / 1e9:.2f} GB" if size >= 1e8 else f"{size / 1e6:.2f} MB" if size >= 1e5 else f"{size} B"


def hf_snapshots(repo_cache: Path) -> list[Path]:
    """Snapshot folders of a hub-cache repo: the one refs/main points at first, then the others (sorted)."""
    snapshots = repo_cache / "snapshots"
    if not snapshots.is_dir():
        return []
    found = sorted(p for p in snapshots.iterdir() if p.is_dir())
    main = repo_cache / "refs" / "main"
    if main.is_file():
        revision = main.read_text(encoding="utf-8").strip()
        found.sort(key=lambda p: p.name != revision)
    return found
