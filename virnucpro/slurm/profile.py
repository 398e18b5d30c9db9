"""SLURM profile: where and how the job array runs (slurm/profile.toml), overridden by `submit` flags.

The file is flat TOML (key = value, no tables). Python 3.11+ parses it with tomllib; on 3.10 a small parser reads
the same flat subset (strings, integers, floats, booleans, one-line arrays of strings) so `tomli` is not needed.
"""

from __future__ import annotations

import ast
import math
import re
import shlex
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from virnucpro.errors import InputError

try:  # Python 3.11+
    import tomllib as _tomllib
except ModuleNotFoundError:  # pragma: no cover - exercised on 3.10 only
    _tomllib = None


@dataclass(frozen=True)
class SlurmProfile:
    partition: str = ""  # empty = the cluster's default partition
    account: str = ""
    qos: str = ""
    time: str = "24:00:00"  # per shard task: minutes, HH:MM:SS or D-HH:MM:SS
    gpus_per_task: int = 1  # 0 = no GPU request (CPU-only clusters, CI)
    gpu_type: str = ""  # e.g. "a100" -> --gres=gpu:a100:1
    cpus_per_task: int = 8  # DataLoader workers = cpus_per_task - 1
    mem: str = ""  # e.g. "64G"; empty = sized from cpus_per_task (see task_memory)
    constraint: str = ""
    image: str = ""  # Apptainer .sif; empty = this Python environment (sys.executable)
    apptainer_flags: str = "--nv"
    max_running: int = 0  # array throttle (--array=0-N%K); 0 = no limit
    signal_delay_s: int = 300  # USR2 this long before the time limit: checkpoint + requeue
    max_requeues: int = 10  # time-limit requeues per task before giving up
    aggregate_time: str = "02:00:00"
    aggregate_cpus: int = 2
    aggregate_mem: str = "16G"
    # Shard size from measured costs (slurm/README.md "Shard size"): every task spends at most `startup_share` of
    # its time starting up: shard tokens >= tokens_per_s * startup_s / startup_share.
    startup_s: float = 18.0  # one task's start-up on an H200, cold compile cache (7.4-8.1 s warm; benchmarks run 10)
    tokens_per_s: float = 96_000.0  # whole-engine ESM tokens/s of one GPU (H200, 150 bp reads, run 10)
    startup_share: float = 0.03
    max_array_size: int = 0  # tasks per job array; 0 = the cluster's MaxArraySize (scontrol show config)
    # Prep (chunks, frames, index, de-duplication, shard plan) as a SLURM job of its own instead of on the login node
    prep_job: str = "auto"  # auto: when the input file is at least prep_job_min_input; always; never
    prep_job_min_input: str = "1G"
    prep_time: str = "04:00:00"
    prep_cpus: int = 2
    prep_mem: str = "16G"
    sbatch_flags: tuple[str, ...] = field(default_factory=tuple)  # extra flags for every job, e.g. "--mail-type=END"


PROFILE_KEYS = {f.name: f for f in fields(SlurmProfile)}
_INT_KEYS = {"gpus_per_task", "cpus_per_task", "max_running", "signal_delay_s", "max_requeues", "aggregate_cpus",
             "max_array_size", "prep_cpus"}
_FLOAT_KEYS = {"startup_s", "tokens_per_s", "startup_share"}
PREP_JOB_CHOICES = ("auto", "always", "never")
_SIZE = re.compile(r"(\d+)([KMGT]?)B?", flags=re.IGNORECASE)


# ---------------------------------------------------------------- reading


def load_profile(path: str | Path | None) -> SlurmProfile:
    """The profile at `path` (defaults when None); unknown keys and wrong types raise InputError."""
    if path is None:
        return SlurmProfile()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise InputError(path, f"cannot read SLURM profile ({error.strerror or error})") from None
    return profile_from_dict(parse_toml(text, path), path)


def parse_toml(text: str, path: Path) -> dict:
    if _tomllib is not None:
        try:
            return _tomllib.loads(text)
        except _tomllib.TOMLDecodeError as error:
            raise InputError(path, f"not valid TOML: {error}") from None
    return parse_flat_toml(text, path)


_KEY_VALUE = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*=\s*(.*?)\s*$")


def parse_flat_toml(text: str, path: Path) -> dict:
    """The flat TOML subset of profiles (for Python 3.10, where tomllib is missing)."""
    values = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = _strip_comment(line).strip()
        if not stripped:
            continue
        match = _KEY_VALUE.match(stripped)
        if not match:
            raise InputError(path, "expected `key = value` (profiles are flat TOML, no [tables])", line=number)
        key, raw = match.groups()
        if key in values:
            raise InputError(path, f"key '{key}' is set twice", line=number)
        values[key] = _parse_value(raw, path, number)
    return values


def _strip_comment(line: str) -> str:
    quote = None
    for position, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == "#":
            return line[:position]
    return line


def _parse_value(raw: str, path: Path, line: int):
    if raw in ("true", "false"):
        return raw == "true"
    if raw.startswith("'") and raw.endswith("'") and len(raw) >= 2:
        return raw[1:-1]  # TOML literal string: no escapes
    try:
        value = ast.literal_eval(raw)  # "strings", 12, 1.5, ["a", "b"]: the same spelling in TOML and Python
    except (ValueError, SyntaxError):
        raise InputError(path, f"cannot read value {raw!r}", line=line) from None
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return value
    raise InputError(path, f"unsupported value {raw!r} (strings, numbers, booleans, arrays of strings)", line=line)


