"""Configuration read once at start-up: environment (EnvConfig) and the user's choices (PredictConfig).

Nothing else in the package reads os.environ; everything receives these dataclasses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def _env_int(env, name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None


STORE_VARIABLES = ("XDG_CACHE_HOME", "TORCH_HOME", "HF_HOME", "HF_HUB_CACHE", "HF_ENDPOINT", "VIRNUCPRO_MODELS_MIRROR")


@dataclass(frozen=True)
class EnvConfig:
    """What the environment says: model locations, cluster placement, CPU budget."""

    models_dir: Path
    cpus: int
    slurm_job_id: str | None = None
    slurm_array_task_id: int | None = None
    slurm_restart_count: int = 0
    cuda_visible_devices: str | None = None
    no_progress: bool = False
    # where already-downloaded weights may live (torch hub, Hugging Face cache) and download mirrors
    store_environ: dict = field(default_factory=dict)
    # checkpoint cadence and shard size (tuning)
    part_frames: int = 16384
    part_seconds: float = 120.0
    block_frames: int = 4096
    shard_tokens: int = 0  # VIRNUCPRO_SHARD_TOKENS; 0 = not set (predict: RunOptions' default, submit: the profile)
    sort_rows: int = 0  # VIRNUCPRO_SORT_ROWS (at least 1); 0 = not set (RunOptions' default)

    @classmethod
    def from_environ(cls, env=None) -> "EnvConfig":
        env = os.environ if env is None else env
        models = env.get("VIRNUCPRO_MODELS") or os.path.join(
            env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "virnucpro", "models"
        )
        task = env.get("SLURM_ARRAY_TASK_ID")
        cpus = _env_int(env, "SLURM_CPUS_PER_TASK", len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
        return cls(
            models_dir=Path(models),
            cpus=max(1, cpus),
            slurm_job_id=env.get("SLURM_JOB_ID"),
            slurm_array_task_id=int(task) if task not in (None, "") else None,
            slurm_restart_count=_env_int(env, "SLURM_RESTART_COUNT", 0),
            cuda_visible_devices=env.get("CUDA_VISIBLE_DEVICES"),
            no_progress=env.get("VIRNUCPRO_NO_PROGRESS", "") not in ("", "0"),
            store_environ={key: env[key] for key in STORE_VARIABLES if env.get(key)},
            part_frames=_env_int(env, "VIRNUCPRO_PART_FRAMES", cls.part_frames),
            part_seconds=float(env.get("VIRNUCPRO_PART_SECONDS") or cls.part_seconds),
            block_frames=_env_int(env, "VIRNUCPRO_BLOCK_FRAMES", cls.block_frames),
            shard_tokens=_env_int(env, "VIRNUCPRO_SHARD_TOKENS", cls.shard_tokens),
            sort_rows=max(1, _env_int(env, "VIRNUCPRO_SORT_ROWS", 0)) if env.get("VIRNUCPRO_SORT_ROWS") else 0,
        )


@dataclass(frozen=True)
class ModelPaths:
    esm: str = "3B"  # 650M | 3B | 15B | path to a fair-esm .pt (or converted .safetensors)
    dnabert: str | None = None  # Hugging Face folder of DNABERT-S
    classifier: str | None = None  # 300_model.pth / 500_model.pth / state dict / safetensors


# The --precision modes by name (what each computes in: models.precision.PRECISION_MODES). Named here, without
# torch, so that the commands that never compute (status, aggregate, call) do not import it.
PRECISION_NAMES = ("fp16", "bf16", "accurate", "fp32")
DEFAULT_PRECISION = "fp16"
CPU_PRECISION = "fp32"  # what every mode computes in on a CPU, where half-precision GEMMs are slow


@dataclass(frozen=True)
class EngineConfig:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = DEFAULT_PRECISION  # one of PRECISION_NAMES (CPU_PRECISION on a CPU)
    token_budget: int = 0  # tokens per packed batch; 0 = sized from the GPU's total memory (engine/loading.py)
    workers: int = -1  # DataLoader workers; -1 = from CPUs
    compile: bool = False  # torch.compile the whole models
    fuse: bool = True  # on CUDA, torch.compile only the elementwise work around the GEMMs (measured +25% on 3B)
    attention: str = "auto"  # auto | varlen | flash | flex | padded | sdpa
    compile_cache: str | None = None  # folder for compiled kernels shared by a run's tasks (None: torch's default)


@dataclass(frozen=True)
class PredictConfig:
    input: Path
    outdir: Path
    chunk_length: int = 500
    models: ModelPaths = field(default_factory=ModelPaths)
    engine: EngineConfig = field(default_factory=EngineConfig)
    save_embeddings: bool = False
    gpus: int = 0  # 0 = every visible GPU
    force_restart: bool = False
    dedup: bool = True  # score identical frames once (run.dedup); fixed when the run is planned
    min_length: int = 0  # drop input sequences shorter than this at prep (0: keep all, as published)
