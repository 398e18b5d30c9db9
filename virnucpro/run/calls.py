"""How a run's scores become calls: thresholds, consensus format, an optional re-scoring classifier.

The settings live in a sidecar, RUNDIR/calls.json (the manifest names it in `call_settings`), written by every
aggregation with the settings it used: `virnucpro call` changes them, `predict`/`submit --consensus-format` set the
format, and a later `aggregate` or `report` uses what is recorded. Nothing in them changes what is computed on
the GPU, so they are not part of the run's identity.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone

from virnucpro.errors import InputError, RunStateError
from virnucpro.io.atomic import write_text_atomic
from virnucpro.outputs.summary import PUBLISHED_RULE, Thresholds
from virnucpro.run.manifest import Manifest
from virnucpro.run.rundir import CALLS, RunDir

CONSENSUS_FORMATS = ("published", "broad")
OWN_CLASSIFIER = "run"  # `call --classifier run`: back to the scores the run computed


@dataclass(frozen=True)
class CallSettings:
    min_score: float | None = None  # None: the published chunk rule (best score2 >= best score1)
    min_viral_fraction: float = 0.5
    min_chunks: int = 1
    consensus_format: str = "published"
    classifier: dict | None = None  # {path, size, sha256} of a re-scoring classifier; None: the run's own scores

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(self.min_score, self.min_viral_fraction, self.min_chunks)

    def changed(self, **changes) -> "CallSettings":
        """These settings with some replaced, checked (InputError naming the option)."""
        return replace(self, **changes).checked()

    def checked(self) -> "CallSettings":
        if self.min_score is not None and not _in_unit_interval(self.min_score):
            raise InputError("--min-score", f"must be a number from 0 to 1 or '{PUBLISHED_RULE}', got {self.min_score!r}")
        if not _in_unit_interval(self.min_viral_fraction):
            raise InputError("--min-viral-fraction", f"must be a number from 0 to 1, got {self.min_viral_fraction!r}")
        if isinstance(self.min_chunks, bool) or not isinstance(self.min_chunks, int) or self.min_chunks < 1:
            raise InputError("--min-chunks", f"must be a whole number of at least 1, got {self.min_chunks!r}")
        if self.consensus_format not in CONSENSUS_FORMATS:
            raise InputError("--consensus-format", f"must be one of {', '.join(CONSENSUS_FORMATS)}, "
                                                   f"got {self.consensus_format!r}")
        return self

    def as_dict(self) -> dict:
        return asdict(self)


def _in_unit_interval(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value <= 1


def parse_min_score(text: str) -> float | None:
    """`--min-score`: a number, or 'published' for the published rule."""
    if text == PUBLISHED_RULE:
        return None
    try:
        return float(text)
    except ValueError:
        raise InputError("--min-score", f"must be a number from 0 to 1 or '{PUBLISHED_RULE}', got {text!r}") from None


def parse_number(option: str, kind: type):
    """A parser for a numeric option's text that fails with one line naming the option."""
    def parse(text: str):
        try:
            return kind(text)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise InputError(option, f"must be {what}, got {text!r}") from None
    return parse


def settings_path(run: RunDir, manifest: Manifest | None = None):
    name = manifest.call_settings if manifest is not None else CALLS
    return run.root / name


def load_settings(run: RunDir, manifest: Manifest | None = None) -> CallSettings:
    """What is recorded (the defaults when nothing is)."""
    path = settings_path(run, manifest)
    try:
        data = json.loads(path.read_text())
        data.pop("updated", None)
        return CallSettings(**data).checked()
    except FileNotFoundError:
        return CallSettings()
    except (ValueError, TypeError, InputError) as error:
        raise RunStateError(f"{path}: unreadable call settings ({error}); delete it to return to the defaults") from None


def save_settings(run: RunDir, settings: CallSettings, manifest: Manifest | None = None) -> None:
    record = {**settings.as_dict(), "updated": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write_text_atomic(settings_path(run, manifest), json.dumps(record, indent=1, sort_keys=True) + "\n")
