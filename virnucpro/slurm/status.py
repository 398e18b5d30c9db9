"""SLURM side of `virnucpro status`: the states of the jobs recorded in RUNDIR/slurm/jobs.json.

Accounting (sacct) is often off on small clusters, so states come from `scontrol show job` (one call per
submitted job id; an array id answers for all its tasks). Jobs that finished more than MinJobAge ago are
forgotten by slurmctld and reported as "UNKNOWN"; the shard progress in the run directory is the truth.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from virnucpro.slurm.jobs import JobsFile, jobs_path, prep_error_path

UNKNOWN = "UNKNOWN"
ACTIVE_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
                 "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "STOPPED", "PREEMPTED"}
_FIELD = re.compile(r"(\S+?)=(\S*)")


def has_jobs(rundir: str | Path) -> bool:
    return jobs_path(Path(rundir)).exists()


def job_states(rundir: str | Path) -> dict:
    """JSON-ready states of the run's jobs: {"shards": {"0": {job_id, state, reason, restarts, exit_code}},
    "aggregate": {...} or None, "prep": {..., "error"} or None, "submissions": [...], "scontrol": bool,
    "scontrol_error": str}. Each shard shows its newest job; "aggregate" is the newest submission's aggregation
    (None before it is submitted), "prep" the newest prep job."""
    rundir = Path(rundir)
    prep = JobsFile.load(rundir).latest_prep()
    # the prep job first: once it is seen finished, every job it submitted is on record (re-read below)
    known, available, error = query_jobs([prep.prep_job_id] if prep else [])
    jobs = JobsFile.load(rundir)
    latest = jobs.submissions[-1] if jobs.submissions else None
    aggregate_id = latest.aggregate_job_id if latest else ""
    # then the aggregation: a shard seen unfinished afterwards was unfinished when the aggregation was seen
    ids = [aggregate_id] if aggregate_id else []
    ids += sorted({job.split("_")[0] for job in jobs.latest_job_of_shard().values()} - set(ids))
    if available and not error:
        more, available, error = query_jobs(ids)
        known.update(more)
    shards = {str(shard): _describe(job, known) for shard, job in sorted(jobs.latest_job_of_shard().items())}
    return {
        "scontrol": available,
        "scontrol_error": error,
        "shards": shards,
        "aggregate": _describe(aggregate_id, known) if aggregate_id else None,
        "prep": _describe_prep(rundir, prep.prep_job_id, known) if prep else None,
        "submissions": [s.to_dict() for s in jobs.submissions],
    }


def _describe_prep(rundir: Path, job_id: str, known: dict[str, dict]) -> dict:
    error = prep_error_path(rundir)
    return {**_describe(job_id, known), "error": error.read_text().strip() if error.exists() else ""}


def _describe(job_id: str, known: dict[str, dict]) -> dict:
    record = known.get(job_id)
    if record is None:
        return {"job_id": job_id, "state": UNKNOWN, "reason": "not known to slurmctld (finished long ago?)",
                "restarts": None, "exit_code": None}
    return {"job_id": job_id, "state": record.get("JobState", UNKNOWN), "reason": record.get("Reason", ""),
            "restarts": int(record["Restarts"]) if record.get("Restarts", "").isdigit() else None,
            "exit_code": record.get("ExitCode")}


def query_jobs(job_ids: list[str]) -> tuple[dict[str, dict], bool, str]:
    """scontrol records keyed by the ids jobs.json uses ("123" or "123_4"); (records, scontrol available, why
    slurmctld could not be asked: "" when it answered). Stops at the first such failure (each one can take 20 s)."""
    if not shutil.which("scontrol"):
        return {}, False, ""
    known: dict[str, dict] = {}
    for job_id in job_ids:
        try:
            done = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True,
                                  timeout=60)
        except (OSError, subprocess.TimeoutExpired) as error:
            return known, True, f"scontrol show job {job_id}: {error}"
        if done.returncode != 0 and "Invalid job id" not in done.stderr:  # invalid: purged after MinJobAge
            return known, True, (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        for line in done.stdout.splitlines():
            if line.strip():
                known.update(_keyed(dict(_FIELD.findall(line))))
    return known, True, ""


def _keyed(record: dict) -> dict[str, dict]:
    """One scontrol record -> the ids it stands for (an array's pending tasks come as one record "2-5%1")."""
    array_id, tasks = record.get("ArrayJobId"), record.get("ArrayTaskId")
    if not array_id or not tasks:
        return {record.get("JobId", ""): record}
    return {f"{array_id}_{task}": record for task in expand_task_ids(tasks)}


def expand_task_ids(text: str) -> list[int]:
    """"0", "2-5%1", "1,3-4" -> task ids."""
    ids: list[int] = []
    for part in text.split("%")[0].split(","):
        low, _, high = part.partition("-")
        if low.isdigit():
            ids.extend(range(int(low), int(high or low) + 1))
    return ids


def active_jobs(states: dict) -> dict[str, str]:
    """Shard (or "aggregate", "prep") -> job id, for jobs still queued or running."""
    active = {shard: info["job_id"] for shard, info in states["shards"].items() if info["state"] in ACTIVE_STATES}
    for job in ("aggregate", "prep"):
        if states.get(job) and states[job]["state"] in ACTIVE_STATES:
            active[job] = states[job]["job_id"]
    return active


def format_job_states(states: dict) -> str:
    """Human lines for `virnucpro status`."""
    if not states["scontrol"]:
        return "SLURM: scontrol not found on this machine; job states unavailable"
    if states["scontrol_error"]:
        return f"SLURM: cannot ask slurmctld ({states['scontrol_error']}); job states unavailable"
    counts: dict[str, int] = {}
    for info in states["shards"].values():
        counts[info["state"]] = counts.get(info["state"], 0) + 1
    summary = ", ".join(f"{n} {state.lower()}" for state, n in sorted(counts.items())) or "none"
    lines = []
    if states.get("prep"):
        prep = states["prep"]
        lines.append(f"SLURM prep job: job {prep['job_id']} {prep['state']} ({prep['reason']})"
                     + (f": {prep['error']}" if prep["error"] else ""))
    lines.append(f"SLURM shard jobs: {summary}")
    for shard, info in states["shards"].items():
        if info["state"] not in ("COMPLETED", UNKNOWN) or info["restarts"]:
            lines.append(f"  shard {shard}: job {info['job_id']} {info['state']} ({info['reason']}; "
                         f"restarts {info['restarts']})")
    if states["aggregate"]:
        agg = states["aggregate"]
        lines.append(f"SLURM aggregation: job {agg['job_id']} {agg['state']} ({agg['reason']})")
    return "\n".join(lines)
