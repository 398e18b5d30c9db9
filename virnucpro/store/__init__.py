"""Model store: fetch (resumable, sha256-checked), list, verify, convert; resolution of model names for the engine.

Public entry points: `resolve.resolve_model_paths`, `lockfile.verify_file`, `lockfile.sha256_file`,
`fetch.fetch_models`, `convert.convert_esm2`; the command line is `virnucpro.commands.models`.
"""
