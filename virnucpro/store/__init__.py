"""Model store: fetch (resumable, sha256-checked), list, verify, convert; resolution of model names for the engine.

Public entry points: `resolve.resolve_model_paths`, `resolve.resolve_classifier`, `lockfile.verify_file`,
`fetch.fetch_models`, `convert.convert_esm2`; the CLI lives in `command.py` (`virnucpro models ...`).
"""
