"""How `submit` cuts a run into array tasks: shard size from measured costs, arrays under MaxArraySize.

Every task pays a start-up (imports, model load and compile, first block: `startup_s` in the profile, measured on
an H200) before it scores at `tokens_per_s`. A shard of T tokens spends startup_s / (startup_s + T / tokens_per_s)
of its task on start-up; with T >= tokens_per_s * startup_s / startup_share that is at most startup_share. The plan
therefore rounds the shard count down (every shard at least that size); `--shards N` asks for exactly N.

SLURM refuses an array with more tasks than the cluster's `MaxArraySize` (task ids 0..MaxArraySize-1), so the
shards to submit are split into as many arrays as needed, each within the limit, and one aggregation job waits
for all of them.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass

from virnucpro.slurm.profile import SlurmProfile

SLURM_DEFAULT_MAX_ARRAY_SIZE = 1001
UNLIMITED_TOKENS = sys.maxsize  # with --shards N: the count alone decides
_MAX_ARRAY_SIZE = re.compile(r"^\s*MaxArraySize\s*=\s*(\d+)", re.MULTILINE)


@dataclass(frozen=True)
class ShardSize:
    """What planning is asked for: shard_tokens as a floor ("down") or a ceiling ("up"), and a minimum count."""

    tokens: int
    rounding: str  # "down": every shard >= tokens (start-up bound); "up": every shard <= tokens
    min_shards: int
    why: str  # the figures used, one line for the user

    def to_dict(self) -> dict:
        return {"tokens": self.tokens, "rounding": self.rounding, "min_shards": self.min_shards, "why": self.why}


def startup_bound_tokens(profile: SlurmProfile) -> int:
    """Smallest shard whose start-up is at most startup_share of its task at the measured throughput."""
    return math.ceil(profile.tokens_per_s * profile.startup_s / profile.startup_share)


def shard_size(profile: SlurmProfile, shards: int = 0, env_shard_tokens: int = 0) -> ShardSize:
    """`--shards N` wins; then VIRNUCPRO_SHARD_TOKENS (a ceiling, as for `predict`); else the measured costs."""
    if shards:
        return ShardSize(UNLIMITED_TOKENS, "up", shards, f"{shards} shards (--shards)")
    if env_shard_tokens:
        return ShardSize(env_shard_tokens, "up", 1,
                         f"at most {env_shard_tokens:,} tokens per shard (VIRNUCPRO_SHARD_TOKENS)")
    tokens = startup_bound_tokens(profile)
    return ShardSize(tokens, "down", 1,
                     f"at least {tokens:,} ESM tokens per shard = {profile.tokens_per_s:,.0f} tokens/s x "
                     f"{profile.startup_s:g} s start-up / {profile.startup_share:.0%} "
                     "(profile tokens_per_s, startup_s, startup_share)")


def describe_shards(size: ShardSize, tokens: int, shards: list, profile: SlurmProfile) -> str:
    """What the plan came to, at the profile's figures: shards, tokens per shard, GPU time and start-up share."""
    if not shards:
        return f"shard size: {size.why}; nothing to score"
    mean = tokens / len(shards)
    scoring_s = mean / profile.tokens_per_s
    share = profile.startup_s / (profile.startup_s + scoring_s)
    return (f"shard size: {size.why} -> {len(shards)} shard(s) of ~{mean:,.0f} tokens for {tokens:,} tokens "
            f"(~{scoring_s / 60:.1f} GPU-min each at {profile.tokens_per_s:,.0f} tokens/s; "
            f"start-up {profile.startup_s:g} s = {share:.1%} of a task)")


# ---------------------------------------------------------------- MaxArraySize


def cluster_max_array_size() -> tuple[int | None, str]:
    """The cluster's MaxArraySize from `scontrol show config` (None and why when it cannot be read)."""
    if not shutil.which("scontrol"):
        return None, "scontrol not found"
    try:
        done = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        return None, f"scontrol show config: {error}"
    match = _MAX_ARRAY_SIZE.search(done.stdout)
    if done.returncode != 0 or not match:
        return None, (done.stderr.strip().splitlines() or ["no MaxArraySize in scontrol show config"])[-1]
    return int(match[1]), "scontrol show config"


def array_limit(profile: SlurmProfile) -> tuple[int, str]:
    """Tasks per array: the cluster's MaxArraySize, the profile's max_array_size when smaller (or when the cluster
    cannot be asked), else SLURM's default 1001. At least 1 (MaxArraySize=0: no arrays, one job per shard)."""
    cluster, source = cluster_max_array_size()
    if profile.max_array_size and (cluster is None or profile.max_array_size < cluster):
        return max(1, profile.max_array_size), "profile max_array_size"
    if cluster is not None:
        return max(1, cluster), f"MaxArraySize={cluster} ({source})"
    return SLURM_DEFAULT_MAX_ARRAY_SIZE, f"SLURM's default MaxArraySize ({source})"


def split_arrays(shards: list[int], limit: int) -> list[list[int]]:
    """Consecutive groups of at most `limit` shards: one job array each."""
    return [shards[start:start + limit] for start in range(0, len(shards), max(1, limit))]


def array_throttle(profile: SlurmProfile, arrays: int) -> int:
    """Per-array `%K` so that all arrays together run at most max_running tasks (0 = no limit)."""
    return max(1, profile.max_running // max(arrays, 1)) if profile.max_running else 0
