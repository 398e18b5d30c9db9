"""`virnucpro shard`, `virnucpro aggregate` and `virnucpro status` on an existing run directory."""

from __future__ import annotations

import json
import sys
from dataclasses import replace

from virnucpro.config import EngineConfig, EnvConfig, ModelPaths, PredictConfig
from virnucpro.errors import RunStateError
from virnucpro.run.aggregate import aggregate
from virnucpro.run.manifest import Manifest
from virnucpro.run.multigpu import ScorerFactory, select_devices
from virnucpro.run.options import default_options
from virnucpro.run.rundir import RunDir, attach_log_file
from virnucpro.run.shard import run_shard
from virnucpro.run.status import is_complete, shard_status
from virnucpro.slurm.status import format_job_states, has_jobs, job_states


def register(subparsers) -> None:
    shard = subparsers.add_parser("shard", help="score one shard of a planned run (what a SLURM array task runs)")
    shard.add_argument("rundir")
    shard.add_argument("--index", type=int, default=None, help="shard index (default: $SLURM_ARRAY_TASK_ID)")
    shard.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    shard.set_defaults(handler=shard_command)

    merge = subparsers.add_parser("aggregate", help="merge finished shards into the final outputs")
    merge.add_argument("rundir")
    merge.set_defaults(handler=aggregate_command)

    status = subparsers.add_parser("status", help="per-shard progress of a run directory")
    status.add_argument("rundir")
    status.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    status.set_defaults(handler=status_command)


def manifest_config(rundir, device: str) -> PredictConfig:
    """The PredictConfig a shard process needs, rebuilt from the manifest (resolved model files)."""
    identity = Manifest.load(RunDir(rundir).manifest).identity
    models = ModelPaths(**{role: entry["path"] for role, entry in identity.models.items()})
    engine = EngineConfig(device=device, precision=identity.precision)
    return PredictConfig(input=identity.input["path"], outdir=rundir, chunk_length=identity.chunk_length,
                         models=models, engine=engine, save_embeddings=identity.save_embeddings)


def shard_command(args, env: EnvConfig) -> int:
    index = args.index if args.index is not None else env.slurm_array_task_id
    if index is None:
        raise RunStateError("virnucpro shard: give --index (or run inside a SLURM array task)")
    run = RunDir(args.rundir)
    attach_log_file(run, f"shard{index:04d}")
    cfg = manifest_config(run.root, args.device)
    device = select_devices(cfg.engine, 1)[0]
    scorer = ScorerFactory(cfg.models, env, cfg.chunk_length)(replace(cfg.engine, device=device))
    result = run_shard(run.root, index, scorer, options=default_options(), device=device)
    print(f"shard {index}: {'already done' if result.skipped else f'{result.frames_scored} frames scored'}",
          file=sys.stderr)
    return 0


def aggregate_command(args, env: EnvConfig) -> int:
    report = aggregate(args.rundir, default_options())
    print(f"{report.frames} frames, {report.chunks} chunks ({report.viral_chunks} viral), "
          f"{report.sequences} sequences -> {args.rundir}", file=sys.stderr)
    return 0


def status_command(args, env: EnvConfig) -> int:
    statuses = shard_status(args.rundir)
    slurm = job_states(args.rundir) if has_jobs(args.rundir) else None  # None: not submitted through SLURM
    if args.json:
        print(json.dumps({"complete": is_complete(args.rundir), "shards": [s.as_dict() for s in statuses],
                          "slurm": slurm}, indent=1))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{args.rundir} ({'complete' if is_complete(args.rundir) else 'in progress'})")
    for column in ("shard", "frames done", "tokens", "state", "tokens/s", "restarts"):
        table.add_column(column, justify="right")
    for s in statuses:
        state = "done" if s.done else ("running/partial" if s.frames_done else "pending")
        speed = f"{s.tokens_per_s:,.0f}" if s.tokens_per_s else "-"
        table.add_row(str(s.index), f"{s.frames_done}/{s.frames}", f"{s.tokens:,}", state, speed, str(s.restarts))
    Console().print(table)
    if slurm is not None:
        print(format_job_states(slurm))
    return 0
