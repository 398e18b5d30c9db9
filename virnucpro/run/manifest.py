"""manifest.json: what a run directory computes (identity) and how the work is split (shard plan).

The identity decides whether a run directory may be resumed: same input bytes, chunk length, model files,
precision and embedding choice. The shard plan is fixed once, so a resume with another GPU count still works.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from virnucpro import __version__
from virnucpro.config import EngineConfig, ModelPaths, PredictConfig
from virnucpro.errors import RunStateError
from virnucpro.io.atomic import write_text_atomic
from virnucpro.run.rundir import CALLS, RunDir

log = logging.getLogger(__name__)

FORMAT = 1


@dataclass(frozen=True)
class RunIdentity:
    input: dict  # {path, size, sha256}
    chunk_length: int
    models: dict  # role -> {path, size, sha256}
    precision: str
    save_embeddings: bool
    min_length: int = 0  # sequences shorter than this were dropped at prep (--min-length)


@dataclass(frozen=True)
class Manifest:
    identity: RunIdentity
    frames: int
    tokens: int
    shards: list[tuple[int, int, int]]  # (start, stop, tokens), contiguous over [0, scored_frames)
    dedup: bool = False  # identical frames scored once (run.dedup); shards then cover the distinct frames
    unique_frames: int | None = None  # distinct frames, when de-duplicated
    frame_tokens: int | None = None  # tokens of every prepared frame (tokens: those the shards compute)
    code_version: str = __version__
    created: str = ""
    format: int = FORMAT
    call_settings: str = CALLS  # sidecar with the thresholds and consensus format in use (run.calls)
    prep_files: dict = field(default_factory=dict)  # name -> sha256 of every file prep wrote (checked at resume)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_dict(cls, data: dict) -> "Manifest":
        data = dict(data)
        data["identity"] = RunIdentity(**data["identity"])
        data["shards"] = [tuple(int(v) for v in shard) for shard in data["shards"]]
        return cls(**data)

    def save(self, path: Path) -> None:
        write_text_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> "Manifest":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise RunStateError(f"{path}: no manifest; run `virnucpro predict INPUT -o RUNDIR` first") from None
        except (ValueError, KeyError, TypeError) as error:
            raise RunStateError(f"{path}: unreadable manifest ({error})") from None

    @property
    def scored_frames(self) -> int:
        """Frames the shards score: the distinct frames of a de-duplicated run, else every prepared frame."""
        return self.unique_frames if self.dedup else self.frames

    def shard(self, index: int) -> tuple[int, int, int]:
        if not 0 <= index < len(self.shards):
            raise RunStateError(f"shard {index} does not exist (this run has {len(self.shards)} shards)")
        return self.shards[index]


def _describe(entry) -> str:
    if isinstance(entry, dict) and "sha256" in entry:
        return f"{entry['path']} ({entry['size']} bytes, sha256 {entry['sha256'][:12]})"
    return repr(entry)


def identity_differences(old: RunIdentity, new: RunIdentity) -> list[str]:
    """One phrase per difference that makes resuming unsafe, e.g. 'esm model differs: manifest has X, now Y'."""
    differences = []
    if old.input.get("sha256") != new.input.get("sha256"):
        differences.append(f"input differs: manifest has {_describe(old.input)}, now {_describe(new.input)}")
    if old.chunk_length != new.chunk_length:
        differences.append(f"chunk length differs: manifest has {old.chunk_length}, now {new.chunk_length}")
    for role in sorted(set(old.models) | set(new.models)):
        before, after = old.models.get(role), new.models.get(role)
        if (before or {}).get("sha256") != (after or {}).get("sha256"):
            differences.append(f"{role} model differs: manifest has {_describe(before)}, now {_describe(after)}")
    if old.precision != new.precision:
        differences.append(f"precision differs: manifest has {old.precision}, now {new.precision}")
    if old.save_embeddings != new.save_embeddings:
        differences.append(f"--save-embeddings differs: manifest has {old.save_embeddings}, now {new.save_embeddings}")
    if old.min_length != new.min_length:
        differences.append(f"--min-length differs: manifest has {old.min_length}, now {new.min_length}")
    return differences


def check_resumable(manifest_path: Path, old: Manifest, new: RunIdentity) -> None:
    differences = identity_differences(old.identity, new)
    if differences:
        raise RunStateError(f"{manifest_path}: cannot resume: {'; '.join(differences)} "
                            "(use --force-restart to start this run directory over)")
    if old.code_version != __version__:
        log.warning("%s was started by virnucpro %s, resuming with %s", manifest_path, old.code_version, __version__)


def manifest_config(rundir, device: str) -> PredictConfig:
    """The PredictConfig a shard process needs, rebuilt from the manifest (its resolved model files)."""
    identity = Manifest.load(RunDir(rundir).manifest).identity
    models = ModelPaths(**{role: entry["path"] for role, entry in identity.models.items()})
    engine = EngineConfig(device=device, precision=identity.precision,
                          compile_cache=str(RunDir(rundir).compile_cache))
    return PredictConfig(input=identity.input["path"], outdir=rundir, chunk_length=identity.chunk_length,
                         models=models, engine=engine, save_embeddings=identity.save_embeddings,
                         min_length=identity.min_length)
