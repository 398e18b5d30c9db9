"""What numerics scored a shard's parts (precision, kernels, token budgets, torch/CUDA, GPU), kept beside them.

Resuming under different numerics is allowed but said out loud: the precision mode itself is part of the run's
identity (a different `--precision` is refused by the manifest check), while a resume on another GPU model or
software version computes the same method with other kernels — its results differ from an uninterrupted run in
the last digits only, and such a run is still worth finishing on a cluster, so it is warned, not refused.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from virnucpro.io.atomic import write_text_atomic
from virnucpro.run.rundir import NUMERICS

log = logging.getLogger(__name__)
NUMERICS_FILE = NUMERICS


def record_numerics(shard_dir: Path, numerics: dict | None, has_parts: bool) -> list[str]:
    """Write the scorer's numerics for this shard; return what changed since its existing parts were scored."""
    if numerics is None:  # a scorer without an engine (test doubles)
        return []
    path = shard_dir / NUMERICS_FILE
    try:
        before = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        before = None
    changed = sorted(k for k in set(numerics) | set(before or {}) if (before or {}).get(k) != numerics.get(k))
    if before is not None and has_parts and changed:
        log.warning("%s: resumed with other numerics (%s); its parts will differ from an uninterrupted run in the "
                    "last digits", shard_dir, ", ".join(changed))
    write_text_atomic(path, json.dumps(numerics, indent=1, sort_keys=True))
    return changed if before is not None and has_parts else []
