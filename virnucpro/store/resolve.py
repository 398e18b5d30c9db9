"""Turn the user's model choices into files: names ("3B", a missing DNABERT-S or classifier) are looked up in the
models directory (then torch hub / the HF cache) and checked against the lock; explicit paths pass through."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from virnucpro.config import ModelPaths
from virnucpro.errors import ModelError
from virnucpro.store.catalog import CatalogModel, StoreLocations, load_catalog
from virnucpro.store.fetch import find_in_place
from virnucpro.store.lockfile import Lock, verify_file


def resolve_model_paths(models: ModelPaths, locations: StoreLocations, *, chunk_length: int = 500) -> ModelPaths:
    """Every field of the result is an existing path; store files are verified against the lock (quick check).
    With no classifier named, chunk_length picks the published one (300_model.pth / 500_model.pth)."""
    lock = Lock.load(locations.models_dir)
    try:
        return replace(
            models,
            esm=str(_resolve_esm(models.esm, locations, lock)),
            dnabert=str(_resolve_dnabert(models.dnabert, locations, lock)),
            classifier=str(_resolve_classifier(models.classifier, chunk_length, locations, lock)),
        )
    finally:
        lock.save_if_dirty()


def _resolve_esm(value: str, locations: StoreLocations, lock: Lock) -> Path:
    model = _catalog_model(value, "esm2")
    if model is None:
        return _explicit(value, "ESM-2 weights")
    converted = locations.models_dir / model.folder / Path(model.weights.name).with_suffix(".safetensors").name
    if converted.is_file():  # written by `virnucpro models convert`, faster and memory-mapped
        verify_file(converted, lock, model.relpath(model.weights, converted.name))
        return converted
    return _store_file(model, locations, lock)


def _resolve_dnabert(value: str | None, locations: StoreLocations, lock: Lock) -> Path:
    if value is not None and _catalog_model(value, "dnabert") is None:
        return _explicit(value, "DNABERT-S folder")
    model = load_catalog().by_kind("dnabert")[0]
    folder = None
    for file in model.files:
        found = _require(model, file, locations)
        verify_file(found, lock, model.relpath(file, found.name))
        folder = found.parent
    return folder


def _resolve_classifier(value: str | None, chunk_length: int, locations: StoreLocations, lock: Lock) -> Path:
    if value is not None and _catalog_model(value, "classifier") is None:
        return _explicit(value, "classifier")
    model = _catalog_model(value or str(chunk_length), "classifier")
    if model is None:
        raise ModelError(f"{chunk_length}_model.pth", f"no published classifier for chunk length {chunk_length} "
                                                      "(300 and 500 exist); pass --classifier")
    return _store_file(model, locations, lock)


def _store_file(model: CatalogModel, locations: StoreLocations, lock: Lock) -> Path:
    found = _require(model, model.weights, locations)
    verify_file(found, lock, model.relpath(model.weights, found.name))
    return found


def _require(model: CatalogModel, file, locations: StoreLocations) -> Path:
    found = find_in_place(model, file, locations)
    if found is None:
        raise ModelError(locations.models_dir / model.relpath(file),
                         f"{model.description} is not in the model store; run `virnucpro models fetch {model.key}` "
                         "(or set VIRNUCPRO_MODELS / pass an explicit path)")
    return found


def _catalog_model(value: str | None, kind: str) -> CatalogModel | None:
    if value is None:
        return None
    for model in load_catalog().by_kind(kind):
        if value == model.key or value in model.aliases:
            return model
    return None


def _explicit(value: str, what: str) -> Path:
    path = Path(value).expanduser()
    if not path.exists():
        raise ModelError(path, f"{what} not found")
    return path