def profile_from_dict(values: dict, path: Path | str = "<profile>") -> SlurmProfile:
    checked = {}
    for key, value in values.items():
        if key not in PROFILE_KEYS:
            raise InputError(path, f"unknown key '{key}' (known: {', '.join(PROFILE_KEYS)})")
        checked[key] = _check_type(key, value, path)
    profile = SlurmProfile(**checked)
    validate(profile, path)
    return profile


def _check_type(key: str, value, path):
    if key == "sbatch_flags":
        if isinstance(value, str):
            return tuple(shlex.split(value))
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return tuple(value)
        raise InputError(path, f"key '{key}': expected an array of strings like [\"--mail-type=END\"]")
    if key in _INT_KEYS:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        raise InputError(path, f"key '{key}': expected a non-negative integer, got {value!r}")
    if key in _FLOAT_KEYS:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value)
        raise InputError(path, f"key '{key}': expected a positive number, got {value!r}")
    if key in ("time", "aggregate_time", "prep_time") and isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # minutes
    if not isinstance(value, str):
        raise InputError(path, f"key '{key}': expected a string, got {value!r}")
    return value


def validate(profile: SlurmProfile, path: Path | str = "<profile>") -> None:
    for key in ("time", "aggregate_time", "prep_time"):
        try:
            time_to_minutes(getattr(profile, key))
        except ValueError as error:
            raise InputError(path, f"key '{key}': {error}") from None
    for key in ("mem", "aggregate_mem", "prep_mem", "prep_job_min_input"):
        value = getattr(profile, key)
        if value and not _SIZE.fullmatch(value):
            raise InputError(path, f"key '{key}': expected a SLURM size like 64G or 16000M, got {value!r}")
    if profile.cpus_per_task < 1 or profile.aggregate_cpus < 1 or profile.prep_cpus < 1:
        raise InputError(path, "cpus_per_task, aggregate_cpus and prep_cpus must be at least 1")
    if profile.prep_job not in PREP_JOB_CHOICES:
        raise InputError(path, f"key 'prep_job': expected one of {', '.join(PREP_JOB_CHOICES)}, got {profile.prep_job!r}")
    if not 0 < profile.startup_share < 1:
        raise InputError(path, f"key 'startup_share': expected a fraction between 0 and 1, got {profile.startup_share!r}")
    for flag in profile.sbatch_flags:
        if not flag.startswith("--"):
            raise InputError(path, f"key 'sbatch_flags': {flag!r} is not a long sbatch option (--name[=value])")


def with_overrides(profile: SlurmProfile, **overrides) -> SlurmProfile:
    """CLI flags win over the file; None means "not given"."""
    given = {key: value for key, value in overrides.items() if value is not None}
    if "sbatch_flags" in given:
        given["sbatch_flags"] = profile.sbatch_flags + tuple(given["sbatch_flags"])
    updated = replace(profile, **given)
    validate(updated, "command line")
    return updated


# ---------------------------------------------------------------- SLURM value formats


_TIME_FORMS = (
    (re.compile(r"(\d+)"), lambda m: int(m[1])),
    (re.compile(r"(\d+):(\d{1,2})"), lambda m: int(m[1]) + int(m[2]) / 60),
    (re.compile(r"(\d+):(\d{1,2}):(\d{1,2})"), lambda m: int(m[1]) * 60 + int(m[2]) + int(m[3]) / 60),
    (re.compile(r"(\d+)-(\d+)"), lambda m: int(m[1]) * 1440 + int(m[2]) * 60),
    (re.compile(r"(\d+)-(\d+):(\d{1,2})"), lambda m: int(m[1]) * 1440 + int(m[2]) * 60 + int(m[3])),
    (re.compile(r"(\d+)-(\d+):(\d{1,2}):(\d{1,2})"),
     lambda m: int(m[1]) * 1440 + int(m[2]) * 60 + int(m[3]) + int(m[4]) / 60),
)


def time_to_minutes(value: str) -> int:
    """A SLURM time limit (minutes, M:S, H:M:S, D-H, D-H:M, D-H:M:S) in whole minutes, rounded up."""
    text = str(value).strip()
    for pattern, minutes in _TIME_FORMS:
        match = pattern.fullmatch(text)
        if match:
            total = math.ceil(minutes(match))
            if total < 1:
                raise ValueError(f"time limit {value!r} is shorter than a minute")
            return total
    raise ValueError(f"cannot read time limit {value!r} (minutes, HH:MM:SS or D-HH:MM:SS)")


def size_to_bytes(value: str) -> int:
    """A SLURM size (16G, 500M, 1024K, 12; K/M/G/T are powers of 1024; a bare number is megabytes) in bytes."""
    match = _SIZE.fullmatch(str(value).strip())
    if not match:
        raise ValueError(f"cannot read size {value!r}")
    return int(match[1]) * 1024 ** "KMGT".index((match[2] or "M").upper()) * 1024


def task_memory(profile: SlurmProfile) -> str:
    """Host memory per shard task: the profile's, else room for the models' host copy plus the workers' batches."""
    if profile.mem:
        return profile.mem
    return f"{24 + 2 * profile.cpus_per_task}G"


def parse_sbatch_flags(flags: tuple[str, ...] | list[str]) -> dict:
    """["--mail-type=END", "--exclusive", "--comment", "x y"] -> {"mail-type": "END", "exclusive": True, ...}."""
    parsed: dict = {}
    pending = None
    for flag in flags:
        if pending is not None and not flag.startswith("--"):
            parsed[pending], pending = flag, None
            continue
        if not flag.startswith("--"):
            raise InputError("sbatch flags", f"{flag!r} is not a long sbatch option (--name[=value])")
        name, sep, value = flag[2:].partition("=")
        parsed[name] = value if sep else True
        pending = None if sep else name
    return parsed
