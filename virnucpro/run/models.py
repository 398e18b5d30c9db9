"""The model files a run uses: names ("3B", a missing DNABERT-S or classifier) resolved in the model store,
explicit paths passed through. The engine only ever loads the files named here."""

from __future__ import annotations

from virnucpro.config import EnvConfig, ModelPaths, PredictConfig
from virnucpro.store.catalog import StoreLocations
from virnucpro.store.resolve import resolve_model_paths

MODEL_ROLES = ("esm", "dnabert", "classifier")


def resolve_models(cfg: PredictConfig, env: EnvConfig) -> ModelPaths:
    """Every field an existing file or folder; store files quick-checked against the lock."""
    locations = StoreLocations.from_environ(env.models_dir, env=env.store_environ)
    return resolve_model_paths(cfg.models, locations, chunk_length=cfg.chunk_length)
